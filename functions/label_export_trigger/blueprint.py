"""The label_export_trigger stage's triggers. Thin: binding -> typed input -> service -> output.

* ``labels_export``: blob trigger on ``AL_EXPORTS_CONTAINER``/``AL_EXPORTS_PREFIX`` (connection
  ``AL_EXPORTS_STORAGE``: the exports account; source Event Grid, or polling by
  ``AL_BLOB_TRIGGER_SOURCE=LogsAndContainerScan`` under ``func start``). Whatever goes wrong with an
  export (it cannot be parsed, the store fails, a transient storage error outlasts its retries) ends
  with the export quarantined beside a report naming the error, and the function returns normally,
  so the host never retries it into the poison queue. It raises only when even the quarantine
  cannot be written, or when the stage cannot start (bad settings): then there is nowhere to put the
  export, and the host's retry is the last resort.
* ``labels_replay``: ``POST /api/labels/replay`` ``{"export": "<name>", "source": "quarantine"}``.
* ``labels_stats``: ``GET /api/labels/stats``.
* ``labels_webhook``: ``POST /api/labels/webhook`` (function key, which Label Studio sends as an
  ``x-functions-key`` header): Label Studio's annotation webhooks. It records and answers at once
  (Label Studio waits ``WEBHOOK_TIMEOUT``, sends once and never retries); a body it cannot read is a
  400, refused annotations are named in the answer and in a report.
* ``labels_sync``: timer on ``%AL_LABEL_SYNC_SCHEDULE%`` (every minute by default), and ``POST
  /api/labels/sync`` (admin): the catch-up that reads the annotations changed since its watermark, so
  a lost webhook still arrives.
"""

from __future__ import annotations

import json
import logging

import azure.functions as func
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from functions.label_export_trigger.wiring import annotations, exports_path, intake
from shared.errors import ActiveLearningError, NotFoundError, UnavailableError
from shared.settings import get_settings

log = logging.getLogger(__name__)
bp = func.Blueprint()


class ReplayBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    export: str = Field(min_length=1, max_length=1024, description="Blob name inside the source container.")
    source: str = Field("quarantine", pattern="^(quarantine|exports)$")


def _json(body: object, status: int) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(body), status_code=status, mimetype="application/json")


def _blob_name(full: str | None) -> tuple[str, str]:
    """``container/name`` as the host passes it -> (container, name)."""
    container, _, name = (full or "").partition("/")
    if not container or not name:
        raise ValueError(f"blob trigger without a container/name: {full!r}")
    return container, name


def _blob_source() -> func.BlobSource:
    """Event Grid (Flex Consumption supports no other) unless AL_BLOB_TRIGGER_SOURCE says polling."""
    if get_settings().blob_trigger_source == "LogsAndContainerScan":
        return func.BlobSource.LOGS_AND_CONTAINER_SCAN
    return func.BlobSource.EVENT_GRID


@bp.function_name("labels_export")
@bp.blob_trigger(arg_name="blob", path=exports_path(get_settings()), connection="AL_EXPORTS_STORAGE",
                 source=_blob_source())
def labels_export(blob: func.InputStream) -> None:
    try:
        container, name = _blob_name(blob.name)
    except ValueError as exc:  # nothing to record or quarantine; a retry would not help
        log.warning("export blob refused: %s", exc)
        return
    outcome = intake().process(container, name, blob.read())
    level = logging.WARNING if outcome.status in ("quarantined", "refused") else logging.INFO
    log.log(level, "export %s/%s: %s", container, name, json.dumps(outcome.as_dict()))


@bp.function_name("labels_webhook")
@bp.route(route="labels/webhook", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def labels_webhook(req: func.HttpRequest) -> func.HttpResponse:
    try:
        result = annotations().webhook(req.get_body() or b"")
    except ValueError as exc:
        return _json({"error": "invalid webhook body", "problems": [{"field": "body", "reason": str(exc)}]}, 400)
    except UnavailableError as exc:
        return _json({"error": str(exc)}, 503)
    return _json(result.as_dict(), 200)


@bp.function_name("labels_sync")
@bp.timer_trigger(arg_name="timer", schedule="%AL_LABEL_SYNC_SCHEDULE%", run_on_startup=False, use_monitor=True)
def labels_sync(timer: func.TimerRequest) -> None:
    """The catch-up: annotations changed in Label Studio since the watermark."""
    log.info("label studio catch-up: %s", json.dumps(annotations().sync().as_dict()))


@bp.function_name("labels_sync_now")
@bp.route(route="labels/sync", methods=["POST"], auth_level=func.AuthLevel.ADMIN)
def labels_sync_now(req: func.HttpRequest) -> func.HttpResponse:
    """Run the catch-up now (what the timer does)."""
    try:
        return _json(annotations().sync().as_dict(), 200)
    except UnavailableError as exc:
        return _json({"error": str(exc)}, 503)


@bp.function_name("labels_replay")
@bp.route(route="labels/replay", methods=["POST"], auth_level=func.AuthLevel.ADMIN)
def labels_replay(req: func.HttpRequest) -> func.HttpResponse:
    try:
        body = ReplayBody.model_validate_json(req.get_body() or b"")
    except ValidationError as exc:
        problems = [{"field": ".".join(str(p) for p in e["loc"]) or "body", "reason": e["msg"]}
                    for e in exc.errors()]
        return _json({"error": "invalid replay request", "problems": problems}, 400)
    try:
        outcome = intake().replay(body.export, source=body.source)
    except NotFoundError:
        return _json({"error": f"no export {body.export!r} in {body.source}"}, 404)
    except ValueError as exc:
        return _json({"error": str(exc), "problems": [{"field": "export", "reason": str(exc)}]}, 400)
    except ActiveLearningError as exc:  # e.g. no class list configured
        return _json({"error": str(exc)}, 503)
    return _json(outcome.as_dict(), 200 if outcome.status == "recorded" else 422)


@bp.function_name("labels_stats")
@bp.route(route="labels/stats", methods=["GET"], auth_level=func.AuthLevel.ADMIN)
def labels_stats(req: func.HttpRequest) -> func.HttpResponse:
    return _json(intake().stats(), 200)
