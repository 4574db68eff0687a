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
* ``labels_request_export``: timer on ``%AL_EXPORT_SCHEDULE%``, and ``POST /api/labels/export``: ask
  Azure ML Data Labeling to export while handed-off items await labels (no manual Export click).
"""

from __future__ import annotations

import json
import logging

import azure.functions as func
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from functions.label_export_trigger.wiring import exports_path, intake, requester
from shared.errors import ActiveLearningError, NotFoundError
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
    container, name = _blob_name(blob.name)
    outcome = intake().process(container, name, blob.read())
    level = logging.WARNING if outcome.status == "quarantined" else logging.INFO
    log.log(level, "export %s/%s: %s", container, name, json.dumps(outcome.as_dict()))


@bp.function_name("labels_request_export")
@bp.timer_trigger(arg_name="timer", schedule="%AL_EXPORT_SCHEDULE%", run_on_startup=False)
def labels_request_export(timer: func.TimerRequest) -> None:
    """Ask the labeling project for an export while handed-off items await labels."""
    log.info("labeling export: %s", json.dumps(requester().run()))


@bp.function_name("labels_export_now")
@bp.route(route="labels/export", methods=["POST"], auth_level=func.AuthLevel.ADMIN)
def labels_export_now(req: func.HttpRequest) -> func.HttpResponse:
    """Ask for an export now (what the timer does)."""
    return _json(requester().run(), 200)


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
