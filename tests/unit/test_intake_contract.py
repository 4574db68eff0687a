"""The label intake trusts only what the loop handed out (issue 22): one test per case the review
found, then property tests per format that mutate valid exports and hold the intake to its contract.

The embedded adapters (DuckDB, a folder) are the intake's neighbours here; the same service runs on
ADX and Blob in tests/integration/test_label_export_trigger.py (case 7 is there, through the indexed
blob trigger)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.adapters.duckdb_store import DuckDBStore
from shared.adapters.local_objects import LocalFolderObjectStore
from shared.core.exports import datastore_url, write_coco_export, write_csv_export, write_jsonl_export
from shared.core.item_uris import ItemUriPolicy
from shared.core.naming import labeling_name
from shared.core.records import SelectedItem, Selection
from shared.services.labels import ExportIntake, LabelService

CLASSES = ("cat", "dog")
HOST = "acct.blob.core.windows.net"
T0 = datetime(2026, 3, 1, tzinfo=UTC)


def url(item: str, batch: str = "b1") -> str:
    return datastore_url("workspaceblobstore", "labeling-input/" + labeling_name(batch, item, ".png"))


@pytest.fixture
def world(tmp_path):
    store = DuckDBStore(threads=1)
    objects = LocalFolderObjectStore(tmp_path / "blobs")
    good = [SelectedItem(f"i{n}", objects.put("items", f"i{n}.png", b"png"), 0.0, n) for n in range(20)]
    refused = SelectedItem("evil", "http://169.254.169.254/latest/meta-data", 0.0, 20)  # the selector refused it
    store.record_selection(Selection("b1", "margin", "m", "1", T0, (*good, refused)))
    store.mark_handed_off("b1")
    labels = LabelService(store, model_name="m", class_names=lambda: CLASSES, retrain_threshold=1000,
                          export_hosts=(HOST,), item_uris=ItemUriPolicy.of(roots=objects.uri_roots()))
    intake = ExportIntake(labels, objects, exports_container="exports", quarantine_container="quarantine")
    yield store, labels, intake, objects
    store.close()


def current(store) -> dict[str, str]:
    return {lb.item_id: lb.label for lb in store.list_labels()}


# --- 1: a row maps to an item only by exactly what was handed out ----------------------------------
@pytest.mark.parametrize("row_url", [
    f"https://elsewhere.example/labeling-input/{labeling_name('b1', 'i1', '.png')}",       # another host
    f"https://{HOST}/labeling-input/b1/../b1/i1.png",                                       # .. segments
    f"https://{HOST}/labeling-input/b1/never.png?x=/i1.png",                                # a query naming it
    '=HYPERLINK("https://acct.blob.core.windows.net/labeling-input/b1/i1.png")',             # a formula
    "AmlDatastore://workspaceblobstore/other/b1/i1.png",                                    # another folder
    "AmlDatastore://workspaceblobstore/labeling-input/b2/i1.png",                           # another batch
    "AmlDatastore://workspaceblobstore/labeling-input/b1/i1.jpg",                           # another file
])
def test_case_1_a_url_that_only_ends_like_a_handed_out_file_records_nothing(world, row_url):
    store, labels, _, _ = world
    result = labels.ingest("e.csv", write_csv_export([(row_url, "cat"), (url("i2"), "dog")]))
    assert current(store) == {"i2": "dog"}
    assert [p.where for p in result.problems] == [1] and result.problems[0].field == "Url"


def test_case_1_the_forms_the_loop_handed_out_are_all_accepted(world):
    store, labels, _, _ = world
    rows = [(url("i1"), "cat"), (f"https://{HOST}/labeling-input/{labeling_name('b1', 'i2', '.png')}", "dog"),
            ("azureml://datastores/labeling_input/paths/b1/i3.png", "cat")]
    assert labels.ingest("e.csv", write_csv_export(rows)).problems == ()
    assert current(store) == {"i1": "cat", "i2": "dog", "i3": "cat"}


# --- 2: an item whose hand-off was refused never gets a label -------------------------------------
def test_case_2_an_item_the_selector_refused_to_hand_out_gets_no_label(world):
    store, labels, _, _ = world
    result = labels.ingest("e.csv", write_csv_export([(url("evil", "b1").replace(".png", ".bin"), "cat")]))
    assert current(store) == {} and "never reached labelers" in result.problems[0].reason


# --- 3: an older answer arriving later changes nothing --------------------------------------------
def test_case_3_an_older_answer_arriving_late_does_not_revert_a_correction(world):
    store, labels, _, _ = world

    def export(label: str, at: datetime) -> bytes:
        return f"Url,Label,LabeledTime\r\n{url('i1')},{label},{at.isoformat()}\r\n".encode()

    labels.ingest("first.csv", export("cat", T0))
    labels.ingest("correction.csv", export("dog", T0 + timedelta(hours=1)))
    late = labels.ingest("late.csv", export("cat", T0 + timedelta(minutes=30)))
    assert current(store) == {"i1": "dog"} and late.recorded == 0


# --- 4: one bad row never takes the export with it ------------------------------------------------
@pytest.mark.parametrize("bad", [
    "0001-01-01T00:00:00+14:00",       # out of range once converted (OverflowError before)
    "not a time", "1999-12-31T23:59:59Z", "2999-01-01T00:00:00Z",
])
def test_case_4_a_bad_labeling_time_refuses_that_row_only(world, bad):
    store, _, intake, objects = world
    data = f"Url,Label,LabeledTime\r\n{url('i1')},cat,{bad}\r\n{url('i2')},dog,{T0.isoformat()}\r\n".encode()
    objects.put("exports", "e.csv", data)
    outcome = intake.process("exports", "e.csv", data)
    assert outcome.status == "recorded" and current(store) == {"i2": "dog"}
    assert [(p.where, p.field) for p in outcome.result.problems] == [(1, "labeled_at")]


def test_case_4_a_cell_over_the_csv_field_limit_refuses_that_row_only(world):
    store, _, intake, _objects = world
    data = (f"Url,Label\r\n{url('i1')},{'x' * 200_000}\r\n{url('i2')},dog\r\n").encode()
    outcome = intake.process("exports", "e.csv", data)
    assert outcome.status == "recorded" and current(store) == {"i2": "dog"}
    (problem,) = outcome.result.problems
    assert problem.where == 1 and "200000 characters" in problem.reason and len(problem.reason) < 300


# --- 5: ambiguity is refused, never guessed ------------------------------------------------------
def test_case_5_a_repeated_json_key_refuses_the_row(world):
    store, labels, _, _ = world
    data = (f'{{"image_url": "{url("i1")}", "label": "cat", "label": "dog"}}\n'
            f'{{"image_url": "{url("i2")}", "label": "dog"}}\n').encode()
    result = labels.ingest("e.jsonl", data)
    assert current(store) == {"i2": "dog"} and "more than once" in result.problems[0].reason


def test_case_5_coco_duplicate_category_or_image_ids_refuse_what_they_touch(world):
    store, labels, _, _ = world
    doc = json.loads(write_coco_export([(url("i1"), "cat"), (url("i2"), "dog"), (url("i3"), "cat")]))
    doc["categories"].append({"id": doc["categories"][0]["id"], "name": "dog"})  # category 1 defined twice
    doc["images"].append(dict(doc["images"][1]))  # image 2 listed twice
    result = labels.ingest("e.json", json.dumps(doc).encode())
    assert current(store) == {}, "cat images use the ambiguous category; image 2 is ambiguous itself"
    reasons = " ".join(p.reason for p in result.problems)
    assert "used twice" in reasons and "defined twice" in reasons


# --- 6: reports never echo unbounded input --------------------------------------------------------
def test_case_6_a_huge_label_is_not_copied_into_the_report(world):
    _, _, intake, objects = world
    data = f"Url,Label\r\n{url('i1')},{'y' * 1_000_000}\r\n{url('i2')},dog\r\n".encode()
    objects.put("exports", "e.csv", data)
    outcome = intake.process("exports", "e.csv", data)
    report = objects.get("exports", "e.csv.report.json")
    assert outcome.status == "recorded" and len(report) < 5_000


# --- property tests: mutate valid exports -------------------------------------------------------
WRITERS = {"e.csv": write_csv_export, "e.json": write_coco_export, "e.jsonl": write_jsonl_export}
JUNK = st.one_of(st.text(max_size=40), st.sampled_from([
    "https://elsewhere.example/labeling-input/b1/i3.png", "AmlDatastore://ws/labeling-input/b1/../b1/i3.png",
    "=1+1", "", "AmlDatastore://ws/labeling-input/b1/i3.png?x=1", "bird", "cat", "dog", "x" * 5000]))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(sorted(WRITERS)), which=st.integers(0, 5), field=st.sampled_from(["url", "label"]),
       junk=JUNK)
def test_a_mutated_row_is_refused_alone_and_the_good_rows_recorded(world, name, which, field, junk):
    store, _labels, intake, _ = world
    store._con.execute("DELETE FROM labels")
    rows = [(url(f"i{n}"), CLASSES[n % 2]) for n in range(6)]
    good_url, good_label = rows[which]
    rows[which] = (junk, good_label) if field == "url" else (good_url, junk)
    data = WRITERS[name](rows)
    outcome = intake.process("exports", name, data)  # never raises
    got = current(store)
    still_good = {f"i{n}": CLASSES[n % 2] for n in range(6) if n != which}
    assert outcome.status in ("recorded", "quarantined")
    if outcome.status == "recorded":
        assert {k: v for k, v in got.items() if k != f"i{which}"} == still_good
        mutated_ok = (field == "label" and junk in CLASSES) or (field == "url" and junk == good_url)
        if f"i{which}" in got:
            assert mutated_ok or got[f"i{which}"] == good_label  # a mapped row keeps its own label
        else:
            assert any(p.where is not None for p in outcome.result.problems) or not junk.strip()
        assert all(len(p.reason) < 400 for p in outcome.result.problems)
