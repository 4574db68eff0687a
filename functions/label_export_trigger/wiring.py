"""The label stage's wiring: the Label Studio intake (webhook + catch-up) and the export intake on the
ports of the process's backend (:mod:`shared.backends`). In Azure: labels in ADX, exports/reports/
quarantine in the exports account (the one the blob trigger watches), the catch-up's watermark in the
loop's account, retrain requests on the Storage queue, answers read from Label Studio."""

from __future__ import annotations

import threading
from typing import Any
from urllib.parse import urlsplit

from shared.backends import Backend, backend
from shared.core.item_uris import ItemUriPolicy
from shared.errors import ConfigurationError
from shared.services.annotations import AnnotationIntake
from shared.services.labels import ExportIntake, LabelService
from shared.settings import Settings, get_settings

_lock = threading.Lock()
_intake: ExportIntake | None = None
_annotations: AnnotationIntake | None = None


def exports_path(settings: Settings) -> str:
    """The blob trigger's path: ``<container>/<prefix>{name}``."""
    return f"{settings.exports_container}/{settings.exports_prefix}{{name}}"


def _label_service(settings: Settings, ports: Backend) -> LabelService:
    store = ports.store
    configured = settings.class_name_list

    def class_names() -> tuple[str, ...] | None:
        if configured:
            return configured
        serving = store.serving_version(settings.model_name)
        return serving.class_names if serving else None

    hosts = [urlsplit(u).hostname or "" for u in (settings.storage_account_url, settings.labeling_account_url,
                                                   settings.exports_account_url) if u]
    azure = settings.backend == "azure"
    return LabelService(store, model_name=settings.model_name, class_names=class_names,
                        retrain_threshold=settings.retrain_threshold, requests=ports.retrain_requests,
                        labeling_container=settings.labeling_container,
                        export_hosts=[*hosts, *settings.allowed_item_host_list] if azure else (),
                        # the selector's own check (functions/selector_timer/wiring.py): what it refused
                        # to hand out never reached labelers
                        item_uris=ItemUriPolicy.of(https_hosts=settings.allowed_item_host_list if azure else (),
                                                   roots=ports.objects.uri_roots()))


def build_intake(settings: Settings, *, ports: Backend | None = None, **clients: Any) -> ExportIntake:
    """The export intake for ``settings`` (``clients`` override backend clients, e.g. ``store``, in tests)."""
    ports = (ports or Backend(settings, **clients)).require("label_export_trigger")
    return ExportIntake(_label_service(settings, ports), ports.exports, exports_container=settings.exports_container,
                        quarantine_container=settings.quarantine_container, max_bytes=settings.max_export_bytes)


def build_annotations(settings: Settings, *, ports: Backend | None = None, **clients: Any) -> AnnotationIntake:
    """The Label Studio intake: answers recorded in the store, refusal reports beside the exports, the
    catch-up's watermark beside the retrain watermark."""
    ports = (ports or Backend(settings, **clients)).require("label_export_trigger")
    tool = ports.labeling_tool
    if tool is None or settings.label_studio_project_id is None:
        raise ConfigurationError("setting AL_LABEL_STUDIO_URL is missing: the label stage takes answers from "
                                 "Label Studio (run `al labeling setup`)")
    return AnnotationIntake(_label_service(settings, ports), ports.store, ports.objects, tool,
                            project_id=settings.label_studio_project_id,
                            reports_container=settings.quarantine_container,
                            state_container=settings.retrain_state_container)


def intake() -> ExportIntake:
    """The process-wide intake, built on first use (not at import: indexing must not connect)."""
    global _intake
    with _lock:
        if _intake is None:
            _intake = build_intake(get_settings(), ports=backend())
        return _intake


def annotations() -> AnnotationIntake:
    """The process-wide Label Studio intake, built on first use."""
    global _annotations
    with _lock:
        if _annotations is None:
            _annotations = build_annotations(get_settings(), ports=backend())
        return _annotations


def use(instance: ExportIntake | None, annotation_intake: AnnotationIntake | None = None) -> None:
    """Install intakes (tests, the embedded loop); None rebuilds from the settings on next use."""
    global _intake, _annotations
    with _lock:
        _intake = instance
        _annotations = annotation_intake
