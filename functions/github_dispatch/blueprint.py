"""The github_dispatch stage's triggers. Thin: binding -> typed input -> service -> output.

- queue ``%AL_RETRAIN_QUEUE%`` (connection ``AL_STORAGE``) -> start or coalesce the model's instance;
- ``POST /api/retrain``, ``GET /api/retrain/{instance}``, ``POST /api/retrain/{instance}/terminate``
  (admin key);
- the orchestrator ``retrain_orchestrator`` and one activity per step of
  :func:`shared.core.orchestration.retrain_steps`.

No ``from __future__ import annotations`` here: the Functions worker reads the binding types from
the real annotations.
"""

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import azure.durable_functions as df
import azure.functions as func

from functions.github_dispatch import starter
from functions.github_dispatch.orchestrator import retrain_orchestrator as _orchestrate
from functions.github_dispatch.wiring import activities
from shared.core import orchestration as steps
from shared.errors import InvalidInputError, NotFoundError
from shared.services.retrain import call_activity
from shared.settings import get_settings

log = logging.getLogger(__name__)

bp = df.Blueprint()


# -- queue and admin HTTP ----------------------------------------------------------------------------

@bp.queue_trigger(arg_name="msg", queue_name="%AL_RETRAIN_QUEUE%", connection="AL_STORAGE")
@bp.durable_client_input(client_name="client")
async def retrain_queue(msg: func.QueueMessage, client: df.DurableOrchestrationClient) -> None:
    """A retraining request from the label stage. A bad message raises (the host poisons it)."""
    request = starter.parse_request(msg.get_body(), source=f"queue message {msg.id}")
    done = await starter.request_retrain(client, request, get_settings())
    log.info("retrain request %s: %s %s", msg.id, done["action"], done["instance_id"])


@bp.route(route="retrain", methods=["POST"], auth_level=func.AuthLevel.ADMIN)
@bp.durable_client_input(client_name="client")
async def retrain_start(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    async def run() -> tuple[int, dict[str, Any]]:
        request = starter.parse_request(req.get_body(), source="request body")
        return 202, await starter.request_retrain(client, request, get_settings())

    return await _answer(run)


@bp.route(route="retrain/{instance}", methods=["GET"], auth_level=func.AuthLevel.ADMIN)
@bp.durable_client_input(client_name="client")
async def retrain_status(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    async def run() -> tuple[int, dict[str, Any]]:
        return 200, await starter.describe(client, req.route_params.get("instance", ""))

    return await _answer(run)


@bp.route(route="retrain/{instance}/terminate", methods=["POST"], auth_level=func.AuthLevel.ADMIN)
@bp.durable_client_input(client_name="client")
async def retrain_terminate(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    async def run() -> tuple[int, dict[str, Any]]:
        reason = starter.parse_request(req.get_body(), source="request body").reason
        return 202, await starter.terminate(client, req.route_params.get("instance", ""), reason)

    return await _answer(run)


async def _answer(run: Callable[[], Awaitable[tuple[int, dict[str, Any]]]]) -> func.HttpResponse:
    """Errors the caller can act on become 4xx naming field and reason; the rest stay 500s."""
    try:
        status, body = await run()
    except starter.ConflictError as exc:
        status, body = 409, {"error": str(exc)}
    except InvalidInputError as exc:
        status, body = 400, {"error": str(exc), "problems": [
            {"field": p.field, "reason": p.reason} for p in exc.problems]}
    except NotFoundError as exc:
        status, body = 404, {"error": str(exc)}
    return func.HttpResponse(json.dumps(body), status_code=status, mimetype="application/json")


# -- orchestrator and activities ---------------------------------------------------------------------

@bp.orchestration_trigger(context_name="context")
def retrain_orchestrator(context: df.DurableOrchestrationContext):  # type: ignore[no-untyped-def]
    return (yield from _orchestrate(context))


def _activity(name: str, payload: dict[str, Any]) -> Any:
    if not isinstance(payload, dict):
        raise InvalidInputError(f"activity {name} needs a JSON object input")
    return call_activity(activities(), name, payload)


@bp.activity_trigger(input_name="payload")
def retrain_prepare(payload: dict) -> Any:
    return _activity(steps.PREPARE, payload)


@bp.activity_trigger(input_name="payload")
def retrain_start_training(payload: dict) -> Any:
    return _activity(steps.START_TRAINING, payload)


@bp.activity_trigger(input_name="payload")
def retrain_run_status(payload: dict) -> Any:
    return _activity(steps.RUN_STATUS, payload)


@bp.activity_trigger(input_name="payload")
def retrain_cancel_run(payload: dict) -> Any:
    return _activity(steps.CANCEL_RUN, payload)


@bp.activity_trigger(input_name="payload")
def retrain_find_candidate(payload: dict) -> Any:
    return _activity(steps.FIND_CANDIDATE, payload)


@bp.activity_trigger(input_name="payload")
def retrain_start_deploy(payload: dict) -> Any:
    return _activity(steps.START_DEPLOY, payload)


@bp.activity_trigger(input_name="payload")
def retrain_deploy_status(payload: dict) -> Any:
    return _activity(steps.DEPLOY_STATUS, payload)


@bp.activity_trigger(input_name="payload")
def retrain_record(payload: dict) -> Any:
    return _activity(steps.RECORD, payload)

