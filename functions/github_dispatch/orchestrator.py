"""The Durable driver of :func:`shared.core.orchestration.retrain_steps`.

Deterministic by construction: the only inputs are the orchestration input (the plan, captured from
the settings by the starter), ``context.new_uuid()`` and ``context.current_utc_datetime``, all
replayed from history. Commands become activities (with the retry policy from the input) and durable
timers. Logging happens only when not replaying.
"""

from __future__ import annotations

import logging
from collections.abc import Generator
from typing import Any

import azure.durable_functions as df

from shared.core.orchestration import (
    RECORD,
    RETRAIN_REQUESTED_EVENT,
    Call,
    Plan,
    Sleep,
    StepFailed,
    retrain_steps,
)

log = logging.getLogger(__name__)

ORCHESTRATOR = "retrain_orchestrator"


def orchestrator_input(plan: Plan, *, retry_attempts: int, retry_first_s: float,
                       request: dict[str, Any] | None = None) -> dict[str, Any]:
    """The orchestration input: everything the generator may know, fixed when the instance starts."""
    return {"plan": plan.to_json(), "retry": {"attempts": retry_attempts, "first_ms": int(retry_first_s * 1000)},
            "request": request or {}, "previous": None}


def retrain_orchestrator(context: df.DurableOrchestrationContext) -> Generator[Any, Any, dict[str, Any]]:
    """One retraining; then, if another request arrived meanwhile, start over with it (continue-as-new)."""
    data = context.get_input() or {}
    plan = Plan.from_json(data["plan"])
    retry = df.RetryOptions(first_retry_interval_in_milliseconds=data["retry"]["first_ms"],
                            max_number_of_attempts=data["retry"]["attempts"])
    correlation_id = str(context.new_uuid()).replace("-", "")
    steps = retrain_steps(plan, correlation_id, context.current_utc_datetime)
    value: Any = None
    error: str | None = None
    while True:
        try:
            cmd = steps.throw(StepFailed(error)) if error is not None else steps.send(value)
        except StopIteration as stop:
            result = stop.value
            break
        value, error = None, None
        if isinstance(cmd, Sleep):
            yield context.create_timer(cmd.until)
            value = context.current_utc_datetime
            continue
        assert isinstance(cmd, Call)
        context.set_custom_status({"correlation_id": correlation_id, "step": cmd.activity,
                                   "since": context.current_utc_datetime.isoformat()})
        try:
            value = yield context.call_activity_with_retry(cmd.activity, retry, cmd.payload)
        except Exception as exc:  # failed after its retries; the steps record why
            if cmd.activity == RECORD:
                raise
            error = _reason(exc)
            if not context.is_replaying:
                log.warning("retrain %s: activity %s failed: %s", correlation_id, cmd.activity, error)
    output = result.to_json()
    context.set_custom_status({"correlation_id": correlation_id, "step": "done", "outcome": output["outcome"]})
    if not context.is_replaying:
        log.info("retrain %s: %s (%s)", correlation_id, output["outcome"], output["reason"])

    # A request that arrived while this one ran was raised as an event (buffered until now): run again.
    more = context.wait_for_external_event(RETRAIN_REQUESTED_EVENT)
    now = context.create_timer(context.current_utc_datetime)
    first = yield context.task_any([more, now])
    if first is more:
        context.continue_as_new({**data, "request": more.result or {}, "previous": output})
    return output


def _reason(exc: BaseException) -> str:
    """The activity's message without the host's stack-trace details."""
    text = str(exc).strip()
    return text.splitlines()[0].strip() if text else type(exc).__name__
