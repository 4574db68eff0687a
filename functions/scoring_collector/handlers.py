"""HTTP request -> typed input -> service -> HTTP response, for the collector's routes.

Status codes: 202 accepted (landed durably; counts), 400 invalid (every record's index, field and
reason), 413 body too large (checked from Content-Length and the body before parsing), 415 not a
JSON media type.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import azure.functions as func
from pydantic_core import from_json

from shared.core.payload import records_from_json
from shared.errors import InvalidInputError, UnavailableError

log = logging.getLogger(__name__)
JSON = "application/json"


def _json(status: int, body: dict[str, Any]) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(body, default=str), status_code=status, mimetype=JSON)


def _error(status: int, message: str, problems: list[dict[str, Any]] | None = None) -> func.HttpResponse:
    body: dict[str, Any] = {"error": message}
    if problems is not None:
        body["problems"] = problems
    return _json(status, body)


def _is_json_type(content_type: str | None) -> bool:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media == JSON or (media.startswith("application/") and media.endswith("+json"))


def post_predictions(req: func.HttpRequest, collector: Any) -> func.HttpResponse:
    limit = collector.settings.max_body_bytes
    declared = req.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            return _error(400, f"Content-Length {declared!r} is not a number")
        if size > limit:
            return _error(413, f"body of {size} bytes; the limit is {limit} bytes (AL_MAX_BODY_BYTES)")
    if not _is_json_type(req.headers.get("content-type")):
        return _error(415, f"send Content-Type: {JSON} (got {req.headers.get('content-type') or 'none'})")
    body = req.get_body()
    if len(body) > limit:
        return _error(413, f"body of {len(body)} bytes; the limit is {limit} bytes (AL_MAX_BODY_BYTES)")
    payload: object = records_from_json(body, max_records=collector.settings.max_records)
    if payload is None:  # not a clean batch: parse it alone, so that every problem can be named
        try:
            # pydantic-core's parser: NaN and Infinity parse, so validation can name the record and
            # field instead of failing the whole body.
            payload = from_json(body, allow_inf_nan=True)
        except ValueError as exc:
            return _error(400, f"malformed JSON: {exc}")
    try:
        result = collector.collect.collect(payload)
    except InvalidInputError as exc:
        problems = [{"index": p.where, "field": p.field, "reason": p.reason} for p in exc.problems]
        return _error(400, str(exc).split(":", 1)[0], problems)
    except UnavailableError as exc:  # nothing stored; the monitoring client keeps the records and retries
        return func.HttpResponse(json.dumps({"error": str(exc)}), status_code=503, mimetype=JSON,
                                 headers={"Retry-After": str(int(exc.retry_after_s))})
    return _json(202, {"accepted": result.accepted, "duplicates": result.duplicates,
                       "batch_id": result.batch_id, "ingested": result.ingested})


def get_stats(collector: Any) -> func.HttpResponse:
    counts = collector.counts.counts_by_version()
    last = collector.ingest.last_ingestion()
    return _json(200, {
        "models": [{"model_name": c.model_name, "model_version": c.model_version, "predictions": c.predictions,
                    "last_ingested_at": c.last_ingested_at.isoformat() if c.last_ingested_at else None}
                   for c in counts],
        "last_ingestion": last.isoformat() if last else None,
        "landing_backlog": collector.ingest.backlog(),
    })


def post_reingest(collector: Any) -> func.HttpResponse:
    report = collector.ingest.reingest_pending(min_age_seconds=0)
    return _json(200, {"ingested": report.ingested, "failed": report.failed,
                       "landing_backlog": collector.ingest.backlog()})
