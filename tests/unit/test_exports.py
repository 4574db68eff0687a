import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.core.exports import datastore_url, parse_csv_export, write_csv_export
from shared.errors import ExportFormatError


def test_roundtrip_of_what_the_oracle_writes():
    rows = [(datastore_url("workspaceblobstore", "labeling-input/b1/img-1.png"), "cat"),
            ("azureml://subscriptions/s/resourcegroups/r/workspaces/w/datastores/d/paths/x/img-2.png", "dog")]
    parsed = parse_csv_export(write_csv_export(rows))
    assert [(r.url, r.label) for r in parsed.rows] == rows
    assert parsed.problems == ()


def test_headers_match_case_insensitively_and_extra_columns_are_ignored():
    data = "\ufeffLabeled By,URL,label,Labeled Time\r\nann,AmlDatastore://ds/a.png,cat,2026-01-01\r\n"
    parsed = parse_csv_export(data.encode())
    assert [(r.url, r.label, r.labeled_at) for r in parsed.rows] == [("AmlDatastore://ds/a.png", "cat", "2026-01-01")]


def test_row_problems_are_reported_per_row():
    data = b"Url,Label\nu1,cat\nu2,\nu3,\"['cat', 'dog']\"\nu4,['dog']\n,cat\n"
    parsed = parse_csv_export(data)
    assert [(r.url, r.label) for r in parsed.rows] == [("u1", "cat"), ("u4", "dog")]
    assert [(p.where, p.field) for p in parsed.problems] == [(2, "Label"), (3, "Label"), (5, "Url")]
    assert "multi-label" in parsed.problems[1].reason


@pytest.mark.parametrize(
    ("data", "needle"),
    [(b"", "empty"), (b"Image,Class\na,b\n", "lacks required columns"), (b"\xff\xfe\x00", "UTF-8"),
     (b"Url,Label\n\"unterminated,cat\n", "valid CSV")],
)
def test_unreadable_exports_raise_a_format_error(data, needle):
    with pytest.raises(ExportFormatError, match=needle):
        parse_csv_export(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_parse_or_raise_the_format_error(data):
    try:
        parsed = parse_csv_export(data)
    except ExportFormatError as exc:
        assert exc.problems
    else:
        assert all(r.url and r.label for r in parsed.rows)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.text(min_size=1).filter(lambda s: s.strip() and "\x00" not in s),
                          st.text(min_size=1).filter(lambda s: s.strip() and "\x00" not in s
                                                      and not s.strip().startswith("["))), max_size=20))
def test_mangled_but_valid_csv_roundtrips(rows):
    try:
        parsed = parse_csv_export(write_csv_export(rows))
    except ExportFormatError:
        return  # e.g. a lone surrogate: refused with a reason, never a crash
    assert [(r.url, r.label) for r in parsed.rows] == [(u.strip(), lb.strip()) for u, lb in rows]


# --- label_export_trigger: every format, URL forms, mangled input ---------------------------------
import json  # noqa: E402

from shared.core.exports import (  # noqa: E402
    azureml_url,
    export_format,
    is_export_name,
    item_id_for_url,
    parse_coco_export,
    parse_export,
    write_coco_export,
    write_jsonl_export,
)
from shared.core.naming import labeling_name  # noqa: E402

LONG = "azureml://subscriptions/0000-1111/resourcegroups/rg-al/workspaces/ws-al/datastores/workspaceblobstore/paths/"
COCO_SAMPLE = {  # shaped like Labeling/export/coco/*.json for an image classification project
    "images": [
        {"id": 1, "width": 640, "height": 480, "file_name": "labeling-input/b1/img-1.png",
         "coco_url": "AmlDatastore://workspaceblobstore/labeling-input/b1/img-1.png",
         "absolute_url": "https://acct.blob.core.windows.net/labeling-input/b1/img-1.png",
         "date_captured": "2026-03-01T10:00:00Z"},
        {"id": 2, "width": 640, "height": 480, "file_name": "labeling-input/b1/img-2.png",
         "coco_url": "AmlDatastore://workspaceblobstore/labeling-input/b1/img-2.png", "date_captured": ""},
        {"id": 3, "width": 0, "height": 0, "absolute_url": "https://acct.blob.core.windows.net/c/b1/img-3.png"},
        {"id": 4, "coco_url": "AmlDatastore://workspaceblobstore/labeling-input/b1/img-4.png"},
        {"id": 5, "coco_url": "AmlDatastore://workspaceblobstore/labeling-input/b1/img-5.png"},
    ],
    "annotations": [
        {"id": 1, "category_id": 1, "image_id": 1, "area": 0.0},
        {"id": 2, "category_id": 2, "image_id": 2, "area": 0.0},
        {"id": 3, "category_id": 2, "image_id": 3, "area": 0.0},
        {"id": 4, "category_id": 1, "image_id": 4}, {"id": 5, "category_id": 2, "image_id": 4},
        {"id": 6, "category_id": 9, "image_id": 5}, {"id": 7, "category_id": 1, "image_id": 77},
    ],
    "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
}


def test_csv_as_the_labeling_project_writes_it():
    data = ("Url,Label,Label Confidence\r\n"
            f"{LONG}labeling-input/b1/img-1.png,cat,[1.0]\r\n"
            "AmlDatastore://workspaceblobstore/labeling-input/b1/img-2.png,['dog'],[1.0]\r\n").encode()
    parsed = parse_export(data, "Labeling/export/csv/project_20260301.csv")
    assert parsed.format == "csv"
    assert [(item_id_for_url(r.url)[0], r.label) for r in parsed.rows] == [("img-1", "cat"), ("img-2", "dog")]


def test_coco_images_annotations_categories():
    parsed = parse_coco_export(json.dumps(COCO_SAMPLE).encode())
    assert [(r.row, item_id_for_url(r.url)[0], r.label) for r in parsed.rows] == [
        (1, "img-1", "cat"), (2, "img-2", "dog"), (3, "img-3", "dog")]
    assert parsed.rows[0].labeled_at == "2026-03-01T10:00:00Z"
    by_where: dict[tuple, str] = {}
    for p in parsed.problems:
        by_where[(p.where, p.field)] = by_where.get((p.where, p.field), "") + p.reason + ";"
    assert "multi-label" in by_where[(4, "category_id")]
    assert "no category with id 9" in by_where[(5, "category_id")]
    assert "empty label" in by_where[(5, "category_id")]  # its only annotation was unusable
    assert "no image with id 77" in by_where[(None, "annotations[6].image_id")]


def test_jsonl_mltable_export_with_both_url_forms():
    lines = [
        {"image_url": f"{LONG}labeling-input/b1/img-1.png", "label": "cat", "label_confidence": [1.0]},
        {"image_url": "AmlDatastore://workspaceblobstore/labeling-input/b1/img-2.png", "label": ["dog"]},
        {"image_url": "azureml://datastores/workspaceblobstore/paths/labeling-input/b1/img-3.png", "label": "dog"},
        {"image_url": "AmlDatastore://ws/b1/img-4.png", "label": ["cat", "dog"], "label_confidence": [1.0, 1.0]},
        {"image_url": "AmlDatastore://ws/b1/img-5.png", "label": ""},
        {"label": "cat"},
        [1, 2],
    ]
    text = "\n".join(json.dumps(x) for x in lines) + "\nnot json\n"
    parsed = parse_export(text.encode(), "labeleddatapoints_1.jsonl")
    assert parsed.format == "jsonl"
    assert [(r.row, item_id_for_url(r.url)[0], r.label) for r in parsed.rows] == [
        (1, "img-1", "cat"), (2, "img-2", "dog"), (3, "img-3", "dog")]
    assert [(p.where, p.field) for p in parsed.problems] == [
        (4, "label"), (5, "label"), (6, "image_url"), (7, "line"), (8, "line")]
    assert "multi-label" in parsed.problems[0].reason


@pytest.mark.parametrize(("url", "expected"), [
    (LONG + "labeling-input/b1/a%3Ab%20c.png", "a:b c"),
    ("azureml://datastores/ds/paths/b1/x.y.jpeg", "x.y"),
    ("AmlDatastore://workspaceblobstore/labeling-input/b1/img-1.png", "img-1"),
    ("amldatastore://ds/b1/img-1.png", "img-1"),
    ("https://acct.blob.core.windows.net/labeling-input/b1/img-1.png", "img-1"),
    ("labeling-input/b1/img-1.png", "img-1"),
])
def test_every_url_form_maps_back_to_the_selectors_item_id(url, expected):
    assert item_id_for_url(url) == (expected, None)


def test_labeling_names_roundtrip_through_every_url_form():
    for item_id in ("plain", "a:b?c#d", "spaces and ümlauts", "x.y.z", "100%"):
        path = "labeling-input/" + labeling_name("b7", item_id, ".png")
        for url in (datastore_url("ds", path), azureml_url("ds", path, subscription="s", resource_group="r",
                                                           workspace="w"), azureml_url("ds", path)):
            assert item_id_for_url(url) == (item_id, None)


@pytest.mark.parametrize(("url", "needle"), [
    ("azureml://subscriptions/s/resourcegroups/r/workspaces/w/datastores/d/x.png", "paths"),
    ("AmlDatastore://onlydatastore", "datastore and a path"),
    ("s3://bucket/b1/x.png", "unsupported URL scheme"),
    ("AmlDatastore://ds/b1/", "folder"),
    ("AmlDatastore://ds/b1/%2E%2E.png", "'..'"),
])
def test_urls_that_map_to_no_item_are_reported_not_guessed(url, needle):
    item_id, why = item_id_for_url(url)
    assert item_id is None and needle in why


def test_format_by_extension_then_content():
    coco, jsonl = write_coco_export([("AmlDatastore://d/b/x.png", "cat")]), write_jsonl_export([("u", "cat")])
    assert [export_format(n, d) for n, d in [("a.csv", coco), ("a.json", b""), ("a.JSONL", b""),
                                             ("noext", coco), ("noext", jsonl), ("noext", b"Url,Label\n")]] == [
        "csv", "coco", "jsonl", "coco", "jsonl", "csv"]
    assert not is_export_name("e.csv.report.json") and not is_export_name("ds/MLTable")
    assert is_export_name("Labeling/export/coco/p.json")


def test_writers_roundtrip_through_their_parsers():
    rows = [(datastore_url("ds", "labeling-input/b/i-1.png"), "cat"), (azureml_url("ds", "b/i-2.png"), "dog")]
    for name in ("x.csv", "x.json", "x.jsonl"):
        data = {"csv": write_csv_export, "json": write_coco_export, "jsonl": write_jsonl_export}[
            name.split(".")[1]](rows)
        parsed = parse_export(data, name)
        assert [(r.url, r.label) for r in parsed.rows] == rows and parsed.problems == ()


@pytest.mark.parametrize(("data", "name", "needle"), [
    (b"[]", "x.json", "not a COCO file"), (b'{"images": []}', "x.json", "not a COCO file"),
    (b"{not json", "x.json", "not valid JSON"), (b"[" * 5000, "x.json", "not valid JSON"),
    (b"1\n2\n", "x.jsonl", "not JSON Lines"), (b'{"label": "x"}\n', "x.jsonl", "lacks required fields"),
    (b"", "x.jsonl", "not JSON Lines"),
])
def test_unreadable_json_exports_raise_a_format_error(data, name, needle):
    with pytest.raises(ExportFormatError, match=needle) as info:
        parse_export(data, name)
    assert info.value.problems


def _outcome_is_parsed_or_format_error(data: bytes, name: str) -> None:
    try:
        parsed = parse_export(data, name)
    except ExportFormatError as exc:
        assert exc.problems and str(exc)
    else:
        assert parsed.format in ("csv", "coco", "jsonl")
        assert all(isinstance(r.url, str) and r.url and isinstance(r.label, str) and r.label for r in parsed.rows)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), st.sampled_from(["x.csv", "x.json", "x.jsonl", "noext", "MLTable.bin"]))
def test_arbitrary_bytes_in_any_format_parse_or_raise_the_format_error(data, name):
    _outcome_is_parsed_or_format_error(data, name)


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mangled_coco_and_jsonl_parse_or_raise_the_format_error(data):
    doc = json.loads(json.dumps(COCO_SAMPLE))
    for _ in range(data.draw(st.integers(1, 4))):  # replace a random part of the document by any JSON
        section = data.draw(st.sampled_from(["images", "annotations", "categories"]))
        if doc.get(section) and isinstance(doc[section], list) and data.draw(st.booleans()):
            i = data.draw(st.integers(0, len(doc[section]) - 1))
            if isinstance(doc[section][i], dict) and doc[section][i] and data.draw(st.booleans()):
                key = data.draw(st.sampled_from(sorted(doc[section][i])))
                doc[section][i][key] = data.draw(_json_values)
            else:
                doc[section][i] = data.draw(_json_values)
        else:
            doc[section] = data.draw(_json_values)
    _outcome_is_parsed_or_format_error(json.dumps(doc).encode(), "x.json")
    lines = [json.dumps(data.draw(_json_values)) for _ in range(data.draw(st.integers(0, 5)))]
    _outcome_is_parsed_or_format_error("\n".join(lines).encode(), "x.jsonl")
    raw = json.dumps(doc).encode()
    cut = data.draw(st.integers(0, len(raw)))
    _outcome_is_parsed_or_format_error(raw[:cut], "x.json")
