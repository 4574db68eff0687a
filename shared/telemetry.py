"""Send the function apps' logs and traces to Application Insights through the OpenTelemetry distro.

Why a module of its own: ``function_app.py`` calls :func:`configure_telemetry` once at import, and it
does nothing unless the platform setting ``APPLICATIONINSIGHTS_CONNECTION_STRING`` is present (set in
Azure by ``infra/``; absent under ``func start`` and in tests), so local runs never export anything.

The Application Insights resource refuses instrumentation-key ingestion (``DisableLocalAuth``), so the
exporter authenticates with the app's user-assigned identity, named the way the Functions host reads
it: ``APPLICATIONINSIGHTS_AUTHENTICATION_STRING = "ClientId=<client id>;Authorization=AAD"``.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping
from typing import Any

log = logging.getLogger(__name__)

CONNECTION_SETTING = "APPLICATIONINSIGHTS_CONNECTION_STRING"
AUTHENTICATION_SETTING = "APPLICATIONINSIGHTS_AUTHENTICATION_STRING"

_lock = threading.Lock()
_configured = False


def _auth_parts(value: str) -> dict[str, str]:
    parts = (p.split("=", 1) for p in value.split(";") if "=" in p)
    return {k.strip().lower(): v.strip() for k, v in parts}


def exporter_options(environ: Mapping[str, str]) -> dict[str, Any] | None:
    """The distro's keyword arguments for this environment, or None when telemetry is off."""
    connection = environ.get(CONNECTION_SETTING, "").strip()
    if not connection:
        return None
    options: dict[str, Any] = {"connection_string": connection}
    auth = _auth_parts(environ.get(AUTHENTICATION_SETTING, ""))
    if auth.get("authorization", "").upper() == "AAD":
        from azure.identity import ManagedIdentityCredential

        client_id = auth.get("clientid")
        options["credential"] = (ManagedIdentityCredential(client_id=client_id) if client_id
                                 else ManagedIdentityCredential())
    return options


def configure_telemetry(environ: Mapping[str, str] | None = None, *,
                        configure: Callable[..., None] | None = None) -> bool:
    """Configure the Azure Monitor OpenTelemetry distro once per process; True when exporting.

    ``configure`` replaces ``azure.monitor.opentelemetry.configure_azure_monitor`` (tests).
    """
    global _configured
    options = exporter_options(os.environ if environ is None else environ)
    if options is None:
        return False
    with _lock:
        if _configured:
            return True
        if configure is None:
            from azure.monitor.opentelemetry import configure_azure_monitor

            configure = configure_azure_monitor
        configure(**options)
        _configured = True
    log.info("telemetry: exporting logs and traces to Application Insights (OpenTelemetry)")
    return True


def _reset_for_tests() -> None:
    global _configured
    with _lock:
        _configured = False
