"""The label_export_trigger app as the host sees it: indexed functions and bindings, the blob
trigger fed real ``azure.functions.blob.InputStream`` objects, the admin HTTP functions, and the
quarantine, report and retrain message in a real Azurite."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import textwrap
import uuid
from datetime import UTC, datetime

import azure.functions as func
import pytest
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueClient

from function_app import build_app
from functions.label_export_trigger import wiring
from shared.adapters.queues import build_queue_client
from shared.backends import Backend
from shared.core.exports import azureml_url, datastore_url, write_coco_export, write_csv_export, write_jsonl_export
from shared.core.naming import labeling_name
from shared.core.records import SelectedItem, Selection
from shared.ports import RetrainRequest
from shared.settings import load_settings
from tests.support.credentials import StaticTokenCredential
from tests.support.faults import Flaky


def test_the_app_indexes_the_label_functions_with_their_bindings():
    code = textwrap.dedent("""
        import json, os
        os.environ["AL_STAGES"] = "label_export_trigger"
        os.environ["AL_EXPORTS_CONTAINER"] = "aml-exports"
        os.environ["AL_EXPORTS_PREFIX"] = "Labeling/export/"
        import function_app
        print(json.dumps({f.get_function_name(): [json.loads(b) for b in f.get_raw_bindings()]
                          for f in function_app.app.get_functions()}))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    functions = json.loads(out.stdout.strip().splitlines()[-1])
    assert sorted(functions) == ["labels_export", "labels_replay", "labels_stats", "labels_sync", "labels_sync_now",
                                 "labels_webhook"]
    (blob,) = functions["labels_export"]
    assert (blob["type"], blob["direction"], blob["path"], blob["connection"], blob["source"]) == (
        "blobTrigger", "IN", "aml-exports/Labeling/export/{name}", "AL_EXPORTS_STORAGE", "EventGrid")
    (timer,) = functions["labels_sync"]
    assert (timer["type"], timer["schedule"]) == ("timerTrigger", "%AL_LABEL_SYNC_SCHEDULE%")
    for name, route, method, auth in (("labels_replay", "labels/replay", "POST", "ADMIN"),
                                      ("labels_stats", "labels/stats", "GET", "ADMIN"),
                                      ("labels_sync_now", "labels/sync", "POST", "ADMIN"),
                                      ("labels_webhook", "labels/webhook", "POST", "FUNCTION")):
        trigger = next(b for b in functions[name] if b["type"] == "httpTrigger")
        assert (trigger["route"], trigger["methods"], trigger["authLevel"]) == (route, [method], auth)


@pytest.fixture
def app(azurite, adx):
    """The stage's functions from a freshly indexed app on the Azure backend: Azurite (unique
    containers) for exports, quarantine and the retrain queue; ADX (the stand-in) for selections and
    labels, as the selector app recorded them."""
    from azure.kusto.data import KustoClient, KustoConnectionStringBuilder

    tag = uuid.uuid4().hex[:8]
    settings = load_settings(
        backend="azure", stages="label_export_trigger", storage_connection_string=azurite.connection_string,
        adx_cluster_uri=adx.url, aml_subscription_id="s", aml_resource_group="r", aml_workspace="w",
        label_studio_url="http://127.0.0.1:9", label_studio_token="unused", label_studio_project_id=1,
        exports_container=f"exports-{tag}", quarantine_container=f"quarantine-{tag}",
        retrain_queue=f"retrain-{tag}", retrain_state_container=f"state-{tag}",
        class_names="cat,dog", retrain_threshold=3, model_name="m")
    admin = KustoClient(KustoConnectionStringBuilder.with_no_authentication(adx.url))
    for table in ("Selections", "Labels", "ModelVersions"):
        admin.execute_mgmt(adx.database, f".clear table {table} data")
    ports = Backend(settings, credential=StaticTokenCredential())
    store = ports.store
    # the items as the collector stored them (blobs of the loop's account), handed off by the selector
    items = tuple(SelectedItem(f"i{n}", ports.objects.uri("items", f"i{n}.png"), 0.0, n) for n in range(8))
    store.record_selection(Selection("b1", "margin", "m", "1", datetime(2026, 3, 1, tzinfo=UTC), items))
    store.mark_handed_off("b1")  # the items reached labelers
    wiring.use(wiring.build_intake(settings, ports=ports))
    functions = {f.get_function_name(): f.get_user_function() for f in build_app(settings).get_functions()}
    blobs = BlobServiceClient.from_connection_string(azurite.connection_string)
    queue = build_queue_client(settings.retrain_queue, connection_string=azurite.connection_string)
    yield functions, settings, blobs, queue, store
    wiring.use(None)
    admin.close()


def url(item_id: str) -> str:
    return datastore_url("workspaceblobstore", "labeling-input/" + labeling_name("b1", item_id, ".png"))


def deliver(functions, blobs: BlobServiceClient, container: str, name: str, data: bytes) -> None:
    """Upload the export, then call the trigger the way the host does (an InputStream of it)."""
    client = blobs.get_container_client(container)
    if not client.exists():
        client.create_container()
    client.upload_blob(name, data, overwrite=True)
    stream = func.blob.InputStream(data=data, name=f"{container}/{name}", length=len(data),
                                   uri=client.get_blob_client(name).url)
    assert functions["labels_export"](stream) is None  # finishes cleanly: nothing for the host to retry


def http(functions, name: str, method: str, body: object | None = None) -> tuple[int, dict]:
    raw = b"" if body is None else body if isinstance(body, bytes) else json.dumps(body).encode()
    req = func.HttpRequest(method=method, url=f"/api/labels/{name.split('_')[1]}", headers={}, body=raw)
    resp = functions[name](req)
    return resp.status_code, json.loads(resp.get_body())


def messages(queue: QueueClient) -> list[RetrainRequest]:
    return [RetrainRequest.from_json(m.content) for m in queue.receive_messages(messages_per_page=32)]


def test_exports_in_each_format_are_recorded_once_and_one_retrain_message_is_queued(app, azurite):
    functions, settings, blobs, queue, store = app
    exports = settings.exports_container
    deliver(functions, blobs, exports, "Labeling/export/csv/a.csv", write_csv_export([(url("i0"), "cat")]))
    deliver(functions, blobs, exports, "Labeling/export/coco/b.json", write_coco_export([(url("i1"), "dog")]))
    assert store.count_labels() == 2 and messages(queue) == []
    jsonl = write_jsonl_export([(azureml_url("workspaceblobstore", "labeling-input/b1/i2.png", subscription="s",
                                             resource_group="r", workspace="w"), "dog")])
    deliver(functions, blobs, exports, "Labeling/export/dataset/c/labeleddatapoints_1.jsonl", jsonl)
    # Idempotency: the same export again, and under a new name, adds nothing and asks nothing.
    deliver(functions, blobs, exports, "Labeling/export/dataset/c/labeleddatapoints_1.jsonl", jsonl)
    deliver(functions, blobs, exports, "Labeling/export/dataset/copy.jsonl", jsonl)
    assert store.count_labels() == 3
    raw = QueueClient.from_connection_string(azurite.connection_string, settings.retrain_queue)
    (peeked,) = raw.peek_messages(max_messages=32)
    assert json.loads(base64.b64decode(peeked.content))["watermark"] == 3  # base64 JSON on the wire
    (req,) = messages(queue)
    assert (req.model_name, req.watermark, req.pending) == ("m", 3, 3)
    assert req.export_id == "Labeling/export/dataset/c/labeleddatapoints_1.jsonl"
    status, stats = http(functions, "labels_stats", "GET")
    assert status == 200 and stats["labels_per_class"] == {"cat": 1, "dog": 2} and stats["pending"] == 3
    assert stats["last_retrain_watermark"] == 3 and stats["quarantined_exports"] == []


def test_row_problems_are_reported_next_to_the_export(app):
    functions, settings, blobs, _, store = app
    data = write_csv_export([(url("i0"), "cat"), (url("i1"), "bird"), (url("nobody"), "cat")])
    deliver(functions, blobs, settings.exports_container, "Labeling/export/csv/p.csv", data)
    assert store.count_labels() == 1
    report = json.loads(blobs.get_blob_client(settings.exports_container,
                                              "Labeling/export/csv/p.csv.report.json").download_blob().readall())
    assert [(p["row"], p["field"]) for p in report["problems"]] == [(2, "Label"), (3, "Url")]
    assert "not a file the loop handed out" in report["problems"][1]["reason"]
    # The report lands in the watched container; its own trigger is a no-op.
    deliver(functions, blobs, settings.exports_container, "Labeling/export/csv/p.csv.report.json",
            json.dumps(report).encode())
    assert store.count_labels() == 1


def test_an_unparseable_export_is_quarantined_with_its_report_and_replayed_after_a_fix(app):
    functions, settings, blobs, _, store = app
    exports, quarantine = settings.exports_container, settings.quarantine_container
    deliver(functions, blobs, exports, "broken.json", b'{"images": "nope"}')
    assert not blobs.get_blob_client(exports, "broken.json").exists()
    assert blobs.get_blob_client(quarantine, "broken.json").download_blob().readall() == b'{"images": "nope"}'
    report = json.loads(blobs.get_blob_client(quarantine, "broken.json.report.json").download_blob().readall())
    assert report["status"] == "quarantined" and "not a COCO file" in report["reason"]
    assert http(functions, "labels_stats", "GET")[1]["quarantined_exports"] == ["broken.json"]
    # Replay before the fix: still quarantined (422); after: recorded and moved back.
    assert http(functions, "labels_replay", "POST", {"export": "broken.json"})[0] == 422
    blobs.get_blob_client(quarantine, "broken.json").upload_blob(
        write_coco_export([(url("i4"), "cat")]), overwrite=True)
    status, body = http(functions, "labels_replay", "POST", {"export": "broken.json"})
    assert (status, body["status"], body["recorded"]) == (200, "recorded", 1)
    assert store.count_labels() == 1 and blobs.get_blob_client(exports, "broken.json").exists()
    assert list(blobs.get_container_client(quarantine).list_blob_names()) == []


@pytest.mark.parametrize("name", ["../../etc/x.csv", "Labeling/export/../../x.csv", "a//b.csv", "a\\b.csv"])
def test_case_7_a_blob_name_with_path_traversal_is_refused_before_anything_is_recorded(app, name):
    """Issue 22, case 7: the name is judged first; the trigger returns normally (no exception for the
    host to retry), records nothing, copies nothing, and a report under a name of its own says why."""
    functions, settings, blobs, _, store = app
    data = write_csv_export([(url("i0"), "cat")])
    assert functions["labels_export"](func.blob.InputStream(
        data=data, name=f"{settings.exports_container}/{name}", length=len(data), uri=f"https://x/{name}")) is None
    assert store.count_labels() == 0
    reports = list(blobs.get_container_client(settings.quarantine_container).list_blob_names())
    assert len(reports) == 1 and reports[0].startswith("invalid-names/"), reports
    body = json.loads(blobs.get_blob_client(settings.quarantine_container, reports[0]).download_blob().readall())
    assert body["status"] == "refused" and body["reason"]


@pytest.mark.parametrize("name", ["photo.png", "README.txt", "ds/MLTable", "notes", ".hidden.csv"])
def test_a_blob_that_is_not_an_export_is_never_moved_or_deleted(app, name):
    """Issue 20, item 4: with the trigger on a whole container, a file that is not an export (by its
    name) is left where it is, not quarantined and deleted."""
    functions, settings, blobs, _, store = app
    deliver(functions, blobs, settings.exports_container, name, b"\x89PNG not an export")
    assert blobs.get_blob_client(settings.exports_container, name).exists()
    quarantine = blobs.get_container_client(settings.quarantine_container)
    assert not quarantine.exists() or list(quarantine.list_blob_names()) == []
    assert store.count_labels() == 0


@pytest.mark.parametrize(("body", "status", "field"), [
    (b"not json", 400, "body"), ({"source": "quarantine"}, 400, "export"),
    ({"export": "x.csv", "source": "elsewhere"}, 400, "source"), ({"export": "x.csv", "extra": 1}, 400, "extra"),
    ({"export": "missing.csv"}, 404, None), ({"export": "x.csv.report.json"}, 400, "export"),
])
def test_replay_refuses_bad_requests_clearly(app, body, status, field):
    functions = app[0]
    got, answer = http(functions, "labels_replay", "POST", body)
    assert got == status and answer["error"]
    if field:
        assert field in [p["field"] for p in answer["problems"]]


def _request(watermark: int) -> RetrainRequest:
    return RetrainRequest("m", watermark, watermark, "e.csv", "0" * 64, "2026-03-01T00:00:00+00:00")


def test_racing_senders_queue_one_message_and_a_failed_send_gives_the_watermark_back(azurite, monkeypatch):
    from shared.adapters.queues import QueueRetrainRequests

    tag = uuid.uuid4().hex[:8]
    blobs = BlobServiceClient.from_connection_string(azurite.connection_string)
    queue = build_queue_client(f"race-{tag}", connection_string=azurite.connection_string)
    a, b = (QueueRetrainRequests(queue, blobs.get_container_client(f"race-{tag}")) for _ in range(2))
    stale_none = b._read("m")  # b read before a wrote: (None, None)
    assert a.request(_request(5))
    monkeypatch.setattr(b, "_read", lambda model: stale_none)
    assert not b.request(_request(5))  # create-only write loses to a's blob
    stale = a._read("m")
    assert a.request(_request(9))
    monkeypatch.setattr(b, "_read", lambda model: stale)
    assert not b.request(_request(12))  # ETag no longer matches
    monkeypatch.undo()
    assert [m.watermark for m in messages(queue)] == [5, 9] and b.last_watermark("m") == 9

    def down(*args, **kwargs):
        raise ConnectionError("queue unavailable")

    monkeypatch.setattr(queue, "send_message", down)
    with pytest.raises(ConnectionError):
        a.request(_request(20))
    assert a.last_watermark("m") == 9  # the next trigger will ask again


# --- the label stage never poisons an export (issue 13) ---------------------------------------------

def install(settings, store, objects, sleeps: list[float]) -> None:
    """An intake over the given (failing) store and object store, with a sleep that only records."""
    from shared.services.labels import ExportIntake, LabelService

    base = wiring.intake()
    labels = LabelService(store, model_name="m", class_names=lambda: ("cat", "dog"), retrain_threshold=3,
                          requests=base.labels.requests)
    wiring.use(ExportIntake(labels, objects, exports_container=settings.exports_container,
                            quarantine_container=settings.quarantine_container, sleep=sleeps.append))


def quarantine_report(blobs, settings, name: str) -> dict:
    client = blobs.get_blob_client(settings.quarantine_container, f"{name}.report.json")
    return json.loads(client.download_blob().readall())


def test_an_unexpected_store_error_quarantines_the_export_and_the_trigger_finishes(app):
    functions, settings, blobs, _, store = app
    sleeps: list[float] = []
    failing = Flaky(store, "add_labels", RuntimeError("table locked by a dead writer"), forever=True)
    install(settings, failing, wiring.intake()._objects, sleeps)
    data = write_csv_export([(url("i0"), "cat")])
    deliver(functions, blobs, settings.exports_container, "Labeling/export/csv/e.csv", data)  # returns None
    assert not blobs.get_blob_client(settings.exports_container, "Labeling/export/csv/e.csv").exists()
    assert blobs.get_blob_client(settings.quarantine_container,
                                 "Labeling/export/csv/e.csv").download_blob().readall() == data
    report = quarantine_report(blobs, settings, "Labeling/export/csv/e.csv")
    assert report["reason"] == "permanent error: RuntimeError: table locked by a dead writer"
    assert report["error"] == {"type": "RuntimeError", "message": "table locked by a dead writer",
                               "kind": "permanent", "retries": 0}
    assert failing.calls == 1 and sleeps == [] and store.count_labels() == 0


def test_a_storage_outage_is_retried_then_quarantined_as_transient(app):
    from azure.core.exceptions import ServiceResponseError

    functions, settings, blobs, _, store = app
    sleeps: list[float] = []
    down = Flaky(store, "handed_out", ServiceResponseError("Connection aborted"), forever=True)
    install(settings, down, wiring.intake()._objects, sleeps)
    deliver(functions, blobs, settings.exports_container, "t.csv", write_csv_export([(url("i0"), "cat")]))
    report = quarantine_report(blobs, settings, "t.csv")
    assert report["reason"] == "transient storage error, retried 2 times: ServiceResponseError: Connection aborted"
    assert report["error"]["kind"] == "transient" and down.calls == 3 and sleeps == [0.5, 1.0]


def test_a_blob_5xx_is_retried_and_the_export_recorded(app):
    from azure.core.exceptions import HttpResponseError

    from shared.adapters.blob_objects import BlobObjectStore

    functions, settings, blobs, _, store = app
    busy = HttpResponseError(message="Server Busy")
    busy.status_code = 503
    sleeps: list[float] = []
    objects = Flaky(BlobObjectStore(blobs), "delete", busy)  # the stale-report cleanup
    install(settings, store, objects, sleeps)
    deliver(functions, blobs, settings.exports_container, "ok.csv", write_csv_export([(url("i1"), "dog")]))
    assert store.count_labels() == 1 and sleeps == [0.5]
    assert blobs.get_blob_client(settings.exports_container, "ok.csv").exists()
    assert not blobs.get_container_client(settings.quarantine_container).exists() or not list(
        blobs.get_container_client(settings.quarantine_container).list_blob_names())
