"""Build the label stage's clients once per process, from the settings.

Azure Storage (Blob for exports/quarantine/state, Queue for retrain requests) when
``AL_STORAGE_CONNECTION_STRING`` (Azurite) or ``AL_STORAGE_ACCOUNT_URL`` (managed identity via
``DefaultAzureCredential``) is set; otherwise the embedded adapters under ``AL_DATA_DIR``. The
label table is the DuckDB store until an Azure Data Explorer store exists.
"""

from __future__ import annotations

import threading

from shared.adapters.duckdb_store import DuckDBStore
from shared.ports import ObjectStore, PredictionStore, RetrainRequests
from shared.services.labels import ExportIntake, LabelService
from shared.settings import Settings, get_settings

_lock = threading.Lock()
_intake: ExportIntake | None = None


def exports_path(settings: Settings) -> str:
    """The blob trigger's path: ``<container>/<prefix>{name}``."""
    return f"{settings.exports_container}/{settings.exports_prefix}{{name}}"


def _storage(settings: Settings) -> tuple[ObjectStore, RetrainRequests]:
    from azure.storage.blob import BlobServiceClient

    from shared.adapters.blob_objects import BlobObjectStore
    from shared.adapters.queues import QueueRetrainRequests, build_queue_client

    if settings.storage_connection_string:
        blobs = BlobServiceClient.from_connection_string(settings.storage_connection_string)
        queue = build_queue_client(settings.retrain_queue, connection_string=settings.storage_connection_string)
    else:
        from azure.identity import DefaultAzureCredential

        credential = DefaultAzureCredential()
        blobs = BlobServiceClient(settings.storage_account_url, credential=credential)
        queue_url = settings.storage_queue_url or settings.storage_account_url.replace(".blob.", ".queue.")
        queue = build_queue_client(settings.retrain_queue, account_url=queue_url, credential=credential)
    state = blobs.get_container_client(settings.retrain_state_container)
    return BlobObjectStore(blobs), QueueRetrainRequests(queue, state)


def build_intake(settings: Settings, *, store: PredictionStore | None = None) -> ExportIntake:
    """The intake for ``settings`` (``store`` given by tests; default the DuckDB file)."""
    if settings.storage_connection_string or settings.storage_account_url:
        objects, requests = _storage(settings)
    else:
        from shared.adapters.local_objects import LocalFolderObjectStore
        from shared.adapters.queues import InProcessRetrainRequests

        objects, requests = LocalFolderObjectStore(settings.data_dir / "blobs"), InProcessRetrainRequests()
    store = store or DuckDBStore(settings.data_dir / "loop.duckdb")
    configured = settings.class_name_list

    def class_names() -> tuple[str, ...] | None:
        if configured:
            return configured
        serving = store.serving_version(settings.model_name)
        return serving.class_names if serving else None

    labels = LabelService(store, model_name=settings.model_name, class_names=class_names,
                          retrain_threshold=settings.retrain_threshold, requests=requests)
    return ExportIntake(labels, objects, exports_container=settings.exports_container,
                        quarantine_container=settings.quarantine_container, max_bytes=settings.max_export_bytes)


def intake() -> ExportIntake:
    """The process-wide intake, built on first use (not at import: indexing must not connect)."""
    global _intake
    with _lock:
        if _intake is None:
            _intake = build_intake(get_settings())
        return _intake


def use(instance: ExportIntake | None) -> None:
    """Install an intake (tests, the embedded loop); None rebuilds from the settings on next use."""
    global _intake
    with _lock:
        _intake = instance
