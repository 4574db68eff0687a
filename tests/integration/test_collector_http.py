"""The collector's functions as the host sees them: indexed app, real azure.functions objects."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
import textwrap

import azure.functions as func
import pytest

from function_app import build_app
from functions.scoring_collector import handlers, wiring
from shared.core.records import ModelStatus, ModelVersion
from shared.settings import get_settings, load_settings

CLASSES = ["cat", "dog", "eel"]
ITEM_ROOT = "file:///nowhere/"  # the embedded object store's folder, set by the ``embedded`` fixture


def record(i: int = 0, **over: object) -> dict[str, object]:
    r: dict[str, object] = {
        "item_id": f"img-{i}", "item_uri": f"{ITEM_ROOT}items/img-{i}.png", "model_name": "m",
        "model_version": "1", "class_names": CLASSES, "probabilities": [0.7, 0.2, 0.1],
        "predicted_label": "cat", "scored_at": "2026-03-01T10:00:00Z",
    }
    r.update(over)
    return r


def request(body: object, *, content_type: str | None = "application/json", raw: bytes | None = None,
            headers: dict[str, str] | None = None, route: str = "predictions", method: str = "POST",
            ) -> func.HttpRequest:
    data = raw if raw is not None else json.dumps(body).encode()
    hdrs = {"content-type": content_type} if content_type else {}
    hdrs.update(headers or {})
    return func.HttpRequest(method=method, url=f"http://localhost/api/{route}", headers=hdrs, body=data)


@pytest.fixture(scope="module")
def functions():
    """The user functions of the indexed app (a fresh app object: get_functions() once per app)."""
    app = build_app(load_settings(stages="scoring_collector"))
    return {f.get_function_name(): f.get_user_function() for f in app.get_functions()}


@pytest.fixture
def embedded(tmp_path, monkeypatch):
    """The real wiring on the embedded backend (DuckDB + local folder under a temp AL_DATA_DIR)."""
    monkeypatch.setenv("AL_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("AL_MAX_ITEM_BYTES", "64")
    monkeypatch.setenv("AL_MAX_BODY_BYTES", "65536")
    monkeypatch.setitem(globals(), "ITEM_ROOT", (tmp_path / "blobs").resolve().as_uri() + "/")
    get_settings.cache_clear()
    wiring.collector.cache_clear()
    yield wiring.collector()
    wiring.collector.cache_clear()
    get_settings.cache_clear()


def post(functions, req: func.HttpRequest) -> tuple[int, dict]:
    resp = functions["post_predictions"](req)
    return resp.status_code, json.loads(resp.get_body())


def problems(functions, body: object) -> list[tuple[int | None, str, str]]:
    status, answer = post(functions, request(body))
    assert status == 400, answer
    return [(p["index"], p["field"], p["reason"]) for p in answer["problems"]]


def nothing_stored(col: wiring.Collector) -> bool:
    objects = col.ingest._objects
    return (col.counts.counts_by_version() == [] and objects.list(col.settings.landing_container) == []
            and objects.list(col.settings.items_container) == [])


def test_the_app_indexes_the_collector_functions_and_bindings():
    code = textwrap.dedent("""
        import json, os
        os.environ["AL_STAGES"] = "scoring_collector"
        import function_app
        out = {}
        for f in function_app.app.get_functions():
            out[f.get_function_name()] = json.loads(f.get_function_json())["bindings"]
        print(json.dumps(out))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    fns = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(fns) == {"post_predictions", "prediction_stats", "reingest_predictions", "reingest_timer"}
    trig = {name: next(b for b in binds if b["direction"] == "IN") for name, binds in fns.items()}
    assert trig["post_predictions"]["type"] == "httpTrigger"
    assert (trig["post_predictions"]["route"], trig["post_predictions"]["methods"]) == ("predictions", ["POST"])
    assert trig["post_predictions"]["authLevel"] == "FUNCTION"
    assert (trig["prediction_stats"]["route"], trig["prediction_stats"]["authLevel"]) == ("predictions/stats", "ADMIN")
    assert trig["reingest_predictions"]["authLevel"] == "ADMIN"
    assert trig["reingest_timer"]["type"] == "timerTrigger"
    assert trig["reingest_timer"]["schedule"] == "0 */5 * * * *"


def test_accepts_a_batch_with_counts_and_lands_it(functions, embedded):
    status, answer = post(functions, request([record(0), record(1)]))
    assert status == 202, answer
    assert (answer["accepted"], answer["duplicates"], answer["ingested"]) == (2, 0, True)
    landing = embedded.ingest._objects.list("landing")
    assert f"ingested/{answer['batch_id']}.jsonl" in landing
    lines = embedded.ingest._objects.get("landing", f"ingested/{answer['batch_id']}.jsonl").splitlines()
    assert [json.loads(x)["item_id"] for x in lines] == ["img-0", "img-1"]


def test_the_same_batch_twice_adds_no_rows(functions, embedded):
    body = [record(0), record(1)]
    assert post(functions, request(body))[1]["accepted"] == 2
    status, again = post(functions, request(body))
    assert status == 202 and (again["accepted"], again["duplicates"]) == (0, 2)
    overlapping = post(functions, request([record(1), record(2)]))[1]
    assert (overlapping["accepted"], overlapping["duplicates"]) == (1, 1)
    (count,) = embedded.counts.counts_by_version()
    assert (count.model_name, count.model_version, count.predictions) == ("m", "1", 3)


def test_registered_classes_are_used_when_a_record_has_none(functions, embedded):
    embedded.catalog.upsert_model_version(ModelVersion("m", "7", tuple(CLASSES), status=ModelStatus.SERVING))
    rec = record(0, model_version="7")
    del rec["class_names"]
    assert post(functions, request([rec]))[0] == 202
    rec["model_version"] = "8"
    assert problems(functions, [rec]) == [(0, "class_names", "model 'm' version '8' is not registered; send "
                                                             "class_names")]


def test_inline_items_are_content_addressed(functions, embedded):
    data = b"\x89PNG fake image bytes"
    b64 = base64.b64encode(data).decode()
    body = [record(0, item_uri=None, item_base64=b64), record(1, item_uri=None, item_base64=b64)]
    assert post(functions, request(body))[0] == 202
    name = f"sha256/{hashlib.sha256(data).hexdigest()}"
    assert embedded.ingest._objects.list("items") == [name]
    assert embedded.ingest._objects.get("items", name) == data


# --- bad input: each with its own test, nothing stored -------------------------------------------

def test_malformed_json(functions, embedded):
    status, answer = post(functions, request(None, raw=b'[{"item_id": "a",'))
    assert status == 400 and "malformed JSON" in answer["error"] and "line 1" in answer["error"]
    assert nothing_stored(embedded)


def test_not_json_is_415(functions, embedded):
    status, answer = post(functions, request(None, raw=b"item_id,label\na,b\n", content_type="text/csv"))
    assert status == 415 and "application/json" in answer["error"]
    assert post(functions, request([record()], content_type=None))[0] == 415
    assert post(functions, request([record()], content_type="application/cloudevents+json"))[0] == 202


def test_wrong_types(functions, embedded):
    got = problems(functions, [record(0), record(1, probabilities="high", item_id=5)])
    assert {(w, f) for w, f, _ in got} >= {(1, "probabilities"), (1, "item_id")}
    assert nothing_stored(embedded)


def test_nan_and_infinity(functions, embedded):
    raw = json.dumps([record(0), record(1, probabilities=[0.5, 0.5, 0.0])]).replace("0.0]", "NaN]").encode()
    status, answer = post(functions, request(None, raw=raw))
    assert status == 400 and answer["problems"][0]["index"] == 1 and "finite" in answer["problems"][0]["reason"]
    raw = json.dumps([record(0, probabilities=[1.0, 0.0, 0.0])]).replace("1.0,", "Infinity,").encode()
    assert post(functions, request(None, raw=raw))[0] == 400
    assert nothing_stored(embedded)


def test_negative_probability(functions, embedded):
    assert (0, "probabilities", "values must not be negative") in problems(
        functions, [record(0, probabilities=[1.1, -0.1, 0.0])])


def test_probabilities_not_summing_to_one(functions, embedded):
    got = problems(functions, [record(0, probabilities=[0.5, 0.2, 0.1])])
    assert got[0][:2] == (0, "probabilities") and "sum to 0.8" in got[0][2]


def test_wrong_number_of_probabilities(functions, embedded):
    assert (0, "probabilities", "2 probabilities for 3 classes") in problems(
        functions, [record(0, probabilities=[0.5, 0.5])])


def test_label_outside_the_classes(functions, embedded):
    assert (0, "predicted_label", "'fox' is not one of the model's classes") in problems(
        functions, [record(0, predicted_label="fox")])


def test_duplicate_ids_in_a_batch(functions, embedded):
    got = problems(functions, [record(0, prediction_id="p1"), record(1, prediction_id="p1")])
    assert got == [(1, "prediction_id", "duplicate of record 0 in this batch")]
    assert nothing_stored(embedded)


def test_every_record_problem_is_listed(functions, embedded):
    got = problems(functions, [record(0), record(1, predicted_label="fox"), record(2, probabilities=[1, 1, 1])])
    assert {w for w, _, _ in got} == {1, 2}


def test_oversize_body_by_content_length_and_by_size(functions, embedded):
    status, answer = post(functions, request([record()], headers={"content-length": "70000"}))
    assert status == 413 and "65536" in answer["error"]
    big = json.dumps([record(i) for i in range(300)]).encode()
    assert len(big) > 65536
    assert post(functions, request(None, raw=big))[0] == 413
    assert nothing_stored(embedded)


def test_oversize_item(functions, embedded):
    b64 = base64.b64encode(b"x" * 65).decode()
    assert (0, "item_base64", "65 bytes, the limit is 64") in problems(
        functions, [record(0, item_uri=None, item_base64=b64)])
    assert nothing_stored(embedded)


def test_bad_base64(functions, embedded):
    assert (0, "item_base64", "not valid base64") in problems(
        functions, [record(0, item_uri=None, item_base64="not base64!")])


@pytest.mark.parametrize("item_id", ["../etc/passwd", "a/b", "a\\b", "x..y", "a" * 257])
def test_unsafe_item_ids(functions, embedded, item_id):
    got = problems(functions, [record(0, item_id=item_id)])
    assert got and all(w == 0 and f == "item_id" for w, f, _ in got), got
    assert nothing_stored(embedded)


def test_scored_at_far_in_the_future(functions, embedded):
    got = problems(functions, [record(0), record(1, scored_at="2999-01-01T00:00:00Z")])
    assert len(got) == 1 and got[0][:2] == (1, "scored_at") and "in the future" in got[0][2]
    assert nothing_stored(embedded)


def test_too_many_records(functions, embedded, monkeypatch):
    monkeypatch.setenv("AL_MAX_RECORDS", "2")
    get_settings.cache_clear()
    wiring.collector.cache_clear()
    got = problems(functions, [record(i) for i in range(3)])
    assert got == [(None, "records", "3 records, the limit is 2")]


# --- hostile input (issue 13): each refused with a precise reason, nothing stored -------------------

@pytest.mark.parametrize(("field", "values", "needle"), [
    ("probabilities", [True, False, False], "the first at [0] is a boolean (true)"),
    ("probabilities", ["0.7", "0.2", "0.1"], 'the first at [0] is a string ("0.7")'),
    ("embedding", [True, False], "the first at [0] is a boolean (true)"),
    ("embedding", ["0.5", "0.5"], 'the first at [0] is a string ("0.5")'),
])
def test_booleans_and_numeric_strings_are_not_numbers(functions, embedded, field, values, needle):
    got = problems(functions, [record(0), record(1, **{field: values})])
    assert len(got) == 1 and got[0][:2] == (1, field) and "JSON numbers" in got[0][2] and needle in got[0][2], got
    assert nothing_stored(embedded)


def test_a_huge_embedding_is_refused(functions, embedded, monkeypatch):
    monkeypatch.setenv("AL_MAX_BODY_BYTES", str(8 * 1024 * 1024))
    get_settings.cache_clear()
    wiring.collector.cache_clear()
    col = wiring.collector()
    got = problems(functions, [record(0, embedding=[0.5] * 200_000)])
    assert got == [(0, "embedding", "200000 values, the limit is 4096 (AL_MAX_EMBEDDING_DIM)")]
    assert nothing_stored(col)


def test_embeddings_keep_one_length_per_model_version_across_batches(functions, embedded):
    assert post(functions, request([record(0, embedding=[0.1, 0.2, 0.3])]))[0] == 202
    got = problems(functions, [record(1, embedding=[0.1, 0.2, 0.3]), record(2, embedding=[0.1, 0.2])])
    assert got == [(1, "embedding", "2 values, but model 'm' version '1' has embeddings of 3 (in the store); "
                                    "one length per model version")]
    embedded.collect._dims.clear()  # a fresh process: the length comes from the store
    assert problems(functions, [record(3, embedding=[0.5] * 4)])[0][:2] == (0, "embedding")
    assert post(functions, request([record(4, model_version="2", embedding=[0.5] * 4)]))[0] == 202
    assert {(c.model_version, c.predictions) for c in embedded.counts.counts_by_version()} == {("1", 1), ("2", 1)}


@pytest.mark.parametrize("uri", [
    "file:///etc/passwd", "http://169.254.169.254/metadata/instance?api-version=2021-02-01",
    "ftp://files.example/img.png", "http://files.example/img.png", "https://files.example/img.png",
    "file:///tmp/../etc/passwd", "relative/img.png",
])
def test_untrusted_item_uris_are_refused(functions, embedded, uri):
    got = problems(functions, [record(0), record(1, item_uri=uri)])
    assert len(got) == 1 and got[0][:2] == (1, "item_uri") and "item URIs must be under file://" in got[0][2], got
    assert nothing_stored(embedded)


def test_item_uris_in_azure_are_https_on_the_allowed_accounts(tmp_path):
    """The wiring's policy in Azure: AL_ALLOWED_ITEM_HOSTS over https, plus the store's own endpoint."""
    from azure.storage.blob import BlobServiceClient

    from shared.core.item_uris import item_uri_problem

    settings = load_settings(backend="azure", adx_cluster_uri="https://c.westeurope.kusto.windows.net",
                             storage_account_url="https://own.blob.core.windows.net",
                             allowed_item_hosts="other.blob.core.windows.net")
    policy = wiring.build_collector(settings, credential=object(), ingest_client=object(), query_client=object(),
                                    blob_service=BlobServiceClient(settings.storage_account_url)).collect.item_uris
    assert item_uri_problem("https://other.blob.core.windows.net/items/a.png", policy) is None
    assert item_uri_problem("https://own.blob.core.windows.net/items/a.png", policy) is None
    for bad in ("http://other.blob.core.windows.net/items/a.png", "https://third.blob.core.windows.net/i/a.png",
                "file:///etc/passwd", f"{(tmp_path / 'x').as_uri()}"):
        assert item_uri_problem(bad, policy), bad


@pytest.mark.parametrize("when", ["0001-01-01T00:00:00Z", "1970-01-01T00:00:00Z", "1999-12-31T23:59:59+00:00"])
def test_implausibly_old_scored_at(functions, embedded, when):
    got = problems(functions, [record(0), record(1, scored_at=when)])
    assert len(got) == 1 and got[0][:2] == (1, "scored_at") and "AL_MIN_SCORED_AT" in got[0][2], got
    assert nothing_stored(embedded)


# --- admin routes and the timer -----------------------------------------------------------------

class FailingOnce:
    """An ingestor that fails until ``heal()`` (ADX down), wrapping the real one."""

    def __init__(self, inner) -> None:
        self.inner, self.down = inner, True

    def ingest(self, batch_id: str, jsonl: bytes):
        if self.down:
            raise ConnectionError("ADX unreachable")
        return self.inner.ingest(batch_id, jsonl)


def test_failed_ingestion_is_landed_then_reingested_by_admin_and_timer(functions, embedded):
    flaky = FailingOnce(embedded.ingest._ingestor)
    embedded.ingest._ingestor = flaky
    embedded.ingest._attempts = 1
    status, answer = post(functions, request([record(0), record(1)]))
    assert status == 202 and answer["ingested"] is False and answer["accepted"] == 2  # landed, durable
    stats = json.loads(functions["prediction_stats"](request(None, raw=b"", method="GET", route="predictions/stats"))
                       .get_body())
    assert stats["landing_backlog"] == 1 and stats["models"] == [] and stats["last_ingestion"] is None

    functions["reingest_timer"](TimerRequest())  # still down: stays pending
    assert embedded.ingest.backlog() == 1
    flaky.down = False
    functions["reingest_timer"](TimerRequest())
    assert embedded.ingest.backlog() == 1  # too young for the timer: the request may still be ingesting it
    resp = functions["reingest_predictions"](request(None, raw=b"", route="predictions/reingest"))
    assert resp.status_code == 200 and json.loads(resp.get_body())["ingested"] == [answer["batch_id"]]
    stats = json.loads(functions["prediction_stats"](request(None, raw=b"", method="GET", route="predictions/stats"))
                       .get_body())
    assert stats["landing_backlog"] == 0 and stats["last_ingestion"] is not None
    assert [(m["model_version"], m["predictions"]) for m in stats["models"]] == [("1", 2)]


class TimerRequest(func.TimerRequest):
    """What the host passes a timer function."""

    @property
    def past_due(self) -> bool:
        return False


def test_an_unreachable_store_is_a_503_with_retry_after_and_nothing_is_stored(tmp_path):
    """The classes of an unseen model version come from the store; unreachable, nothing can be checked,
    so nothing is taken: 503 + Retry-After, which the monitoring client honours (it keeps the records)."""
    from shared.backends import Backend

    class Down:
        def get_model_version(self, name, version):
            raise ConnectionError("ADX is unreachable")

    settings = load_settings(data_dir=tmp_path)
    col = wiring.build_collector(settings, store=Down())
    record = {"item_id": "a", "item_uri": "https://x/a.png", "model_name": "m", "model_version": "9",
              "probabilities": [0.4, 0.6], "predicted_label": "b", "scored_at": "2026-03-01T10:00:00Z"}
    req = func.HttpRequest(method="POST", url="/api/predictions", headers={"content-type": "application/json"},
                           body=json.dumps([record]).encode())
    resp = handlers.post_predictions(req, col)
    assert resp.status_code == 503 and resp.headers["Retry-After"] == "30"
    assert "m:9" in json.loads(resp.get_body())["error"]
    assert Backend(settings).objects.list("landing") == []
