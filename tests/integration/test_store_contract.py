"""One contract, two stores: the embedded DuckDB store and the Azure store (ADX: ``AdxStore`` with the
real Kusto clients against the ADX stand-in, which runs the shipped KQL through duckdb-kql) give the
same answers to the same calls — the whole ``PredictionStore`` port, not only selection.

This is what lets every stage of an Azure app keep its state in ADX alone: labels, model versions and
selections written by one app are what the next app reads.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from azure.core.credentials import AccessToken

from shared.adapters.adx_ingest import build_query_client, build_streaming_client
from shared.adapters.adx_store import AdxStore
from shared.adapters.duckdb_store import DuckDBStore
from shared.core.records import Label, ModelStatus, ModelVersion, PredictionBatch, SelectedItem, Selection
from shared.core.selection import CandidateFilter
from shared.errors import NotFoundError

T0 = datetime(2026, 3, 1, 10, tzinfo=UTC)


class Token:
    def get_token(self, *scopes: str, **kwargs: object) -> AccessToken:
        return AccessToken("t", int(time.time()) + 3600)


@pytest.fixture(params=["duckdb", "adx"])
def store(request, adx):
    if request.param == "duckdb":
        s = DuckDBStore()
        yield s
        s.close()
        return
    for table in ("Predictions", "Selections", "Labels", "ModelVersions"):
        build_query_client(cluster_uri=adx.url, credential=Token()).execute_mgmt(adx.database,
                                                                                 f".clear table {table} data")
    yield AdxStore(build_query_client(cluster_uri=adx.url, credential=Token()), database=adx.database,
                   ingest=build_streaming_client(cluster_uri=adx.url, credential=Token()))


def batch(ids: list[str], proba: list[list[float]], *, version: str = "1", at: datetime = T0) -> PredictionBatch:
    n = len(ids)
    return PredictionBatch(
        tuple(f"p-{version}-{i}" for i in ids), tuple(ids), tuple(f"https://a.blob/items/{i}.png" for i in ids),
        ("m",) * n, (version,) * n, ("a",) * n, np.full(n, np.datetime64(at.replace(tzinfo=None), "us")),
        np.asarray(proba, np.float32), np.asarray([[float(k), 1.0] for k in range(n)], np.float32))


def test_predictions_selection_reads_and_duplicates(store):
    b = batch(["x", "y", "z"], [[0.5, 0.5], [0.9, 0.1], [0.7, 0.3]])
    assert store.add_predictions(b) == 3
    assert store.add_predictions(b) == 0  # a known prediction id is a duplicate
    flt = CandidateFilter("m", "1", np.datetime64("2026-03-01T00:00", "us"), np.datetime64("2026-03-02T00:00", "us"))
    assert [(r.item_id, round(r.score, 4)) for r in store.top_k(flt, "margin", 2)] == [("x", 0.0), ("z", 0.4)]
    assert store.embedding_dim("m", "1") == 2 and store.embedding_dim("m", "9") is None
    cands = store.candidates(flt, limit=2)
    assert cands.item_ids.tolist() == ["x", "z"] and cands.embeddings is not None


def test_selections_handoffs_and_uris(store):
    sel = Selection("b1", "margin", "m", "1", T0, (SelectedItem("x", "https://a/x.png", 0.0, 0),
                                                  SelectedItem("y", "https://a/y.png", 0.1, 1)))
    store.record_selection(sel)
    assert store.is_selected(["x", "q"]).tolist() == [True, False]
    assert store.selection_uris(["y", "q"]) == {"y": "https://a/y.png"}
    assert [s.batch_id for s in store.pending_handoffs()] == ["b1"]
    assert store.awaiting_labels() == 0  # recorded, not yet handed off
    store.mark_handed_off("b1")
    assert store.pending_handoffs() == [] and store.awaiting_labels() == 2


def test_labels_are_recorded_once_and_the_latest_answer_wins(store):
    sel = Selection("b1", "margin", "m", "1", T0, (SelectedItem("x", "u/x", 0.0, 0), SelectedItem("y", "u/y", 0.0, 1)))
    store.record_selection(sel)
    store.mark_handed_off("b1")
    first = [Label("x", "cat", "e1.csv", "sha1", T0)]
    assert store.add_labels(first) == 1
    assert store.add_labels(first) == 0  # the same export again
    cumulative = [Label("x", "cat", "e2.csv", "sha2", T0), Label("y", "dog", "e2.csv", "sha2", T0)]
    assert store.add_labels(cumulative) == 1  # only y is new; x's label is current already
    assert store.count_labels() == 2 and store.awaiting_labels() == 0
    time.sleep(0.01)
    assert store.add_labels([Label("x", "dog", "e3.csv", "sha3", T0 + timedelta(hours=1))]) == 1  # relabelled
    assert [(lb.item_id, lb.label) for lb in store.list_labels()] == [("x", "dog"), ("y", "dog")]
    assert store.count_labels() == 2


def test_model_versions_serving_and_retired(store):
    assert store.serving_version("m") is None
    with pytest.raises(NotFoundError):
        store.get_model_version("m", "1")
    one = ModelVersion("m", "1", ("a", "b"), {"accuracy": 0.5}, "azureml:m:1", ModelStatus.SERVING, T0, 0)
    store.upsert_model_version(one)
    assert store.serving_version("m") == one
    time.sleep(0.01)
    two = ModelVersion("m", "2", ("a", "b"), {"accuracy": 0.7}, "azureml:m:2", ModelStatus.CANDIDATE,
                       T0 + timedelta(hours=1), 30)
    store.upsert_model_version(two)
    assert store.serving_version("m").version == "1"
    time.sleep(0.01)
    store.upsert_model_version(ModelVersion("m", "2", ("a", "b"), {"accuracy": 0.7}, "azureml:m:2",
                                            ModelStatus.SERVING, T0 + timedelta(hours=1), 30))
    serving = store.serving_version("m")
    assert (serving.version, serving.trained_on_labels, serving.metrics) == ("2", 30, {"accuracy": 0.7})
    assert [(v.version, v.status) for v in store.list_model_versions("m")] == [
        ("1", ModelStatus.RETIRED), ("2", ModelStatus.SERVING)]
    assert store.get_model_version("m", "1").status is ModelStatus.RETIRED
