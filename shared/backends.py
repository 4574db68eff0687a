"""The composition root: every port of one backend, built once per process, from the settings.

``embedded``: one DuckDB file and a local folder under ``AL_DATA_DIR``, an in-process retrain queue,
a file lock — the simulation's and ``al``'s layout.

``azure``: the loop's state lives only in Azure services, shared by the four function apps —
Azure Data Explorer (Predictions, Selections, Labels, ModelVersions: :class:`AdxStore`), Blob
Storage (items, landing, labeling input, manifests, models; exports, reports and quarantine in the
exports account), Queue Storage (retrain requests, with their watermark in a blob), a blob lease as
the selection lock, the dedicated labeling account and Label Studio for human labeling.
Identity-based (``DefaultAzureCredential``); a storage connection string only for Azurite. Nothing
is written to the instance's disk, and a missing setting raises :class:`ConfigurationError` naming
it — never a local fallback.

The four ``functions/*/wiring.py`` take what they need from :func:`backend`; tests build a
:class:`Backend` with client overrides (``credential``, ``blob_service``, ``query_client``,
``ingest_client``, ``streaming_client``, ``store``).
"""

from __future__ import annotations

import threading
from datetime import UTC
from functools import cached_property
from typing import Any

from shared.errors import ConfigurationError
from shared.ports import LabelingTool, ObjectStore, PredictionStore, RetrainRequests
from shared.services.ingest import Ingestor, PredictionCounts, VersionCount
from shared.settings import Settings, get_settings, require_azure_settings


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


class Backend:
    """The ports of ``settings.backend``; each built on first use (indexing an app connects nothing)."""

    def __init__(self, settings: Settings, **clients: Any) -> None:
        self.settings = settings
        self._clients = clients

    def require(self, stage: str) -> Backend:
        """Check the settings ``stage`` needs on this backend (raise naming the missing ones)."""
        require_azure_settings(self.settings, (stage,))
        return self

    @property
    def is_azure(self) -> bool:
        return self.settings.backend == "azure"

    # --- shared clients (Azure) --------------------------------------------------------------
    @cached_property
    def credential(self) -> Any:
        if "credential" in self._clients:
            return self._clients["credential"]
        from azure.identity import DefaultAzureCredential

        return DefaultAzureCredential()

    def _blob_service(self, account_url: str) -> Any:
        from azure.storage.blob import BlobServiceClient

        if self.settings.storage_connection_string:  # Azurite: one development account
            return BlobServiceClient.from_connection_string(self.settings.storage_connection_string)
        if not account_url:
            raise ConfigurationError("setting AL_STORAGE_ACCOUNT_URL is missing (needed with AL_BACKEND=azure)")
        return BlobServiceClient(account_url, credential=self.credential)

    @cached_property
    def blob_service(self) -> Any:
        return self._clients.get("blob_service") or self._blob_service(self.settings.storage_account_url)

    @cached_property
    def query_client(self) -> Any:
        from shared.adapters.adx_ingest import build_query_client

        return self._clients.get("query_client") or build_query_client(
            cluster_uri=self._adx_uri(), credential=self.credential)

    def _adx_uri(self) -> str:
        if not self.settings.adx_cluster_uri:
            raise ConfigurationError("setting AL_ADX_CLUSTER_URI is missing (needed with AL_BACKEND=azure)")
        return self.settings.adx_cluster_uri

    # --- ports -------------------------------------------------------------------------------
    @cached_property
    def store(self) -> PredictionStore:
        if "store" in self._clients:
            return self._clients["store"]
        if not self.is_azure:
            try:
                from shared.adapters.duckdb_store import DuckDBStore
            except ImportError as exc:  # the function apps' requirements.txt has no DuckDB
                raise ConfigurationError(
                    f"AL_BACKEND=embedded needs DuckDB and pyarrow ({exc.name} is not installed): pip install "
                    "'azure-active-learning[embedded]', or run the function apps with AL_BACKEND=azure") from exc

            return DuckDBStore(self.settings.data_dir / "loop.duckdb", random_seed=self.settings.selection_seed)
        from shared.adapters.adx_ingest import build_streaming_client
        from shared.adapters.adx_store import AdxStore

        streaming = self._clients.get("streaming_client") or build_streaming_client(
            cluster_uri=self._adx_uri(), credential=self.credential)
        return AdxStore(self.query_client, database=self.settings.adx_database, ingest=streaming,
                        random_seed=self.settings.selection_seed)

    @cached_property
    def objects(self) -> ObjectStore:
        """The loop's storage: items, landing, labeling input, manifests, models, retrain state."""
        if not self.is_azure:
            from shared.adapters.local_objects import LocalFolderObjectStore

            return LocalFolderObjectStore(self.settings.data_dir / "blobs")
        from shared.adapters.blob_objects import BlobObjectStore

        return BlobObjectStore(self.blob_service)

    @cached_property
    def exports(self) -> ObjectStore:
        """Where the labeling exports land (the Azure ML workspace's storage), with their reports and
        quarantine: the account the blob trigger watches, not the loop's."""
        if not self.is_azure:
            return self.objects
        from shared.adapters.blob_objects import BlobObjectStore

        service = self._clients.get("exports_blob_service") or self._clients.get("blob_service") \
            or self._blob_service(self.settings.exports_account_url)
        return BlobObjectStore(service)

    @cached_property
    def ingestor(self) -> Ingestor:
        """How the collector's landed batches reach the store."""
        if not self.is_azure:
            from shared.services.ingest import StoreIngestor

            return StoreIngestor(self.store)
        from shared.adapters.adx_ingest import AdxIngestor, build_ingest_client, ingest_uri_of

        client = self._clients.get("ingest_client") or build_ingest_client(
            cluster_uri=self._adx_uri(), credential=self.credential, streaming=self.settings.adx_streaming,
            ingest_uri=self.settings.adx_ingest_uri or ingest_uri_of(self._adx_uri()))
        return AdxIngestor(client, database=self.settings.adx_database)

    @cached_property
    def counts(self) -> PredictionCounts:
        if not self.is_azure:
            return DuckDBCounts(self.store)
        return self.store  # type: ignore[return-value]  # AdxStore.counts_by_version

    @cached_property
    def retrain_requests(self) -> RetrainRequests:
        if not self.is_azure:
            from shared.adapters.queues import InProcessRetrainRequests

            return InProcessRetrainRequests()
        from shared.adapters.queues import QueueRetrainRequests, build_queue_client

        s = self.settings
        if s.storage_connection_string:
            queue = build_queue_client(s.retrain_queue, connection_string=s.storage_connection_string)
        else:
            queue_url = s.storage_queue_url or s.storage_account_url.replace(".blob.", ".queue.")
            queue = build_queue_client(s.retrain_queue, account_url=queue_url, credential=self.credential)
        return QueueRetrainRequests(queue, self.blob_service.get_container_client(s.retrain_state_container))

    @cached_property
    def selection_lock(self) -> Any:
        if not self.is_azure:
            from shared.adapters.selection_lock import FileLock

            return FileLock(self.settings.data_dir / "selection.lock")
        from shared.adapters.selection_lock import BlobLeaseLock

        return BlobLeaseLock(self.blob_service, container=self.settings.selection_lock_container,
                             lease_seconds=self.settings.selection_lease_seconds)

    @cached_property
    def labeling_objects(self) -> ObjectStore:
        """Where the selector copies the items under labeling: in Azure the dedicated labeling account
        (``AL_LABELING_ACCOUNT_URL``; the only one with an account key, which Label Studio needs), so
        the loop's own accounts stay keyless and private; embedded, the loop's folder."""
        if not self.is_azure:
            return self.objects
        from shared.adapters.blob_objects import BlobObjectStore

        service = self._clients.get("labeling_blob_service") or self._clients.get("blob_service") \
            or self._blob_service(self.settings.labeling_account_url)
        return BlobObjectStore(service)

    @cached_property
    def labeling_tool(self) -> LabelingTool | None:
        """The Label Studio project (``AL_LABEL_STUDIO_*``). Required in Azure (the settings check
        stops an app without it); embedded, None unless configured (the simulation's oracle reads the
        labeling folder instead)."""
        if "labeling_tool" in self._clients:
            return self._clients["labeling_tool"]
        s = self.settings
        if not s.label_studio_url:
            if self.is_azure:
                raise ConfigurationError("setting AL_LABEL_STUDIO_URL is missing (needed with AL_BACKEND=azure)")
            return None
        if s.label_studio_project_id is None:
            raise ConfigurationError("setting AL_LABEL_STUDIO_PROJECT_ID is missing (run `al labeling setup`)")
        from shared.adapters.label_studio import LabelStudioClient, LabelStudioTool, image_ref_for

        client = LabelStudioClient(s.label_studio_url, s.label_studio_token.get_secret_value(),
                                   timeout=s.label_studio_timeout_seconds)
        return LabelStudioTool(client, project_id=s.label_studio_project_id,
                               image_ref=image_ref_for(self.labeling_objects))


_lock = threading.Lock()
_backend: Backend | None = None


def backend() -> Backend:
    """The process-wide backend of the settings (built on first use)."""
    global _backend
    settings = get_settings()
    with _lock:
        if _backend is None or _backend.settings is not settings:  # the settings were re-read (tests)
            _backend = Backend(settings)
        return _backend


def use(instance: Backend | None) -> None:
    """Install a backend for this process (tests); None rebuilds from the settings on next use."""
    global _backend
    with _lock:
        _backend = instance
