"""The selector's composition root: the select service, built once per process from the settings.

Embedded backend: the DuckDB file and local folder under ``AL_DATA_DIR`` (the collector's layout) and a
file lock. Azure backend: Azure Data Explorer (queries, plus streaming ingestion for the selection
ledger), Blob Storage for items and the labeling input folder, and a blob lease as the lock; identity
based through ``DefaultAzureCredential`` (a connection string only for Azurite).
"""

from __future__ import annotations

from datetime import timedelta
from functools import lru_cache
from typing import Any

from shared.errors import ConfigurationError
from shared.services.select import SelectService
from shared.settings import Settings, get_settings


def build_select_service(settings: Settings, **clients: Any) -> SelectService:
    """Wire the select service for ``settings.backend``; ``clients`` overrides Azure clients (tests):
    ``blob_service``, ``query_client``, ``ingest_client``, ``credential``, or a whole ``store``."""
    if settings.backend == "embedded":
        from shared.adapters.duckdb_store import DuckDBStore
        from shared.adapters.local_objects import LocalFolderObjectStore
        from shared.adapters.selection_lock import FileLock

        store: Any = clients.get("store") or DuckDBStore(settings.data_dir / "loop.duckdb")
        objects: Any = LocalFolderObjectStore(settings.data_dir / "blobs")
        lock: Any = FileLock(settings.data_dir / "selection.lock")
    else:
        store, objects, lock = _azure(settings, clients)
    return SelectService(
        store, objects, model_name=settings.model_name, strategy=settings.strategy,
        batch_size=settings.batch_size, window=timedelta(hours=settings.window_hours),
        seed=settings.selection_seed, lock=lock, labeling_container=settings.labeling_container,
        labels_per_day=settings.labels_per_day, labels_total=settings.labels_total,
        stop_uncertainty_below=settings.stop_uncertainty_below,
        # embedded: file:// inside the object store only (it cannot fetch https)
        allowed_item_hosts=settings.allowed_item_host_list if settings.backend == "azure" else (),
    )


def _azure(settings: Settings, clients: dict[str, Any]) -> tuple[Any, Any, Any]:
    from shared.adapters.blob_objects import BlobObjectStore
    from shared.adapters.selection_lock import BlobLeaseLock

    if not (settings.storage_account_url or settings.storage_connection_string or "blob_service" in clients):
        raise ConfigurationError("setting AL_STORAGE_ACCOUNT_URL is missing (needed with AL_BACKEND=azure)")
    credential = clients.get("credential")
    service = clients.get("blob_service")
    if service is None:
        from azure.storage.blob import BlobServiceClient

        if settings.storage_connection_string:
            service = BlobServiceClient.from_connection_string(settings.storage_connection_string)
        else:
            credential = credential or _default_credential()
            service = BlobServiceClient(settings.storage_account_url, credential=credential)
    store = clients.get("store")
    if store is None:
        store = _adx_store(settings, clients, credential)
    lock = BlobLeaseLock(service, container=settings.selection_lock_container,
                         lease_seconds=settings.selection_lease_seconds)
    return store, BlobObjectStore(service), lock


def _adx_store(settings: Settings, clients: dict[str, Any], credential: Any) -> Any:
    from shared.adapters.adx_ingest import build_ingest_client, build_query_client, ingest_uri_of
    from shared.adapters.adx_store import AdxSelectionStore

    if not settings.adx_cluster_uri:
        raise ConfigurationError("setting AL_ADX_CLUSTER_URI is missing (needed with AL_BACKEND=azure)")
    credential = credential or _default_credential()
    query = clients.get("query_client") or build_query_client(cluster_uri=settings.adx_cluster_uri,
                                                              credential=credential)
    # Streaming: the next run must see this run's selection at once (queued ingestion lags minutes).
    ingest = clients.get("ingest_client") or build_ingest_client(
        cluster_uri=settings.adx_cluster_uri, credential=credential, streaming=True,
        ingest_uri=settings.adx_ingest_uri or ingest_uri_of(settings.adx_cluster_uri))
    return AdxSelectionStore(query, database=settings.adx_database, ingest=ingest)


def _default_credential() -> Any:
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential()


@lru_cache(maxsize=1)
def select_service() -> SelectService:
    """The process-wide select service (built on first use, reused by every invocation)."""
    return build_select_service(get_settings())
