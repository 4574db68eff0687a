"""The retraining orchestration as pure decisions: which step next, how long to wait, when to give up.

``retrain_steps`` is a generator that yields *commands* (:class:`Call` an activity, :class:`Sleep`
until a time) and receives their results; it never touches a clock, a network or a setting. Two
drivers run it: the Durable Functions orchestrator (commands become activities and durable timers,
replayed from history) and the embedded driver in :mod:`shared.services.retrain` (commands become
method calls, sleeps advance a virtual clock). So the cloud path and the simulation take the same
decisions, and the tests of one are tests of the other.

Every value crossing the generator boundary is JSON-shaped (dicts, strings, numbers): Durable
Functions stores activity inputs and outputs as JSON in the orchestration history.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from shared.core.gate import decide

# Activity names: the Durable activities carry these names, the embedded driver maps them to methods.
PREPARE = "retrain_prepare"
START_TRAINING = "retrain_start_training"
RUN_STATUS = "retrain_run_status"
CANCEL_RUN = "retrain_cancel_run"
FIND_CANDIDATE = "retrain_find_candidate"
START_DEPLOY = "retrain_start_deploy"
DEPLOY_STATUS = "retrain_deploy_status"
RECORD = "retrain_record"
ACTIVITIES = (PREPARE, START_TRAINING, RUN_STATUS, CANCEL_RUN, FIND_CANDIDATE, START_DEPLOY, DEPLOY_STATUS, RECORD)

# Event a running instance receives when another retraining request arrives (coalesced, not lost).
RETRAIN_REQUESTED_EVENT = "retrain_requested"


class Outcome(StrEnum):
    DEPLOYED = "deployed"
    REJECTED = "rejected"  # trained, but the gate refused it
    FAILED = "failed"  # a step failed or the run concluded without success
    TIMED_OUT = "timed_out"


# GitHub check-run conclusions (REST "conclusion" of a workflow run). Only "success" produces a model.
SUCCESS_CONCLUSION = "success"
KNOWN_CONCLUSIONS = frozenset(
    {"success", "failure", "cancelled", "timed_out", "action_required", "neutral", "skipped", "stale",
     "startup_failure"}
)
DEPLOY_DONE, DEPLOY_FAILED = "Succeeded", frozenset({"Failed", "Canceled"})


@dataclass(frozen=True, slots=True)
class Plan:
    """Everything the orchestration needs from the settings, captured once in the orchestrator input."""

    model_name: str
    metric: str = "accuracy"
    tolerance: float = 0.0
    training_timeout_s: float = 6 * 3600
    deploy_timeout_s: float = 3600
    poll_initial_s: float = 60
    poll_max_s: float = 900
    poll_factor: float = 2.0

    def __post_init__(self) -> None:
        if self.poll_initial_s <= 0 or self.poll_max_s < self.poll_initial_s or self.poll_factor < 1:
            raise ValueError("poll interval needs 0 < initial <= max and factor >= 1")
        if self.training_timeout_s <= 0 or self.deploy_timeout_s <= 0:
            raise ValueError("timeouts must be positive")

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Plan:
        return cls(**data)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Call:
    """Run an activity with a JSON input; the driver sends back its JSON result (or throws its error)."""

    activity: str
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Sleep:
    """Wait until ``until``; the driver sends back the (deterministic) current time after waking."""

    until: datetime


Command = Call | Sleep


@dataclass(slots=True)
class Result:
    """The orchestration's outcome: what happened, why, and what it touched."""

    outcome: Outcome
    reason: str
    correlation_id: str
    model_name: str
    run_id: str | None = None
    run_url: str | None = None
    candidate_version: str | None = None
    candidate_metric: float | None = None
    candidate_confidence: float | None = None  # mean top-class probability on the metric's split
    candidate_train_accuracy: float | None = None  # accuracy on the rows it was trained on
    serving_version: str | None = None
    serving_metric: float | None = None
    labels: int = 0
    steps: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["outcome"] = str(self.outcome)
        return data


class StepFailed(Exception):
    """Raised into :func:`retrain_steps` by a driver when an activity failed after its retries."""


def poll_delay(attempt: int, plan: Plan) -> timedelta:
    """Seconds before poll ``attempt`` (0-based): initial * factor^attempt, capped at the maximum."""
    seconds = plan.poll_initial_s * plan.poll_factor ** min(attempt, 64)
    return timedelta(seconds=min(seconds, plan.poll_max_s))


def next_wake(now: datetime, attempt: int, deadline: datetime, plan: Plan) -> datetime:
    """The next poll time, never past the deadline (the last poll happens exactly at it)."""
    return min(now + poll_delay(attempt, plan), deadline)


def run_verdict(status: dict[str, Any]) -> tuple[bool, str | None]:
    """``(done, failure reason)`` of a workflow run status; reason None means it succeeded."""
    if status.get("status") != "completed":
        return False, None
    conclusion = status.get("conclusion")
    if conclusion == SUCCESS_CONCLUSION:
        return True, None
    if conclusion in KNOWN_CONCLUSIONS:
        return True, f"the training run concluded {conclusion!r}"
    return True, f"the training run completed with an unknown conclusion {conclusion!r}"


def deploy_verdict(state: dict[str, Any]) -> tuple[bool, str | None]:
    """``(done, failure reason)`` of a deployment's provisioning state."""
    value = state.get("state")
    if value == DEPLOY_DONE:
        return True, None
    if value in DEPLOY_FAILED:
        return True, f"the deployment ended {value!r}: {state.get('detail') or 'no detail'}"
    return False, None


def retrain_steps(
    plan: Plan, correlation_id: str, started_at: datetime
) -> Generator[Command, Any, Result]:
    """The retraining as commands: prepare, train, watch, gate, deploy, record.

    Any failure (an activity error thrown in as :class:`StepFailed`, a run that does not succeed, a
    timeout) ends in a recorded :class:`Result` with nothing deployed, so the labels stay pending.
    """
    res = Result(Outcome.FAILED, "", correlation_id, plan.model_name)
    step = PREPARE
    try:
        res.steps.append(step)
        prepared = yield Call(PREPARE, {"model_name": plan.model_name, "correlation_id": correlation_id})
        res.labels = int(prepared["labels"])
        res.serving_version = prepared.get("serving_version")

        step = START_TRAINING
        res.steps.append(step)
        run = yield Call(START_TRAINING, {"correlation_id": correlation_id, "prepared": prepared,
                                          "metric": plan.metric})
        res.run_id, res.run_url = str(run["run_id"]), run.get("url")

        step = RUN_STATUS
        res.steps.append(step)
        failure, now = yield from _wait(plan, started_at, plan.training_timeout_s, RUN_STATUS,
                                        {"run_id": res.run_id}, run_verdict)
        if failure is not None:
            res.outcome, res.reason = failure
            if res.outcome is Outcome.TIMED_OUT:
                step = CANCEL_RUN
                res.steps.append(step)
                try:
                    yield Call(CANCEL_RUN, {"run_id": res.run_id})
                except StepFailed as exc:  # best effort: the timeout is the outcome either way
                    res.reason += f"; cancelling the run failed: {exc}"
            return (yield from _record(res, prepared))

        step = FIND_CANDIDATE
        res.steps.append(step)
        cand = yield Call(FIND_CANDIDATE, {"correlation_id": correlation_id, "metric": plan.metric,
                                           "model_name": plan.model_name})
        if not cand:
            res.reason = f"the run succeeded but no model version is tagged with correlation id {correlation_id}"
            return (yield from _record(res, prepared))
        res.candidate_version = str(cand["version"])
        res.candidate_metric = _metric(cand.get("metric"))
        res.candidate_confidence = _metric(cand.get("confidence"))
        res.candidate_train_accuracy = _metric(cand.get("train_accuracy"))
        baseline = cand.get("baseline_metric")
        res.serving_metric = _metric(baseline if baseline is not None
                                     else (prepared.get("serving_metrics") or {}).get(plan.metric))
        if res.candidate_metric is None:
            res.reason = f"model version {res.candidate_version} has no {plan.metric!r} metric"
            return (yield from _record(res, prepared))
        gate = decide(res.candidate_metric, res.serving_metric, tolerance=plan.tolerance)
        if not gate.passed:
            res.outcome, res.reason = Outcome.REJECTED, gate.reason
            return (yield from _record(res, prepared))

        step = START_DEPLOY
        res.steps.append(step)
        yield Call(START_DEPLOY, {"model_name": plan.model_name, "version": res.candidate_version})
        step = DEPLOY_STATUS
        res.steps.append(step)
        failure, _ = yield from _wait(plan, now, plan.deploy_timeout_s, DEPLOY_STATUS,
                                      {"model_name": plan.model_name, "version": res.candidate_version},
                                      deploy_verdict)
        if failure is not None:
            res.outcome, res.reason = failure
            return (yield from _record(res, prepared))
        res.outcome, res.reason = Outcome.DEPLOYED, gate.reason
    except StepFailed as exc:
        res.outcome, res.reason = Outcome.FAILED, f"step {step} failed: {exc}"
        return (yield from _record(res, None))
    return (yield from _record(res, prepared))


def _wait(
    plan: Plan, since: datetime, timeout_s: float, activity: str, payload: dict[str, Any],
    verdict: Callable[[dict[str, Any]], tuple[bool, str | None]],
) -> Generator[Command, Any, tuple[tuple[Outcome, str] | None, datetime]]:
    """Poll ``activity`` at a growing interval until ``verdict`` says done or the timeout passes.

    Returns ``(None, now)`` on success, else ``((Outcome, reason), now)``; ``now`` is the time of the
    last wake-up, the only clock the generator knows.
    """
    deadline = since + timedelta(seconds=timeout_s)
    now = since
    attempt = 0
    while True:
        status = yield Call(activity, payload)
        done, reason = verdict(status)
        if done:
            return (None if reason is None else (Outcome.FAILED, reason)), now
        if now >= deadline:
            return (Outcome.TIMED_OUT, f"{activity} still not done after {timeout_s:g} s (last: {status})"), now
        now = yield Sleep(next_wake(now, attempt, deadline, plan))
        attempt += 1


def _record(res: Result, prepared: dict[str, Any] | None) -> Generator[Command, Any, Result]:
    res.steps.append(RECORD)
    yield Call(RECORD, {"result": res.to_json(), "prepared": prepared})
    return res


def _metric(value: Any) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


# Tags the training job puts on the model version it registers; the orchestrator finds it by them.
TAG_CORRELATION = "al_correlation_id"
TAG_METRIC_NAME = "al_metric"


def metric_tag(metric: str) -> str:
    """The tag holding the candidate's ``metric`` on the evaluation split."""
    return f"al_{metric}"


def baseline_tag(metric: str) -> str:
    """The tag holding the serving checkpoint's ``metric`` on the same split (the gate compares both)."""
    return f"al_baseline_{metric}"
