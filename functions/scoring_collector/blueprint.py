"""The scoring_collector stage's triggers. Thin: binding -> typed input -> service -> output."""

import azure.functions as func

bp = func.Blueprint()
