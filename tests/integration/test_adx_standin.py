"""The ADX stand-in (tests/support/adx_standin.py) with the real azure-kusto-data / azure-kusto-ingest
clients and the product's adapters: shipped queries executed by duckdb-kql, queued ingestion through
Azurite with the JSON mapping and ingest-by tags, streaming ingestion, and the fault-injection switch.
"""

from __future__ import annotations

import io
import json
import time
from datetime import UTC, datetime

import numpy as np
import pytest
from azure.core.credentials import AccessToken
from azure.kusto.data import ClientRequestProperties, KustoClient, KustoConnectionStringBuilder
from azure.kusto.data.exceptions import KustoServiceError
from azure.kusto.ingest import IngestionProperties, KustoStreamingIngestClient, StreamDescriptor
from azure.kusto.ingest.ingestion_properties import DataFormat
from azure.storage.queue import QueueClient

from shared.adapters.adx_ingest import AdxIngestor, build_ingest_client
from shared.adapters.adx_store import AdxStore
from shared.core import kql
from shared.core.payload import landing_jsonl, validate_batch
from shared.core.records import SelectedItem, Selection
from shared.core.selection import CandidateFilter
from shared.services.ingest import batch_id_of
from tests.support.adx_standin import AdxStandIn

DB = "activelearning"
T0 = datetime(2026, 3, 1, 10, tzinfo=UTC)
WINDOW = {"model_name": "m", "model_version": "1", "window_start": datetime(2026, 3, 1, tzinfo=UTC),
          "window_end": datetime(2026, 3, 2, tzinfo=UTC)}


class FakeCredential:
    """A TokenCredential for the stand-in (which ignores the bearer token)."""

    def get_token(self, *scopes: str, **kwargs: object) -> AccessToken:
        return AccessToken("stand-in-token", int(time.time()) + 3600)

    def close(self) -> None:
        pass


@pytest.fixture
def adx(azurite):
    with AdxStandIn(azurite) as standin:
        yield standin


def engine(adx: AdxStandIn) -> KustoConnectionStringBuilder:
    return KustoConnectionStringBuilder.with_no_authentication(adx.url)


def landed(n: int, probabilities: list[list[float]] | None = None, *, model_version: str = "1") -> tuple[str, bytes]:
    """A batch as the scoring collector lands it (shared/core/payload.py landing_jsonl)."""
    rows = probabilities or [[0.25, 0.75]] * n
    payload = [{"item_id": f"img-{i}", "item_uri": f"https://x/img-{i}.png", "model_name": "m",
                "model_version": model_version, "class_names": ["a", "b"], "probabilities": rows[i],
                "predicted_label": "b", "scored_at": "2026-03-01T10:00:00Z"} for i in range(n)]
    checked = validate_batch(payload, classes_of=lambda *_: None, max_records=100, max_item_bytes=10)
    records = [r for r, _, _ in checked]
    jsonl = landing_jsonl(records, [r.item_uri or "" for r in records], datetime(2026, 3, 1, 10, 1, tzinfo=UTC))
    return batch_id_of([r.prediction_id or "" for r in records]), jsonl


def stream_predictions(adx: AdxStandIn, jsonl: bytes) -> None:
    client = KustoStreamingIngestClient(engine(adx), auto_correct_endpoint=False)
    props = IngestionProperties(DB, "Predictions", data_format=DataFormat.JSON,
                                ingestion_mapping_reference="PredictionsJsonMapping")
    client.ingest_from_stream(StreamDescriptor(io.BytesIO(jsonl), is_compressed=False), props)
    client.close()


def selection(batch_id: str, *items: str) -> Selection:
    return Selection(batch_id, "margin", "m", "1", datetime(2026, 3, 1, 12, tzinfo=UTC),
                     tuple(SelectedItem(i, f"https://x/{i}.png", 0.1 * n, n) for n, i in enumerate(items)))


def test_shipped_queries_run_with_request_parameters_and_return_typed_rows(adx):
    _, jsonl = landed(3, [[0.5, 0.5], [0.9, 0.1], [0.3, 0.7]])
    stream_predictions(adx, jsonl)
    client = KustoClient(engine(adx))

    text = kql.load("candidates")
    props = ClientRequestProperties()
    for name, literal in kql.literals(text, WINDOW).items():
        props.set_parameter(name, literal)
    rows = [r.to_dict() for r in client.execute_query(DB, text, props).primary_results[0]]
    assert [r["ItemId"] for r in rows] == ["img-0", "img-1", "img-2"]
    assert rows[1]["Probabilities"] == [0.9, 0.1] and rows[1]["Embedding"] is None  # dynamic -> list / null

    store = AdxStore(client, database=DB)
    flt = CandidateFilter("m", "1", np.datetime64("2026-03-01T00:00", "us"), np.datetime64("2026-03-02T00:00", "us"))
    ranked = store.top_k(flt, "margin", 2)  # `take k` with k a request parameter
    assert [(r.item_id, r.score) for r in ranked] == [("img-0", 0.0), ("img-2", pytest.approx(0.4))]
    assert isinstance(ranked[1].score, float)

    counts = store.counts_by_version()
    assert [(c.model_name, c.model_version, c.predictions) for c in counts] == [("m", "1", 3)]
    assert counts[0].last_ingested_at == datetime(2026, 3, 1, 10, 1, tzinfo=UTC)  # datetime, aware UTC
    assert adx.query("UniquePredictions | count")[0]["Count"] == 3  # the stored function of infra/adx
    client.close()


def test_queued_ingestion_lands_rows_through_the_mapping_once_per_batch(adx):
    client = build_ingest_client(cluster_uri=adx.url, ingest_uri=adx.url, credential=FakeCredential(),
                                 streaming=False)
    ingestor = AdxIngestor(client, database=DB)
    batch_id, jsonl = landed(3)
    ingestor.ingest(batch_id, jsonl)
    adx.wait_for_queued()
    rows = adx.rows("Predictions")
    assert sorted(r["ItemUri"] for r in rows) == [f"https://x/img-{i}.png" for i in range(3)]
    assert rows[0]["ScoredAt"] == datetime(2026, 3, 1, 10, tzinfo=UTC) and rows[0]["Probabilities"] == [0.25, 0.75]
    assert adx.ingestions[-1] | {"blob": None} == {
        "kind": "queued", "database": DB, "table": "Predictions", "rows": 3, "skipped": False, "format": "json",
        "mapping": "PredictionsJsonMapping", "tags": ["scoring_collector", f"ingest-by:batch:{batch_id}"],
        "blob": None}

    ingestor.ingest(batch_id, jsonl)  # the same batch again: same ingest-by tag, ingestIfNotExists
    adx.wait_for_queued()
    assert len(adx.rows("Predictions")) == 3
    assert adx.ingestions[-1]["skipped"] and adx.ingestions[-1]["rows"] == 0
    client.close()


def test_streaming_ingestion_is_visible_to_the_very_next_query(adx):
    query = KustoClient(engine(adx))
    ingest = KustoStreamingIngestClient(engine(adx), auto_correct_endpoint=False)
    store = AdxStore(query, database=DB, ingest=ingest)
    sel = selection("b1", "x", "y")
    store.record_selection(sel)
    assert store.pending_handoffs() == [sel]  # SelectedAt back as an aware datetime, Score float, Rank int
    assert store.selection_uris(["x", "z"]) == {"x": "https://x/x.png"}
    store.mark_handed_off("b1")
    assert store.pending_handoffs() == []
    assert [i["kind"] for i in adx.ingestions] == ["streaming", "streaming"]

    managed = build_ingest_client(cluster_uri=adx.url, ingest_uri=adx.url, credential=FakeCredential(),
                                  streaming=True)
    AdxStore(query, database=DB, ingest=managed).record_selection(selection("b2", "z"))
    assert query.execute_query(DB, "Selections | where BatchId == 'b2' | count").primary_results[0][0][0] == 1
    for client in (query, ingest, managed):
        client.close()


def test_streaming_needs_the_tables_streaming_policy(adx):
    KustoClient(engine(adx)).execute_mgmt(DB, ".create-merge table NoPolicy (ItemId: string)")
    client = KustoStreamingIngestClient(engine(adx), auto_correct_endpoint=False)
    props = IngestionProperties(DB, "NoPolicy", data_format=DataFormat.MULTIJSON)
    with pytest.raises(KustoServiceError, match="Streaming ingestion policy is not enabled for table 'NoPolicy'"):
        client.ingest_from_stream(StreamDescriptor(io.BytesIO(b'{"ItemId": "x"}'), is_compressed=False), props)
    client.close()


def test_down_fails_queries_and_streaming_and_holds_queued_work(adx, azurite):
    query = KustoClient(engine(adx))
    queued = build_ingest_client(cluster_uri=adx.url, ingest_uri=adx.url, credential=FakeCredential(),
                                 streaming=False)
    first, jsonl = landed(1)
    AdxIngestor(queued, database=DB).ingest(first, jsonl)  # also caches the ingestion resources
    adx.wait_for_queued()

    adx.down = True
    with pytest.raises(KustoServiceError, match="down"):
        query.execute_query(DB, "Predictions | count")
    with pytest.raises(KustoServiceError):
        stream_predictions(adx, jsonl)
    second, jsonl2 = landed(2, model_version="2")
    AdxIngestor(queued, database=DB).ingest(second, jsonl2)  # blob + message go to Azurite directly
    time.sleep(3 * adx.poll_interval)
    assert len(QueueClient.from_connection_string(azurite.connection_string, adx.queue).peek_messages()) == 1
    with pytest.raises(RuntimeError, match="down"):
        adx.wait_for_queued()

    adx.down = False
    adx.wait_for_queued()
    got = query.execute_query(DB, "Predictions | summarize n = count() by ModelVersion | sort by ModelVersion asc")
    assert [(r["ModelVersion"], r["n"]) for r in got.primary_results[0]] == [("1", 1), ("2", 2)]
    query.close()
    queued.close()


def test_queries_the_standin_cannot_run_raise_naming_the_problem(adx):
    client = KustoClient(engine(adx))
    store = AdxStore(client, database=DB)
    with pytest.raises(KustoServiceError, match=r"ingestion_time\(\) is not supported"):
        client.execute_query(DB, "ModelVersions | extend At = ingestion_time()")
    assert store.serving_version("m") is None  # the shipped query reads RecordedAt instead
    with pytest.raises(KustoServiceError, match="MvapplyOperator"):
        client.execute_query(DB, "Predictions | mv-apply p = Probabilities to typeof(real) on (take 1)")
    with pytest.raises(KustoServiceError, match=r"Semantic error: .*NoSuchColumn"):
        client.execute_query(DB, "Predictions | where NoSuchColumn == 1")
    with pytest.raises(KustoServiceError, match="database 'elsewhere' was not found"):
        client.execute_query("elsewhere", "Predictions | count")
    client.close()


EVENTS_SCHEMA = """// a table, a CSV mapping, a materialized view over it and a function over the view
.create-merge table Events (Id: string, At: datetime, Value: real, Tags: dynamic)

.create-or-alter table Events ingestion csv mapping "EventsCsv" 'CSV_MAPPING'

.create materialized-view with (backfill = true) LatestEvents on table Events {
    Events
    | summarize arg_max(At, Value) by Id
}

.create-or-alter function with (docstring = "ids with a positive latest value") Positive() {
    LatestEvents
    | where Value > 0
    | project Id
}

.alter table Events policy streamingingestion enable
"""


def test_schema_files_drive_tables_mappings_views_and_functions(azurite, tmp_path):
    schema = tmp_path / "schema.kql"
    schema.write_text(EVENTS_SCHEMA.replace("CSV_MAPPING", json.dumps(
        [{"column": c, "Properties": {"Ordinal": str(n)}} for n, c in enumerate(["At", "Id", "Value", "Tags"])])))
    with AdxStandIn(azurite, database="db", schema_files=[schema]) as adx:
        client = KustoStreamingIngestClient(engine(adx), auto_correct_endpoint=False)
        csv = b'2026-03-01T10:00:00Z,a,1.5,"[""x""]"\n2026-03-01T11:00:00Z,a,-1,[]\n2026-03-01T10:00:00Z,b,2,{}\n'
        props = IngestionProperties("db", "Events", data_format=DataFormat.CSV, ingestion_mapping_reference="EventsCsv")
        client.ingest_from_stream(StreamDescriptor(io.BytesIO(csv), is_compressed=False), props)
        client.close()
        assert adx.rows("Events")[0] == {"Id": "a", "At": datetime(2026, 3, 1, 10, tzinfo=UTC), "Value": 1.5,
                                         "Tags": ["x"]}
        assert sorted((r["Id"], r["Value"]) for r in adx.rows("LatestEvents")) == [("a", -1.0), ("b", 2.0)]
        assert adx.query("Positive()") == [{"Id": "b"}]
        declared = "declare query_parameters(k:long, since:datetime, ids:dynamic);\n"
        got = adx.query(declared + "Events | where At >= since and Id in (ids) | sort by At asc | take k",
                        {"k": "1", "since": "datetime(2026-03-01T10:30:00Z)", "ids": 'dynamic(["a"])'})
        assert [(r["Id"], r["Value"]) for r in got] == [("a", -1.0)]
        kusto = KustoClient(engine(adx))
        assert [r["TableName"] for r in kusto.execute_mgmt("db", ".show tables").primary_results[0]] == ["Events"]
        kusto.close()
