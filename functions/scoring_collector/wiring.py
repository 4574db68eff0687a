"""The collector's wiring: its services on the ports of the process's backend (:mod:`shared.backends`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

from shared.backends import Backend, backend
from shared.services.collect import CollectService
from shared.services.ingest import IngestService, PredictionCounts
from shared.settings import Settings, get_settings


@dataclass(frozen=True)
class Collector:
    """Everything the collector's triggers call."""

    collect: CollectService
    ingest: IngestService
    counts: PredictionCounts
    settings: Settings
    catalog: Any = None  # where model versions are read (the backend's store)


def build_collector(settings: Settings, *, ports: Backend | None = None, **clients: Any) -> Collector:
    """Wire the services for ``settings.backend``; ``clients`` overrides backend clients (tests)."""
    ports = (ports or Backend(settings, **clients)).require("scoring_collector")
    ingest = IngestService(ports.objects, ports.ingestor, container=settings.landing_container)
    collect = CollectService(
        ports.store, ports.objects, max_records=settings.max_records, max_item_bytes=settings.max_item_bytes,
        ingest=ingest, items_container=settings.items_container,
        max_future=timedelta(seconds=settings.max_future_seconds), clock=lambda: datetime.now(UTC),
        # embedded: file:// inside the object store only (it cannot fetch https)
        allowed_item_hosts=settings.allowed_item_host_list if settings.backend == "azure" else (),
        min_scored_at=settings.min_scored_at, max_embedding_dim=settings.max_embedding_dim,
        seed=settings.selection_seed,
    )
    return Collector(collect, ingest, ports.counts, settings, ports.store)


@lru_cache(maxsize=1)
def collector() -> Collector:
    """The process-wide collector (built on first use, reused by every invocation)."""
    return build_collector(get_settings(), ports=backend())
