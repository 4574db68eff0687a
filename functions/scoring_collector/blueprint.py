"""The scoring_collector stage's triggers. Thin: binding -> typed input -> service -> output.

POST /api/predictions (function key), GET /api/predictions/stats and POST /api/predictions/reingest
(admin key), and a timer that re-ingests landed batches whose ingestion failed.
"""

import logging

import azure.functions as func

from functions.scoring_collector import handlers
from functions.scoring_collector.wiring import collector
from shared.settings import get_settings

bp = func.Blueprint()
log = logging.getLogger(__name__)


@bp.function_name("post_predictions")
@bp.route(route="predictions", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def post_predictions(req: func.HttpRequest) -> func.HttpResponse:
    return handlers.post_predictions(req, collector())


@bp.function_name("prediction_stats")
@bp.route(route="predictions/stats", methods=["GET"], auth_level=func.AuthLevel.ADMIN)
def prediction_stats(req: func.HttpRequest) -> func.HttpResponse:
    return handlers.get_stats(collector())


@bp.function_name("reingest_predictions")
@bp.route(route="predictions/reingest", methods=["POST"], auth_level=func.AuthLevel.ADMIN)
def reingest_predictions(req: func.HttpRequest) -> func.HttpResponse:
    return handlers.post_reingest(collector())


@bp.function_name("reingest_timer")
@bp.timer_trigger(arg_name="timer", schedule=get_settings().reingest_schedule, run_on_startup=False)
def reingest_timer(timer: func.TimerRequest) -> None:
    settings = collector().settings
    report = collector().ingest.reingest_pending(min_age_seconds=settings.reingest_min_age_seconds)
    if report.ingested or report.failed:
        log.info("re-ingested %d landed batches, %d still failing", len(report.ingested), len(report.failed))
