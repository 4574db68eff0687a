"""The label_export_trigger stage's triggers. Thin: binding -> typed input -> service -> output."""

import azure.functions as func

bp = func.Blueprint()
