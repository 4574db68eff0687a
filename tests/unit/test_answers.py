"""Which answer is an item's label (shared/core/answers.py): the reference on named cases, then both
stores held to it — the DuckDB store and the ADX store (the stand-in running the shipped KQL) record
exactly the rows ``to_record`` says, and read back exactly the labels ``current_labels`` says."""

from __future__ import annotations

import itertools
import shutil
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.core import answers
from shared.core.records import Label, SelectedItem, Selection

T0 = datetime(2026, 3, 1, 10, tzinfo=UTC)
A1 = answers.label_studio_answer_id(7, 9)
A2 = answers.label_studio_answer_id(7, 10)  # ordinally below A1 ("...:10" < "...:9")
EXPORT = answers.EXPORT_ANSWER


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def row(item: str, label: str, minutes: int, answer: str = A1, *, retracted: bool = False,
        export: str = "d1") -> Label:
    return Label(item, "" if retracted else label, export, f"sha-{export}", at(minutes), answer, retracted)


def record(history: list[list[Label]]) -> list[Label]:
    """Feed batches through the reference as a store does: each batch against the states of what was
    recorded before it. The rows recorded, in order."""
    recorded: list[Label] = []
    for batch in history:
        items = {lb.item_id for lb in batch}
        states = answers.answer_states(r for r in recorded if r.item_id in items)
        recorded += answers.to_record(batch, states)
    return recorded


def current(recorded: list[Label]) -> dict[str, tuple[str, str]]:
    return {i: (lb.label, lb.answer_id) for i, lb in answers.current_labels(recorded).items()}


# --- the rule on named cases ------------------------------------------------------------------
def test_an_older_version_arriving_after_a_newer_one_changes_nothing():
    newer, older = row("x", "dog", 5), row("x", "cat", 1)
    recorded = record([[newer], [older]])
    assert recorded == [newer]
    assert current(recorded) == {"x": ("dog", A1)}
    # The same two versions in one batch, newest first: the same outcome.
    assert record([[newer, older]]) == [newer]
    # The same time again with another label is not newer either.
    assert record([[newer], [row("x", "cat", 5)]]) == [newer]


def test_a_changed_label_becomes_current():
    first, changed = row("x", "cat", 1), row("x", "dog", 2)
    recorded = record([[first], [changed]])
    assert recorded == [first, changed]
    assert current(recorded) == {"x": ("dog", A1)}
    assert record([[first, changed]]) == [first, changed]  # two versions in one batch


def test_a_retraction_removes_the_current_label_and_another_answer_still_stands():
    a, b = row("x", "cat", 1, A1), row("x", "dog", 2, A2)
    recorded = record([[a, b]])
    assert current(recorded) == {"x": ("dog", A2)}
    gone = row("x", "", 3, A2, retracted=True)
    recorded = record([[a, b], [gone]])
    assert recorded == [a, b, gone]
    assert current(recorded) == {"x": ("cat", A1)}  # the other labeler's answer stands
    recorded = record([[a, b], [gone], [row("x", "", 4, A1, retracted=True)]])
    assert current(recorded) == {}  # every answer withdrawn: awaiting a label again
    # A retraction older than the answer it names says nothing.
    assert record([[b], [row("x", "", 1, A2, retracted=True)]]) == [b]
    # An answer given again after its retraction is recorded and current again.
    back = row("x", "dog", 9, A2)
    assert record([[a, b], [gone], [back]])[-1] == back
    assert current(record([[a, b], [gone], [back]])) == {"x": ("dog", A2)}


def test_a_skip_with_no_prior_answer_records_nothing():
    skip = row("x", "", 1, A1, retracted=True)
    assert record([[skip]]) == []
    assert answers.changes_state(skip, None) is False
    # A skip after an answer withdraws it.
    assert record([[row("x", "cat", 1)], [row("x", "", 2, retracted=True)]])[-1].retracted


def test_redelivery_records_nothing():
    a, b = row("x", "cat", 1, A1), row("y", "dog", 1, A2)
    first = record([[a, b]])
    assert record([[a, b], [a, b]]) == first
    assert record([[a, a, b, b]]) == first  # duplicates inside one batch
    # The same content from another delivery (another export id) is no news either.
    assert record([[a], [row("x", "cat", 1, A1, export="d2")]]) == [a]
    # A cumulative export repeating itself: one answer stream per item.
    e1, e2 = row("x", "cat", 1, EXPORT, export="e1"), row("x", "cat", 1, EXPORT, export="e2")
    assert record([[e1], [e2]]) == [e1]


def test_ties_on_labeled_at_go_to_the_greater_answer_id():
    assert A1 > A2  # ordinal, not numeric: "...:9" > "...:10"
    a, b = row("x", "cat", 3, A1), row("x", "dog", 3, A2)
    for batches in ([[a, b]], [[b, a]], [[a], [b]], [[b], [a]]):
        assert current(record(batches)) == {"x": ("cat", A1)}


def test_a_labeler_resubmitting_the_same_class_later_than_another_answer_becomes_current():
    mine, theirs = row("x", "cat", 1, A1), row("x", "dog", 2, A2)
    again = row("x", "cat", 3, A1)
    recorded = record([[mine], [theirs], [again]])
    assert recorded == [mine, theirs, again]  # the same label, yet recorded: it is the latest word
    assert current(recorded) == {"x": ("cat", A1)}
    # Re-submitting while already current changes nothing.
    assert record([[mine], [row("x", "cat", 5, A1)]]) == [mine]
    # Re-submitting at a time older than the other answer does not take over.
    assert record([[mine], [row("x", "dog", 4, A2)], [row("x", "cat", 3, A1)]]) == [mine, row("x", "dog", 4, A2)]


def test_an_answer_needs_its_labeling_time():
    with pytest.raises(ValueError):
        answers.changes_state(Label("x", "cat", "e", "s", None), None)


# --- parity: both stores against the reference ------------------------------------------------
ITEMS = ("x", "y", "w")
HANDED = ("x", "y", "z")  # handed off; z is never answered; w is selected but not handed off
ANSWER_IDS = (A1, A2, EXPORT)


@st.composite
def histories(draw: st.DrawFn) -> list[list[Label]]:
    n = draw(st.integers(1, 14))
    rows = []
    for i in range(n):
        retracted = draw(st.integers(0, 3)) == 0
        rows.append(Label(draw(st.sampled_from(ITEMS)), "" if retracted else draw(st.sampled_from(("cat", "dog"))),
                          f"d{i}", f"sha{i}", at(draw(st.integers(0, 3))), draw(st.sampled_from(ANSWER_IDS)),
                          retracted))
    cuts = sorted(draw(st.sets(st.integers(1, max(1, n - 1)), max_size=4)))
    bounds = [0, *[c for c in cuts if c < n], n]
    return [rows[a:b] for a, b in itertools.pairwise(bounds) if b > a]


def _selections(store) -> None:
    store.record_selection(Selection("b1", "margin", "m", "1", T0, tuple(
        SelectedItem(i, f"u/{i}", 0.1, k) for k, i in enumerate(HANDED))))
    store.record_selection(Selection("b2", "margin", "m", "1", T0, (SelectedItem("w", "u/w", 0.1, 0),)))
    store.mark_handed_off("b1")


def _key(lb: Label) -> tuple:
    return (lb.item_id, lb.answer_id, lb.labeled_at, lb.retracted, lb.label if not lb.retracted else "",
            lb.export_id, lb.export_sha256)


def _check(store, stored_rows, history: list[list[Label]]) -> None:
    expected: list[Label] = []
    for batch in history:
        items = {lb.item_id for lb in batch}
        new = answers.to_record(batch, answers.answer_states(r for r in expected if r.item_id in items))
        assert store.add_labels(batch) == len(new)
        expected += new
    assert sorted(map(_key, stored_rows())) == sorted(map(_key, expected))
    want = current(expected)
    got = {lb.item_id: (lb.label, lb.answer_id) for lb in store.list_labels()}
    assert got == want
    assert store.count_labels() == len(want)
    assert store.awaiting_labels() == len(set(HANDED) - set(want))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(history=histories())
def test_duckdb_store_records_and_reads_what_the_reference_says(history):
    from shared.adapters.duckdb_store import DuckDBStore

    folder = Path(tempfile.mkdtemp(prefix="answers-"))
    store = DuckDBStore(folder / "loop.duckdb")
    try:
        _selections(store)
        assert store.awaiting_labels() == len(HANDED)

        def stored_rows() -> list[Label]:
            rows = store._con.execute("SELECT item_id, label, export_id, export_sha256, labeled_at, answer_id, "
                                      "retracted FROM labels").fetchall()
            return [Label(r[0], r[1], r[2], r[3], r[4].replace(tzinfo=UTC), r[5], bool(r[6])) for r in rows]

        _check(store, stored_rows, history)
    finally:
        store.close()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def adx_store(adx):
    from shared.backends import Backend
    from shared.settings import load_settings
    from tests.support.credentials import StaticTokenCredential

    store = Backend(load_settings(backend="azure", adx_cluster_uri=adx.url), credential=StaticTokenCredential()).store
    client = store._client
    for table in ("Selections", "Labels"):
        client.execute_mgmt(adx.database, f".clear table {table} data")
    _selections(store)
    return store


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(history=histories())
def test_adx_store_records_and_reads_what_the_reference_says(history, adx, adx_store):
    adx_store._client.execute_mgmt(adx.database, ".clear table Labels data")

    def stored_rows() -> list[Label]:
        return [Label(r["ItemId"], r["Label"], r["ExportId"], r["ExportSha256"], _aware(r["LabeledAt"]),
                      r["AnswerId"], bool(r["Retracted"])) for r in adx.query("Labels")]

    _check(adx_store, stored_rows, history)


def _aware(value) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def test_awaiting_labels_counts_handed_off_items_without_a_current_label(tmp_path):
    from shared.adapters.duckdb_store import DuckDBStore

    store = DuckDBStore(tmp_path / "loop.duckdb")
    store.record_selection(Selection("b1", "margin", "m", "1", T0, (SelectedItem("x", "u/x", 0.1, 0),
                                                                   SelectedItem("y", "u/y", 0.2, 1))))
    assert store.awaiting_labels() == 0  # recorded, not handed off yet
    store.mark_handed_off("b1")
    assert store.awaiting_labels() == 2
    assert store.add_labels([row("x", "cat", 1, A1), row("x", "dog", 1, A2)]) == 2
    assert store.awaiting_labels() == 1
    assert store.add_labels([row("x", "", 2, A1, retracted=True)]) == 1
    assert store.awaiting_labels() == 1 and store.count_labels() == 1  # A2 still stands
    assert store.add_labels([row("x", "", 2, A2, retracted=True)]) == 1
    assert store.awaiting_labels() == 2 and store.count_labels() == 0 and store.list_labels() == []
    store.close()
