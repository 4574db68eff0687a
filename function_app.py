"""The one deployable package's entry point: registers the blueprints of the stages this app hosts.

``AL_STAGES`` names them (comma-separated; ``all`` by default, as under ``func start``). The
infrastructure deploys this same package as four apps, each with its own ``AL_STAGES``.
"""

from __future__ import annotations

import importlib

import azure.durable_functions as df
import azure.functions as func

from shared.settings import Settings, get_settings, require_azure_settings
from shared.telemetry import configure_telemetry


def build_app(settings: Settings) -> df.DFApp:
    """A function app with the blueprints of ``settings.stage_names`` registered.

    On the Azure backend a missing setting stops the app here, at start-up, naming the setting.
    """
    require_azure_settings(settings)
    function_app = df.DFApp(http_auth_level=func.AuthLevel.FUNCTION)
    for stage in settings.stage_names:
        module = importlib.import_module(f"functions.{stage}.blueprint")
        function_app.register_functions(module.bp)
    return function_app


configure_telemetry()  # OpenTelemetry to Application Insights; a no-op without its connection string
app = build_app(get_settings())
