"""The label stage's wiring: the export intake and the automatic export on the ports of the process's
backend (:mod:`shared.backends`). In Azure: labels in ADX, exports/reports/quarantine in the exports
account (the one the blob trigger watches), retrain requests on the Storage queue, exports requested
from Azure ML Data Labeling."""

from __future__ import annotations

import threading
from typing import Any

from shared.backends import Backend, backend
from shared.services.labels import ExportIntake, ExportRequester, LabelService
from shared.settings import Settings, get_settings

_lock = threading.Lock()
_intake: ExportIntake | None = None


def exports_path(settings: Settings) -> str:
    """The blob trigger's path: ``<container>/<prefix>{name}``."""
    return f"{settings.exports_container}/{settings.exports_prefix}{{name}}"


def build_intake(settings: Settings, *, ports: Backend | None = None, **clients: Any) -> ExportIntake:
    """The intake for ``settings`` (``clients`` override backend clients, e.g. ``store``, in tests)."""
    ports = (ports or Backend(settings, **clients)).require("label_export_trigger")
    store = ports.store
    configured = settings.class_name_list

    def class_names() -> tuple[str, ...] | None:
        if configured:
            return configured
        serving = store.serving_version(settings.model_name)
        return serving.class_names if serving else None

    labels = LabelService(store, model_name=settings.model_name, class_names=class_names,
                          retrain_threshold=settings.retrain_threshold, requests=ports.retrain_requests)
    return ExportIntake(labels, ports.exports, exports_container=settings.exports_container,
                        quarantine_container=settings.quarantine_container, max_bytes=settings.max_export_bytes)


def build_requester(settings: Settings, *, ports: Backend | None = None, **clients: Any) -> ExportRequester:
    ports = (ports or Backend(settings, **clients)).require("label_export_trigger")
    return ExportRequester(ports.store, ports.labeling)


def intake() -> ExportIntake:
    """The process-wide intake, built on first use (not at import: indexing must not connect)."""
    global _intake
    with _lock:
        if _intake is None:
            _intake = build_intake(get_settings(), ports=backend())
        return _intake


def requester() -> ExportRequester:
    return build_requester(get_settings(), ports=backend())


def use(instance: ExportIntake | None) -> None:
    """Install an intake (tests, the embedded loop); None rebuilds from the settings on next use."""
    global _intake
    with _lock:
        _intake = instance
