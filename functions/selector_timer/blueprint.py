"""The selector_timer stage's triggers. Thin: binding -> typed input -> service -> output.

The schedule is the app setting ``AL_SELECTION_SCHEDULE`` (NCRONTAB, hourly by default), resolved by
the host; not run on start-up, so a deployment or a restart does not spend a labeling batch.
"""

import azure.functions as func

from functions.selector_timer import handlers
from functions.selector_timer.wiring import select_service

bp = func.Blueprint()


@bp.function_name("selection_timer")
@bp.timer_trigger(arg_name="timer", schedule="%AL_SELECTION_SCHEDULE%", run_on_startup=False, use_monitor=True)
def selection_timer(timer: func.TimerRequest) -> None:
    handlers.on_timer(timer, select_service())


@bp.function_name("selection_preview")
@bp.route(route="selection/preview", methods=["GET"], auth_level=func.AuthLevel.ADMIN)
def selection_preview(req: func.HttpRequest) -> func.HttpResponse:
    return handlers.preview(req, select_service())


@bp.function_name("selection_run")
@bp.route(route="selection/run", methods=["POST"], auth_level=func.AuthLevel.ADMIN)
def selection_run(req: func.HttpRequest) -> func.HttpResponse:
    return handlers.run(req, select_service())
