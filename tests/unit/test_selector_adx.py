"""The ADX selection store, with the real azure-kusto-data client talking to a local HTTP server that
speaks the Kusto v2 REST query protocol (pytest-httpserver), and a fake at the ingest client boundary.

ADX itself cannot be reached here: the server answers canned rows; what is checked is what the store
sends (the shipped query text, unchanged, values only as request parameters) and how it reads the
answer. Every query text the store sent is also analysed by the Kusto language service.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from azure.kusto.data import KustoClient, KustoConnectionStringBuilder
from werkzeug import Request, Response

from shared.adapters.adx_store import AdxStore
from shared.core import kql
from shared.core.records import SelectedItem, Selection
from shared.core.selection import CandidateFilter
from shared.services.select import SelectService

T0 = np.datetime64("2026-03-01T00:00:00", "us")
FLT = CandidateFilter("m", "v'1; drop", T0, T0 + np.timedelta64(3600, "s"))
TYPES = {str: "string", float: "real", int: "long", bool: "bool", list: "dynamic", dict: "dynamic",
         type(None): "dynamic", datetime: "datetime"}


class LocalKusto:
    """Answers POST /v2/rest/query with the rows queued for the shipped query the request carries."""

    def __init__(self, httpserver) -> None:
        self.requests: list[dict] = []
        self.answers: dict[str, list[dict]] = {}
        httpserver.expect_request("/v2/rest/query", method="POST").respond_with_handler(self._handle)
        self.url = httpserver.url_for("/").rstrip("/")

    def _handle(self, request: Request) -> Response:
        body = request.get_json()
        body["properties"] = json.loads(body["properties"])
        self.requests.append(body)
        name = next(n for n in kql.query_names() if kql.load(n) == body["csl"])
        rows = self.answers.get(name, [])
        columns = list(rows[0]) if rows else ["ItemId"]
        table = {
            "FrameType": "DataTable", "TableId": 0, "TableKind": "PrimaryResult", "TableName": "PrimaryResult",
            "Columns": [{"ColumnName": c, "ColumnType": TYPES[type(rows[0][c])] if rows else "string"}
                        for c in columns],
            "Rows": [[_cell(r[c]) for c in columns] for r in rows],
        }
        frames = [{"FrameType": "DataSetHeader", "IsProgressive": False, "Version": "v2.0"}, table,
                  {"FrameType": "DataSetCompletion", "HasErrors": False, "Cancelled": False}]
        return Response(json.dumps(frames), content_type="application/json")

    def client(self) -> KustoClient:
        return KustoClient(KustoConnectionStringBuilder.with_no_authentication(self.url))


def _cell(value):
    return value.isoformat().replace("+00:00", "Z") if isinstance(value, datetime) else value


class FakeIngest:
    """The ingest client boundary: keeps what would have been streamed into ADX."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[dict], object]] = []

    def ingest_from_stream(self, descriptor, props) -> None:
        lines = descriptor.stream.getvalue().decode().splitlines()
        self.calls.append(([json.loads(line) for line in lines], props))


@pytest.fixture
def adx(httpserver):
    server = LocalKusto(httpserver)
    ingest = FakeIngest()
    return server, AdxStore(server.client(), database="al", ingest=ingest), ingest


def test_top_k_sends_the_shipped_query_with_values_only_as_parameters(adx, kusto):
    server, store, _ = adx
    server.answers["top_k_margin"] = [{"ItemId": "b", "Score": 0.01, "ItemUri": "u/b.png"},
                                      {"ItemId": "a", "Score": 0.02, "ItemUri": "u/a.png"}]
    got = store.top_k(FLT, "margin", 2)
    assert [(r.item_id, r.score, r.item_uri) for r in got] == [("b", 0.01, "u/b.png"), ("a", 0.02, "u/a.png")]
    [req] = server.requests
    assert req["db"] == "al" and req["csl"] == kql.load("top_k_margin")
    assert "drop" not in req["csl"]
    assert req["properties"]["Parameters"] == {
        "model_name": "m", "model_version": "v'1; drop", "k": "2",
        "window_start": "datetime(2026-03-01T00:00:00.000000Z)",
        "window_end": "datetime(2026-03-01T01:00:00.000000Z)",
    }
    assert kusto.analyze(req["csl"]) == []


def test_random_passes_its_seed(adx):
    server, store, _ = adx
    assert store.top_k(FLT, "random", 3, seed=42) == []
    assert server.requests[0]["csl"] == kql.load("top_k_random")
    assert server.requests[0]["properties"]["Parameters"]["seed"] == "42"


def test_candidates_read_dynamic_arrays(adx):
    server, store, _ = adx
    server.answers["candidates"] = [
        {"ItemId": "a", "ItemUri": "u/a", "Probabilities": [0.25, 0.75], "Embedding": [1.0, 0.0]},
        {"ItemId": "b", "ItemUri": "u/b", "Probabilities": [0.5, 0.5], "Embedding": [0.0, 1.0]},
    ]
    cands = store.candidates(FLT)
    assert cands.item_ids.tolist() == ["a", "b"]
    np.testing.assert_array_equal(cands.probabilities, np.array([[0.25, 0.75], [0.5, 0.5]], np.float32))
    np.testing.assert_array_equal(cands.embeddings, np.eye(2, dtype=np.float32))
    assert "k" not in server.requests[0]["properties"]["Parameters"]


def test_serving_version_and_a_missing_one(adx):
    server, store, _ = adx
    assert store.serving_version("m") is None
    server.answers["serving_version"] = [{
        "ModelName": "m", "Version": "7", "ClassNames": ["a", "b"], "Metrics": {"accuracy": 0.5},
        "ArtifactUri": "x", "Status": "serving", "CreatedAt": datetime(2026, 3, 1, tzinfo=UTC),
        "TrainedOnLabels": 10}]
    mv = store.serving_version("m")
    assert (mv.version, mv.class_names, mv.metrics["accuracy"], mv.created_at) == (
        "7", ("a", "b"), 0.5, datetime(2026, 3, 1, tzinfo=UTC))


def test_record_then_mark_handed_off_appends_to_selections(adx):
    server, store, ingest = adx
    sel = Selection("b1", "margin", "m", "v1", datetime(2026, 3, 1, 12, tzinfo=UTC),
                    (SelectedItem("x", "u/x.png", 0.1, 0), SelectedItem("y", "u/y.png", 0.2, 1)))
    store.record_selection(sel)
    rows, props = ingest.calls[0]
    assert [r["ItemId"] for r in rows] == ["x", "y"] and not any(r["HandedOff"] for r in rows)
    assert rows[0]["SelectedAt"] == "2026-03-01T12:00:00Z"
    assert props.table == "Selections" and props.additional_tags == ["selection:b1"]

    server.answers["pending_handoffs"] = [
        {"BatchId": "b1", "Strategy": "margin", "ModelName": "m", "ModelVersion": "v1",
         "SelectedAt": datetime(2026, 3, 1, 12, tzinfo=UTC), "ItemId": i, "ItemUri": f"u/{i}.png",
         "Score": s, "Rank": n} for n, (i, s) in enumerate([("x", 0.1), ("y", 0.2)])]
    [pending] = store.pending_handoffs()
    assert pending == sel
    store.mark_handed_off("b1")
    rows, props = ingest.calls[1]
    assert [r["ItemId"] for r in rows] == ["x", "y"] and all(r["HandedOff"] for r in rows)
    assert props.additional_tags == ["handed-off:b1"]


def test_selected_items_use_a_dynamic_parameter(adx):
    server, store, _ = adx
    server.answers["selected_items"] = [{"ItemId": 'a"b', "ItemUri": "u"}]
    assert store.is_selected(['a"b', "c"]).tolist() == [True, False]
    assert server.requests[0]["properties"]["Parameters"] == {"item_ids": 'dynamic(["a\\"b", "c"])'}


def test_the_select_service_previews_through_the_adx_store(adx, tmp_path):
    from shared.adapters.local_objects import LocalFolderObjectStore

    server, store, _ = adx
    server.answers["serving_version"] = [{
        "ModelName": "m", "Version": "v1", "ClassNames": ["a", "b"], "Metrics": {}, "ArtifactUri": "",
        "Status": "serving", "CreatedAt": datetime(2026, 3, 1, tzinfo=UTC), "TrainedOnLabels": 0}]
    server.answers["top_k_entropy"] = [{"ItemId": "q", "Score": 0.69, "ItemUri": "u/q.png"}]
    service = SelectService(store, LocalFolderObjectStore(tmp_path), model_name="m", strategy="entropy",
                            batch_size=5, window=timedelta(hours=2))
    result = service.preview(now=datetime(2026, 3, 1, 2, tzinfo=UTC))
    assert [i.item_id for i in result.selection.items] == ["q"] and "only 1 candidates" in result.reason
    params = server.requests[-1]["properties"]["Parameters"]
    assert params["model_version"] == "v1" and params["k"] == "5"
    assert params["window_start"] == "datetime(2026-03-01T00:00:00.000000Z)"


def test_a_shortlist_uses_its_own_query_and_comes_back_sorted_by_item(adx):
    server, store, _ = adx
    server.answers["candidates_shortlist"] = [  # the query's order: most uncertain first
        {"ItemId": "z", "ItemUri": "u/z", "Probabilities": [0.5, 0.5], "Embedding": [0.0, 1.0]},
        {"ItemId": "a", "ItemUri": "u/a", "Probabilities": [0.4, 0.6], "Embedding": [1.0, 0.0]},
    ]
    cands = store.candidates(FLT, limit=2)
    assert server.requests[0]["csl"] == kql.load("candidates_shortlist")
    assert server.requests[0]["properties"]["Parameters"]["k"] == "2"
    assert cands.item_ids.tolist() == ["a", "z"] and cands.item_uris.tolist() == ["u/a", "u/z"]
