"""Start, inspect and stop the retraining orchestration (the queue and the admin HTTP share this).

One instance per model (a fixed instance id), so two trainings never overlap. A request arriving
while that instance runs is raised to it as an event; the orchestrator picks it up when it finishes
and runs again (continue-as-new), so the request is coalesced, not lost. If the instance finished
between our look and the event (the extension answers "gone"), the caller's retry finds it finished
and starts a new one: the queue message is retried by the host, the HTTP caller gets a 409.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import azure.durable_functions as df

from functions.github_dispatch.orchestrator import ORCHESTRATOR, orchestrator_input
from functions.github_dispatch.wiring import instance_id, plan_from
from shared.core.orchestration import RETRAIN_REQUESTED_EVENT
from shared.errors import InvalidInputError, NotFoundError, Problem
from shared.settings import Settings

ACTIVE = frozenset({df.OrchestrationRuntimeStatus.Running, df.OrchestrationRuntimeStatus.Pending,
                    df.OrchestrationRuntimeStatus.ContinuedAsNew, df.OrchestrationRuntimeStatus.Suspended})
_INSTANCE = re.compile(r"^[A-Za-z0-9_.:-]{1,140}$")
_MAX_REASON = 500


@dataclass(frozen=True, slots=True)
class RetrainRequest:
    """What a queue message or ``POST /api/retrain`` may say; every field optional."""

    model_name: str | None = None
    reason: str = ""
    pending: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"model_name": self.model_name, "reason": self.reason, "pending": self.pending}


def parse_request(body: bytes | str, *, source: str) -> RetrainRequest:
    """A request from JSON (an empty body is a plain "retrain now"); refuse anything else by field."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    if not text.strip():
        return RetrainRequest()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"{source} is not JSON", [Problem(None, "body", str(exc))]) from exc
    if not isinstance(data, dict):
        raise InvalidInputError(f"{source} must be a JSON object", [Problem(None, "body", type(data).__name__)])
    problems = []
    model = data.get("model_name")
    if model is not None and (not isinstance(model, str) or not 0 < len(model) <= 128):
        problems.append(Problem(None, "model_name", "must be a string of 1 to 128 characters"))
    reason = data.get("reason", "")
    if not isinstance(reason, str) or len(reason) > _MAX_REASON:
        problems.append(Problem(None, "reason", f"must be a string of at most {_MAX_REASON} characters"))
    pending = data.get("pending")
    if pending is not None and (isinstance(pending, bool) or not isinstance(pending, int) or pending < 0):
        problems.append(Problem(None, "pending", "must be a non-negative integer"))
    if problems:
        raise InvalidInputError(f"{source} refused", problems)
    return RetrainRequest(model, reason, pending)


def check_instance(value: str) -> str:
    if not _INSTANCE.match(value or ""):
        raise InvalidInputError("bad instance id", [Problem(None, "instance", "1-140 letters, digits, _ . : -")])
    return value


async def request_retrain(client: df.DurableOrchestrationClient, request: RetrainRequest,
                          settings: Settings) -> dict[str, str]:
    """Start the model's instance, or hand the request to the running one. Returns what happened."""
    if request.model_name not in (None, settings.model_name):
        raise InvalidInputError("request for another model", [
            Problem(None, "model_name", f"this app retrains {settings.model_name!r}, not {request.model_name!r}")])
    iid = instance_id(settings.model_name)
    status = await client.get_status(iid)
    if status is not None and status.runtime_status in ACTIVE:
        await client.raise_event(iid, RETRAIN_REQUESTED_EVENT, request.to_json())
        return {"instance_id": iid, "action": "coalesced"}
    payload = orchestrator_input(plan_from(settings), retry_attempts=settings.activity_retry_attempts,
                                 retry_first_s=settings.activity_retry_first_seconds, request=request.to_json())
    await client.start_new(ORCHESTRATOR, iid, payload)
    return {"instance_id": iid, "action": "started"}


async def describe(client: df.DurableOrchestrationClient, iid: str) -> dict[str, Any]:
    status = await client.get_status(check_instance(iid))
    if status is None or status.runtime_status is None:
        raise NotFoundError(f"no retraining instance {iid!r}")
    return {
        "instance_id": status.instance_id or iid,
        "runtime_status": status.runtime_status.value,
        "custom_status": status.custom_status,
        "output": status.output,
        "created": status.created_time.isoformat() if status.created_time else None,
        "last_updated": status.last_updated_time.isoformat() if status.last_updated_time else None,
    }


async def terminate(client: df.DurableOrchestrationClient, iid: str, reason: str) -> dict[str, str]:
    """Terminate a running instance; a finished one is a conflict (there is nothing to stop)."""
    current = await describe(client, iid)
    if df.OrchestrationRuntimeStatus(current["runtime_status"]) not in ACTIVE:
        raise ConflictError(f"instance {iid!r} is {current['runtime_status']}, not running")
    await client.terminate(iid, reason or "terminated by an administrator")
    return {"instance_id": iid, "action": "terminating"}


class ConflictError(InvalidInputError):
    """The request is well-formed but the instance is not in a state that allows it (HTTP 409)."""
