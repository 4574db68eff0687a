"""The label service and the export intake on the embedded adapters: validation per row,
recording once, reports, quarantine, replay, and one retrain request per watermark."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from shared.adapters.duckdb_store import DuckDBStore
from shared.adapters.local_objects import LocalFolderObjectStore
from shared.adapters.queues import InProcessRetrainRequests
from shared.core.exports import datastore_url, write_coco_export, write_csv_export, write_jsonl_export
from shared.core.naming import labeling_name
from shared.core.records import ModelStatus, ModelVersion, SelectedItem, Selection
from shared.errors import ConfigurationError, NotFoundError
from shared.ports import RetrainRequest
from shared.services.labels import ExportIntake, LabelService, retrain_due
from tests.support.faults import Flaky

CLASSES = ("cat", "dog")


def url(item_id: str, batch: str = "b1") -> str:
    return datastore_url("workspaceblobstore", "labeling-input/" + labeling_name(batch, item_id, ".png"))


@pytest.fixture
def loop(tmp_path):
    store = DuckDBStore(threads=1)
    items = tuple(SelectedItem(f"i{n}", f"file:///items/i{n}.png", 0.0, n) for n in range(10))
    store.record_selection(Selection("b1", "margin", "m", "1", datetime(2026, 3, 1, tzinfo=UTC), items))
    store.mark_handed_off("b1")  # the items reached labelers
    requests = InProcessRetrainRequests()
    labels = LabelService(store, model_name="m", class_names=lambda: CLASSES, retrain_threshold=3,
                          requests=requests)
    objects = LocalFolderObjectStore(tmp_path / "blobs")
    intake = ExportIntake(labels, objects, exports_container="exports", quarantine_container="quarantine")
    yield store, labels, requests, objects, intake
    store.close()


def test_each_kind_of_bad_row_is_reported_with_its_reason_and_good_rows_recorded(loop):
    store, labels, _, _, _ = loop
    data = write_csv_export([
        (url("i0"), "cat"), (url("i1"), "dog"),
        (url("i2"), "bird"),                          # 3: not a class
        (url("i3"), "cat"), (url("i3"), "dog"),       # 4, 5: same item, different labels
        (url("never"), "cat"),                        # 6: never selected
        ("s3://x/i4.png", "cat"),                     # 7: URL that maps to no item
        (url("i5"), "['cat', 'dog']"),                # 8: multi-label
        (url("i6"), "cat"), (url("i6"), "cat"),       # same answer twice: recorded once, no problem
    ]) + b"AmlDatastore://ws/b1/i7.png,\r\n"          # 11: empty label
    result = labels.ingest("e1.csv", data)
    assert result.recorded == 3 and result.already_known == 0
    reasons = {(p.where, p.field): p.reason for p in result.problems}
    assert list(reasons) == [(3, "Label"), (4, "Label"), (5, "Label"), (6, "Url"), (7, "Url"), (8, "Label"),
                             (11, "Label")]
    assert "'bird' is not one of the model's classes" in reasons[(3, "Label")]
    assert "different labels" in reasons[(4, "Label")] and "different labels" in reasons[(5, "Label")]
    assert "not a file the loop handed out" in reasons[(6, "Url")]
    assert "not an azureml://, AmlDatastore:// or https:// URL" in reasons[(7, "Url")]
    assert "multi-label" in reasons[(8, "Label")] and "empty label" in reasons[(11, "Label")]
    assert {(lb.item_id, lb.label) for lb in store.list_labels()} == {("i0", "cat"), ("i1", "dog"), ("i6", "cat")}


@pytest.mark.parametrize(("name", "writer"), [("e.csv", write_csv_export), ("e.json", write_coco_export),
                                              ("e.jsonl", write_jsonl_export), ("no-extension", write_coco_export)])
def test_every_format_records_once_even_when_renamed(loop, name, writer):
    store, labels, _, _, _ = loop
    data = writer([(url("i0"), "cat"), (url("i1"), "dog")])
    first = labels.ingest(name, data)
    assert (first.recorded, first.problems) == (2, ())
    assert labels.ingest(name, data).recorded == 0
    again = labels.ingest("renamed-" + name, data)
    assert (again.recorded, again.already_known) == (0, 2) and store.count_labels() == 2


def test_labeled_time_is_kept_when_the_export_has_one(loop):
    store, labels, _, _, _ = loop
    labels.ingest("t.csv", f"Url,Label,Labeled Time\n{url('i0')},cat,2026-02-03T04:05:06Z\n".encode())
    assert store.list_labels()[0].labeled_at == datetime(2026, 2, 3, 4, 5, 6, tzinfo=UTC)


def test_no_class_list_is_a_configuration_error_not_a_bad_export(loop):
    store, _, _, _, _ = loop
    service = LabelService(store, model_name="m", class_names=lambda: None, retrain_threshold=1)
    with pytest.raises(ConfigurationError, match="AL_CLASS_NAMES"):
        service.ingest("e.csv", write_csv_export([(url("i0"), "cat")]))


@pytest.mark.parametrize(("pending", "labels", "trained_on", "last", "due"), [
    (2, 2, 0, None, False),      # below the threshold
    (3, 3, 0, None, True),       # first request
    (4, 4, 0, 3, False),         # the same labels were asked for already
    (6, 6, 0, 3, True),          # threshold more since the last request (its candidate was rejected)
    (3, 6, 3, 3, True),          # the last request was served; enough new ones
    (2, 5, 3, 3, False),
])
def test_retrain_due(pending, labels, trained_on, last, due):
    assert retrain_due(pending=pending, labels=labels, trained_on=trained_on, last_watermark=last,
                       threshold=3) is due


def test_one_retrain_request_per_watermark(loop):
    store, labels, requests, _, _ = loop
    first = labels.ingest("a.csv", write_csv_export([(url("i0"), "cat"), (url("i1"), "cat")]))
    assert not first.retrain_requested and len(requests) == 0
    second = labels.ingest("b.csv", write_csv_export([(url("i2"), "dog")]))
    assert second.retrain_requested and second.watermark == 3 and len(requests) == 1
    # Re-delivered, renamed, or one more label: still the same request.
    assert not labels.ingest("b.csv", write_csv_export([(url("i2"), "dog")])).retrain_requested
    assert not labels.ingest("c.csv", write_csv_export([(url("i3"), "dog")])).retrain_requested
    assert len(requests) == 1
    req = requests.take()
    assert req is not None and (req.model_name, req.watermark, req.pending, req.export_id) == ("m", 3, 3, "b.csv")
    assert RetrainRequest.from_json(req.to_json()) == req
    # The model trained on those 4 labels is serving: 3 new labels ask again, at the new watermark.
    store.upsert_model_version(ModelVersion("m", "2", CLASSES, status=ModelStatus.SERVING, trained_on_labels=4))
    assert labels.pending() == 0
    result = labels.ingest("d.csv", write_csv_export([(url(f"i{n}"), "cat") for n in (4, 5, 6)]))
    assert result.retrain_requested and result.watermark == 7 and result.pending == 3
    assert labels.stats()["last_retrain_watermark"] == 7


def test_rows_problems_go_to_a_report_next_to_the_export(loop):
    _, _, _, objects, intake = loop
    data = write_csv_export([(url("i0"), "cat"), (url("i1"), "bird")])
    objects.put("exports", "Labeling/export/csv/p.csv", data)
    outcome = intake.process("exports", "Labeling/export/csv/p.csv", data)
    assert outcome.status == "recorded" and outcome.result.recorded == 1
    assert outcome.report == "exports/Labeling/export/csv/p.csv.report.json"
    report = json.loads(objects.get("exports", "Labeling/export/csv/p.csv.report.json"))
    assert report["problems"] == [{"row": 2, "field": "Label", "reason": "'bird' is not one of the model's classes"}]
    assert (report["status"], report["recorded"]) == ("recorded", 1)
    # The report itself lands in the watched container: the trigger skips it.
    assert intake.process("exports", outcome.report.split("/", 1)[1], b"{}").status == "skipped"


def test_unparseable_export_is_quarantined_with_its_report_then_replayed_after_a_fix(loop):
    store, _, _, objects, intake = loop
    objects.put("exports", "bad.csv", b"Image,Class\nx,y\n")
    outcome = intake.process("exports", "bad.csv", b"Image,Class\nx,y\n")
    assert outcome.status == "quarantined" and "lacks required columns" in outcome.reason
    assert not objects.exists("exports", "bad.csv")
    assert objects.get("quarantine", "bad.csv") == b"Image,Class\nx,y\n"
    report = json.loads(objects.get("quarantine", "bad.csv.report.json"))
    assert report["status"] == "quarantined" and report["problems"][0]["field"] == "header"
    assert intake.stats()["quarantined_exports"] == ["bad.csv"]
    assert intake.replay("bad.csv").status == "quarantined"  # still broken: stays
    fixed = write_csv_export([(url("i0"), "cat")])
    objects.put("quarantine", "bad.csv", fixed, overwrite=True)
    replayed = intake.replay("bad.csv")
    assert replayed.status == "recorded" and replayed.result.recorded == 1 and store.count_labels() == 1
    assert objects.get("exports", "bad.csv") == fixed and objects.list("quarantine") == []
    with pytest.raises(NotFoundError):
        intake.replay("gone.csv")
    with pytest.raises(ValueError, match="report"):
        intake.replay("bad.csv.report.json")


def test_oversized_export_is_quarantined(loop):
    _, labels, _, objects, _ = loop
    intake = ExportIntake(labels, objects, exports_container="exports", quarantine_container="quarantine",
                          max_bytes=1024)
    outcome = intake.process("exports", "big.csv", b"Url,Label\n" + b"x,cat\n" * 400)
    assert outcome.status == "quarantined" and "too large" in outcome.reason


def test_stats_count_labels_per_class_and_pending(loop):
    _, labels, _, _, intake = loop
    labels.ingest("s.csv", write_csv_export([(url("i0"), "cat"), (url("i1"), "dog"), (url("i2"), "dog")]))
    stats = intake.stats()
    assert stats["labels_per_class"] == {"cat": 1, "dog": 2} and stats["pending"] == 3
    assert stats["quarantined_exports"] == [] and stats["last_retrain_watermark"] == 3


# --- the label stage never poisons an export (issue 13) ---------------------------------------------

def http_error(status: int):
    from azure.core.exceptions import HttpResponseError

    err = HttpResponseError(message=f"status {status}")
    err.status_code = status
    return err


def test_which_errors_are_transient():
    from azure.core.exceptions import (
        ResourceNotFoundError,
        ServiceRequestError,
        ServiceRequestTimeoutError,
        ServiceResponseError,
    )

    from shared.services.labels import is_transient

    transient = [ServiceRequestError("dns"), ServiceResponseError("reset"), ServiceRequestTimeoutError("slow"),
                 http_error(500), http_error(503), http_error(429), http_error(408), TimeoutError("t"),
                 ConnectionResetError("r")]
    permanent = [http_error(400), http_error(403), ResourceNotFoundError("gone"), KeyError("k"),
                 ValueError("v"), ConfigurationError("no classes")]
    assert all(is_transient(e) for e in transient)
    assert not any(is_transient(e) for e in permanent)


def intake_over(store, objects, sleeps: list[float], **kw) -> ExportIntake:
    labels = LabelService(store, model_name="m", class_names=lambda: CLASSES, retrain_threshold=3,
                          requests=InProcessRetrainRequests())
    return ExportIntake(labels, objects, exports_container="exports", quarantine_container="quarantine",
                        sleep=sleeps.append, **kw)


def test_a_permanent_store_error_quarantines_the_export_with_a_report_naming_it(loop):
    store, _, _, objects, _ = loop
    sleeps: list[float] = []
    failing = Flaky(store, "add_labels", RuntimeError("disk full"), forever=True)
    intake = intake_over(failing, objects, sleeps)
    data = write_csv_export([(url("i0"), "cat")])
    objects.put("exports", "e.csv", data)
    outcome = intake.process("exports", "e.csv", data)  # returns: nothing for the host to retry
    assert outcome.status == "quarantined" and outcome.reason == "permanent error: RuntimeError: disk full"
    assert failing.calls == 1 and sleeps == []  # not retried
    assert not objects.exists("exports", "e.csv") and objects.get("quarantine", "e.csv") == data
    report = json.loads(objects.get("quarantine", "e.csv.report.json"))
    assert report["status"] == "quarantined" and report["reason"] == outcome.reason
    assert report["error"] == {"type": "RuntimeError", "message": "disk full", "kind": "permanent", "retries": 0}


def test_a_transient_storage_error_is_retried_then_recorded(loop):
    from azure.core.exceptions import ServiceResponseError

    store, _, _, objects, _ = loop
    sleeps: list[float] = []
    flaky = Flaky(store, "handed_out", ServiceResponseError("connection reset"), http_error(503))
    intake = intake_over(flaky, objects, sleeps)
    outcome = intake.process("exports", "e.csv", write_csv_export([(url("i0"), "cat")]))
    assert outcome.status == "recorded" and outcome.result.recorded == 1 and store.count_labels() == 1
    assert flaky.calls == 3 and sleeps == [0.5, 1.0]  # short exponential backoff, injected sleep


def test_a_transient_error_that_outlasts_the_retries_quarantines_and_says_so(loop):
    from azure.core.exceptions import ServiceRequestError

    store, _, _, objects, _ = loop
    sleeps: list[float] = []
    down = Flaky(store, "handed_out", ServiceRequestError("name resolution failed"), forever=True)
    intake = intake_over(down, objects, sleeps, attempts=4, backoff_seconds=0.1)
    data = write_csv_export([(url("i0"), "cat")])
    outcome = intake.process("exports", "e.csv", data)
    assert outcome.status == "quarantined" and down.calls == 4 and len(sleeps) == 3
    assert outcome.reason == ("transient storage error, retried 3 times: ServiceRequestError: "
                              "name resolution failed")
    report = json.loads(objects.get("quarantine", "e.csv.report.json"))
    assert report["error"]["kind"] == "transient" and report["error"]["retries"] == 3
    # Once the store is back, a replay records it and takes it out of quarantine.
    intake_ok = intake_over(store, objects, [])
    assert intake_ok.replay("e.csv").status == "recorded" and objects.list("quarantine") == []


def test_a_transient_then_permanent_error_is_reported_as_permanent(loop):
    store, _, _, objects, _ = loop
    sleeps: list[float] = []
    flaky = Flaky(store, "handed_out", http_error(429), KeyError("item"))
    outcome = intake_over(flaky, objects, sleeps).process("exports", "e.csv", write_csv_export([(url("i0"), "cat")]))
    assert outcome.status == "quarantined"
    assert outcome.reason == "permanent error (after retrying a transient error 1 time): KeyError: 'item'"


def test_a_format_error_report_names_it_permanent_too(loop):
    _, _, _, objects, intake = loop
    outcome = intake.process("exports", "bad.csv", b"Image,Class\nx,y\n")
    report = json.loads(objects.get("quarantine", "bad.csv.report.json"))
    assert outcome.status == "quarantined"
    assert report["error"] == {"type": "ExportFormatError", "message": outcome.reason, "kind": "permanent",
                               "retries": 0}


def test_when_even_quarantine_fails_the_error_is_raised_for_the_host_to_retry(loop):
    from azure.core.exceptions import ServiceResponseError

    store, _, _, objects, _ = loop
    sleeps: list[float] = []
    broken_store = Flaky(store, "add_labels", RuntimeError("disk full"), forever=True)
    broken_objects = Flaky(objects, "put", ServiceResponseError("storage down"), forever=True)
    intake = intake_over(broken_store, broken_objects, sleeps)
    with pytest.raises(RuntimeError, match="could not be quarantined") as info:
        intake.process("exports", "e.csv", write_csv_export([(url("i0"), "cat")]))
    assert isinstance(info.value.__cause__, ServiceResponseError) and len(sleeps) == 2


def test_an_unreachable_or_overloaded_adx_is_transient_a_refusal_is_not():
    import requests
    from azure.kusto.data.exceptions import KustoServiceError, KustoThrottlingError

    from shared.services.labels import is_transient

    def answered(status: int) -> KustoServiceError:
        response = requests.Response()
        response.status_code = status
        return KustoServiceError("ADX said no", response)

    assert is_transient(answered(503)) and is_transient(answered(429)) and is_transient(KustoThrottlingError())
    assert is_transient(KustoServiceError("no answer"))  # no HTTP answer at all
    assert not is_transient(answered(400)) and not is_transient(answered(403))
