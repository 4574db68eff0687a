"""The selector's wiring: the select service on the ports of the process's backend (:mod:`shared.backends`):
DuckDB, a local folder and a file lock embedded; ADX, Blob Storage and a blob lease in Azure; Label Studio
for the tasks (required in Azure, optional embedded)."""

from __future__ import annotations

from datetime import timedelta
from functools import lru_cache
from typing import Any

from shared.backends import Backend, backend
from shared.services.select import SelectService
from shared.settings import Settings, get_settings


def build_select_service(settings: Settings, *, ports: Backend | None = None, **clients: Any) -> SelectService:
    """Wire the select service for ``settings.backend``; ``clients`` overrides backend clients (tests)."""
    ports = (ports or Backend(settings, **clients)).require("selector_timer")
    return SelectService(
        ports.store, ports.objects, model_name=settings.model_name, strategy=settings.strategy,
        batch_size=settings.batch_size, window=timedelta(hours=settings.window_hours),
        seed=settings.selection_seed, lock=ports.selection_lock, labeling_container=settings.labeling_container,
        labels_per_day=settings.labels_per_day, labels_total=settings.labels_total,
        stop_uncertainty_below=settings.stop_uncertainty_below,
        # embedded: file:// inside the object store only (it cannot fetch https)
        allowed_item_hosts=settings.allowed_item_host_list if settings.backend == "azure" else (),
        labeling_objects=ports.labeling_objects if ports.is_azure else None, tool=ports.labeling_tool,
    )


@lru_cache(maxsize=1)
def select_service() -> SelectService:
    """The process-wide select service (built on first use, reused by every invocation)."""
    return build_select_service(get_settings(), ports=backend())
