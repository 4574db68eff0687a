"""Azure Data Explorer clients, and the collector's ingestion of landed batches.

Identity-based: every client takes a ``TokenCredential`` (``DefaultAzureCredential`` in Azure; the
function app's managed identity). Clients are built once per process by the caller and reused.

Duplicates: a batch is ingested with ``ingest-by:<batch id>`` and ``ingestIfNotExists`` on the same
tag, so re-ingesting a landed batch (a retry, the timer racing a request) adds no rows. Streaming
ingestion ignores tags, so with ``AL_ADX_STREAMING`` duplicates are removed on read: every query
here (and selection) takes one row per ``PredictionId``.
"""

from __future__ import annotations

import io
import uuid

from azure.core.credentials import TokenCredential
from azure.kusto.data import KustoClient, KustoConnectionStringBuilder
from azure.kusto.ingest import (
    BaseIngestClient,
    IngestionProperties,
    KustoStreamingIngestClient,
    ManagedStreamingIngestClient,
    QueuedIngestClient,
    StreamDescriptor,
)
from azure.kusto.ingest.ingestion_properties import DataFormat, IngestionMappingKind

from shared.services.ingest import IngestOutcome

PREDICTIONS_TABLE = "Predictions"
PREDICTIONS_MAPPING = "PredictionsJsonMapping"  # infra/adx/02-ingestion.kql
_SOURCE_NS = uuid.UUID("5b0f7c1e-2f0e-4c55-9a43-51a1c0d1c0de")

def ingest_uri_of(cluster_uri: str) -> str:
    """The data-management endpoint of a cluster (``https://ingest-<cluster>...``)."""
    return BaseIngestClient.get_ingestion_endpoint(cluster_uri)


def build_ingest_client(
    *, cluster_uri: str, ingest_uri: str, credential: TokenCredential, streaming: bool
) -> BaseIngestClient:
    """Queued ingestion (default) or managed streaming (falls back to queued on transient errors)."""
    dm = KustoConnectionStringBuilder.with_azure_token_credential(ingest_uri, credential)
    if streaming:
        engine = KustoConnectionStringBuilder.with_azure_token_credential(cluster_uri, credential)
        return ManagedStreamingIngestClient(engine, dm)
    return QueuedIngestClient(dm, auto_correct_endpoint=False)


def build_streaming_client(*, cluster_uri: str, credential: TokenCredential) -> KustoStreamingIngestClient:
    """Streaming ingestion with no queued fallback: when the call returns the rows are queryable, and
    a failure raises to the caller (what the loop's state writes need, :mod:`shared.adapters.adx_store`)."""
    return KustoStreamingIngestClient(KustoConnectionStringBuilder.with_azure_token_credential(cluster_uri, credential))


def build_query_client(*, cluster_uri: str, credential: TokenCredential) -> KustoClient:
    return KustoClient(KustoConnectionStringBuilder.with_azure_token_credential(cluster_uri, credential))


class AdxIngestor:
    """:class:`shared.services.ingest.Ingestor` into the ``Predictions`` table with the JSON mapping."""

    def __init__(self, client: BaseIngestClient, *, database: str, table: str = PREDICTIONS_TABLE,
                 mapping: str = PREDICTIONS_MAPPING) -> None:
        self._client = client
        self._database = database
        self._table = table
        self._mapping = mapping

    def properties(self, batch_id: str) -> IngestionProperties:
        tag = f"batch:{batch_id}"
        return IngestionProperties(
            database=self._database, table=self._table, data_format=DataFormat.JSON,
            ingestion_mapping_reference=self._mapping, ingestion_mapping_kind=IngestionMappingKind.JSON,
            ingest_by_tags=[tag], ingest_if_not_exists=[tag], additional_tags=["scoring_collector"],
        )

    def ingest(self, batch_id: str, jsonl: bytes) -> IngestOutcome:
        descriptor = StreamDescriptor(io.BytesIO(jsonl), source_id=uuid.uuid5(_SOURCE_NS, batch_id),
                                      is_compressed=False, stream_name=f"{batch_id}.jsonl", size=len(jsonl))
        self._client.ingest_from_stream(descriptor, self.properties(batch_id))
        return IngestOutcome(None)  # queued: ADX reports the row count later, not here
