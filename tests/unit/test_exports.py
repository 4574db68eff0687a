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
