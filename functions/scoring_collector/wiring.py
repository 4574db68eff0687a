"""The collector's composition root: clients built once per process from the settings.

Embedded backend: one DuckDB file and a local folder under ``AL_DATA_DIR`` (the layout the
simulation uses). Azure backend: Blob Storage (managed identity, or a connection string for Azurite
only) and Azure Data Explorer (managed identity), both through ``DefaultAzureCredential``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

from shared.errors import ConfigurationError
from shared.services.collect import CollectService
from shared.services.ingest import IngestService, PredictionCounts, StoreIngestor, VersionCount
from shared.settings import Settings, get_settings


@dataclass(frozen=True)
class Collector:
    """Everything the collector's triggers call."""

    collect: CollectService
    ingest: IngestService
    counts: PredictionCounts
    settings: Settings
    catalog: Any = None  # where model versions are read (the DuckDB store, or ADX)


class DuckDBCounts:
    """Counts per model version from the embedded store (one row per prediction id already)."""

    SQL = ("SELECT model_name, model_version, count(*), max(ingested_at) FROM predictions "
           "GROUP BY ALL ORDER BY model_name, model_version")

    def __init__(self, store: Any) -> None:
        self._store = store

    def counts_by_version(self) -> list[VersionCount]:
        with self._store._cursor() as con:  # the store's lock; DuckDBStore has no public counts yet
            rows = con.execute(self.SQL).fetchall()
        return [VersionCount(n, v, int(c), t.replace(tzinfo=UTC) if t else None) for n, v, c, t in rows]


def build_collector(settings: Settings, **clients: Any) -> Collector:
    """Wire the services for ``settings.backend``; ``clients`` overrides Azure clients (tests)."""
    if settings.backend == "embedded":
        from shared.adapters.duckdb_store import DuckDBStore
        from shared.adapters.local_objects import LocalFolderObjectStore

        store: Any = DuckDBStore(settings.data_dir / "loop.duckdb", random_seed=settings.selection_seed)
        objects: Any = LocalFolderObjectStore(settings.data_dir / "blobs")
        ingestor: Any = StoreIngestor(store)
        catalog: Any = store
        counts: Any = DuckDBCounts(store)
    else:
        objects, ingestor, catalog = _azure(settings, clients)
        counts = catalog
    ingest = IngestService(objects, ingestor, container=settings.landing_container)
    collect = CollectService(
        catalog, objects, max_records=settings.max_records, max_item_bytes=settings.max_item_bytes,
        ingest=ingest, items_container=settings.items_container,
        max_future=timedelta(seconds=settings.max_future_seconds), clock=lambda: datetime.now(UTC),
        seed=settings.selection_seed,
    )
    return Collector(collect, ingest, counts, settings, catalog)


def _azure(settings: Settings, clients: dict[str, Any]) -> tuple[Any, Any, Any]:
    from shared.adapters.adx_ingest import (
        AdxCatalog,
        AdxIngestor,
        build_ingest_client,
        build_query_client,
        ingest_uri_of,
    )
    from shared.adapters.blob_objects import BlobObjectStore

    if not settings.adx_cluster_uri:
        raise ConfigurationError("setting AL_ADX_CLUSTER_URI is missing (needed with AL_BACKEND=azure)")
    if not (settings.storage_account_url or settings.storage_connection_string or "blob_service" in clients):
        raise ConfigurationError("setting AL_STORAGE_ACCOUNT_URL is missing (needed with AL_BACKEND=azure)")
    credential = clients.get("credential")
    if credential is None:
        from azure.identity import DefaultAzureCredential

        credential = DefaultAzureCredential()
    service = clients.get("blob_service")
    if service is None:
        from azure.storage.blob import BlobServiceClient

        service = (BlobServiceClient.from_connection_string(settings.storage_connection_string)
                   if settings.storage_connection_string
                   else BlobServiceClient(settings.storage_account_url, credential=credential))
    ingest_uri = settings.adx_ingest_uri or ingest_uri_of(settings.adx_cluster_uri)
    ingest_client = clients.get("ingest_client") or build_ingest_client(
        cluster_uri=settings.adx_cluster_uri, ingest_uri=ingest_uri, credential=credential,
        streaming=settings.adx_streaming,
    )
    query_client = clients.get("query_client") or build_query_client(
        cluster_uri=settings.adx_cluster_uri, credential=credential)
    return (BlobObjectStore(service), AdxIngestor(ingest_client, database=settings.adx_database),
            AdxCatalog(query_client, database=settings.adx_database))


@lru_cache(maxsize=1)
def collector() -> Collector:
    """The process-wide collector (built on first use, reused by every invocation)."""
    return build_collector(get_settings())
