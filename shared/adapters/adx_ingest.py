"""Azure Data Explorer for the collector: ingestion of landed batches, model classes, and counts.

Identity-based: every client takes a ``TokenCredential`` (``DefaultAzureCredential`` in Azure; the
function app's managed identity). Clients are built once per process by the caller and reused.

Duplicates: a batch is ingested with ``ingest-by:<batch id>`` and ``ingestIfNotExists`` on the same
tag, so re-ingesting a landed batch (a retry, the timer racing a request) adds no rows. Streaming
ingestion ignores tags, so with ``AL_ADX_STREAMING`` duplicates are removed on read: every query
here (and selection) takes one row per ``PredictionId``.
"""

from __future__ import annotations

import io
import json
import uuid

from azure.core.credentials import TokenCredential
from azure.kusto.data import ClientRequestProperties, KustoClient, KustoConnectionStringBuilder
from azure.kusto.ingest import (
    BaseIngestClient,
    IngestionProperties,
    ManagedStreamingIngestClient,
    QueuedIngestClient,
    StreamDescriptor,
)
from azure.kusto.ingest.ingestion_properties import DataFormat, IngestionMappingKind

from shared.core.records import ModelStatus, ModelVersion
from shared.errors import NotFoundError
from shared.services.ingest import IngestOutcome, VersionCount

PREDICTIONS_TABLE = "Predictions"
PREDICTIONS_MAPPING = "PredictionsJsonMapping"  # infra/adx/02-ingestion.kql
_SOURCE_NS = uuid.UUID("5b0f7c1e-2f0e-4c55-9a43-51a1c0d1c0de")

# Queries are parameterised with declare query_parameters; values travel as request parameters.
MODEL_VERSION_QUERY = """declare query_parameters(model_name:string, model_version:string);
ModelVersions
| where ModelName == model_name and Version == model_version
| summarize arg_max(CreatedAt, ClassNames, Status, ArtifactUri) by ModelName, Version
| project ClassNames, Status, ArtifactUri"""

# The length of a model version's embeddings: the first one ingested (the collector keeps one per version).
EMBEDDING_DIM_QUERY = """declare query_parameters(model_name:string, model_version:string);
Predictions
| where ModelName == model_name and ModelVersion == model_version
| extend Dim = array_length(Embedding)
| where Dim > 0
| top 1 by IngestedAt asc
| project Dim"""

COUNTS_QUERY = """Predictions
| summarize arg_max(IngestedAt, ModelName, ModelVersion) by PredictionId
| summarize Predictions = count(), LastIngestedAt = max(IngestedAt) by ModelName, ModelVersion
| order by ModelName asc, ModelVersion asc"""


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


class AdxCatalog:
    """What the collector reads from ADX: a model version's classes, and counts per version."""

    def __init__(self, client: KustoClient, *, database: str) -> None:
        self._client = client
        self._database = database

    def get_model_version(self, name: str, version: str) -> ModelVersion:
        props = ClientRequestProperties()
        props.set_parameter("model_name", name)
        props.set_parameter("model_version", version)
        rows = list(self._client.execute_query(self._database, MODEL_VERSION_QUERY, props).primary_results[0])
        if not rows:
            raise NotFoundError(f"model {name!r} version {version!r} is not registered")
        row = rows[0]
        classes = row["ClassNames"]
        if isinstance(classes, str):
            classes = json.loads(classes)
        status = str(row["Status"] or ModelStatus.CANDIDATE)
        return ModelVersion(name=name, version=version, class_names=tuple(str(c) for c in classes),
                            artifact_uri=str(row["ArtifactUri"] or ""),
                            status=ModelStatus(status) if status in ModelStatus._value2member_map_
                            else ModelStatus.CANDIDATE)

    def embedding_dim(self, model_name: str, model_version: str) -> int | None:
        props = ClientRequestProperties()
        props.set_parameter("model_name", model_name)
        props.set_parameter("model_version", model_version)
        rows = list(self._client.execute_query(self._database, EMBEDDING_DIM_QUERY, props).primary_results[0])
        return int(rows[0]["Dim"]) if rows and rows[0]["Dim"] is not None else None

    def counts_by_version(self) -> list[VersionCount]:
        result = self._client.execute_query(self._database, COUNTS_QUERY, ClientRequestProperties())
        return [VersionCount(str(r["ModelName"]), str(r["ModelVersion"]), int(r["Predictions"]),
                             r["LastIngestedAt"]) for r in result.primary_results[0]]
