"""HTTP and timer handlers of the selector: binding -> typed input -> service -> response.

Kept apart from the decorators so tests call them with real ``azure.functions`` objects and any service.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import azure.functions as func

from shared.core import strategies
from shared.errors import SelectionError, UnavailableError
from shared.services.select import SelectionResult, SelectService

log = logging.getLogger(__name__)
MAX_K = 100_000


def _problem(field: str, reason: str) -> func.HttpResponse:
    body = {"error": "invalid request", "problems": [{"field": field, "reason": reason}]}
    return func.HttpResponse(json.dumps(body), status_code=400, mimetype="application/json")


def _args(req: func.HttpRequest) -> tuple[str | None, int | None] | func.HttpResponse:
    """``strategy`` and ``k`` from the query string, validated (a 400 names the field and the reason)."""
    strategy = req.params.get("strategy") or None
    if strategy is not None:
        try:
            strategies.check_strategy(strategy)
        except SelectionError as exc:
            return _problem("strategy", str(exc))
    raw_k = req.params.get("k")
    k = None
    if raw_k not in (None, ""):
        try:
            k = int(raw_k)
        except ValueError:
            return _problem("k", f"must be a whole number, got {raw_k!r}")
        if not 1 <= k <= MAX_K:
            return _problem("k", f"must be between 1 and {MAX_K}, got {k}")
    return strategy, k


def _body(result: SelectionResult, *, with_items: bool = True) -> dict[str, Any]:
    sel = result.selection
    out: dict[str, Any] = {"status": result.status, "reason": result.reason, "resumed": list(result.resumed),
                           "uncertainty": result.uncertainty,
                           "refused": [{"batch_id": r.batch_id, "item_id": r.item_id, "item_uri": r.item_uri,
                                        "reason": r.reason} for r in result.refused]}
    if sel is not None:
        out |= {"batch_id": sel.batch_id, "strategy": sel.strategy, "model_name": sel.model_name,
                "model_version": sel.model_version, "count": len(sel.items)}
        if with_items:
            out["items"] = [{"item_id": i.item_id, "item_uri": i.item_uri, "score": i.score, "rank": i.rank}
                            for i in sel.items]
    return out


def preview(req: func.HttpRequest, service: SelectService) -> func.HttpResponse:
    """GET selection/preview?strategy=&k=: the candidates a run would pick, with scores; nothing recorded."""
    args = _args(req)
    if isinstance(args, func.HttpResponse):
        return args
    strategy, k = args
    result = service.preview(strategy=strategy, k=k)
    body = _body(result)
    body.pop("batch_id", None)  # a preview has no batch: nothing was recorded
    return func.HttpResponse(json.dumps(body), status_code=200, mimetype="application/json")


def run(req: func.HttpRequest, service: SelectService) -> func.HttpResponse:
    """POST selection/run[?strategy=&k=]: select now, the timer's path; 409 while another run holds the lock."""
    args = _args(req)
    if isinstance(args, func.HttpResponse):
        return args
    strategy, k = args
    try:
        result = service.run(strategy=strategy, k=k)
    except UnavailableError as exc:  # the labeling tool is down: the batch is kept, the next run hands it off
        return func.HttpResponse(json.dumps({"status": "handoff_pending", "reason": str(exc)}), status_code=503,
                                 mimetype="application/json", headers={"Retry-After": "60"})
    status = 409 if result.status == "busy" else 200
    return func.HttpResponse(json.dumps(_body(result)), status_code=status, mimetype="application/json")


def on_timer(timer: func.TimerRequest, service: SelectService) -> SelectionResult | None:
    if timer.past_due:
        log.info("selection timer is past due; running now")
    try:
        return service.run()
    except UnavailableError as exc:
        log.warning("selection: hand-off to labeling pending, the next run finishes it: %s", exc)
        return None
