"""Which answer is an item's label: the rule every store implements (the reference, in Python).

An **answer** is one labeler's (or one export's) statement about an item, identified by a stable
``answer_id``: ``label-studio:<project>:<annotation id>`` for a Label Studio annotation, ``export``
for the historical labeling exports (one answer stream per item). Answers are recorded as
append-only rows (:class:`shared.core.records.Label`); a row may also *retract* its answer (the
annotation was deleted, or turned into a skip).

* The **state** of an answer is its row with the latest ``labeled_at`` (then the latest
  ``recorded_at``): an older version of an annotation arriving late (the catch-up after the webhook)
  changes nothing.
* The **current label** of an item is, among its answers whose state is not retracted, the one with
  the latest ``labeled_at``; ties go to the greater ``answer_id`` (ordinal). None when every answer
  is retracted: the item counts as awaiting a label again.
* A row is **recorded** only if it is newer than its answer's state and changes something: what the
  answer says (another label, or retracted vs. not), or which answer is the item's current label. So
  a redelivered webhook, a catch-up that reads the same annotation again, or a cumulative export
  repeating itself records nothing twice.

DuckDB (``shared/adapters/duckdb_store.py``) and ADX (``shared/kql/labels_current.kql`` and the
queries that share its ``current`` block) implement the read side; both adapters call
:func:`changes_state` on the write side. ``tests/unit/test_answers.py`` holds them to this module.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime

from shared.core.records import Label

EXPORT_ANSWER = "export"


def label_studio_answer_id(project_id: int, annotation_id: int) -> str:
    return f"label-studio:{project_id}:{annotation_id}"


def _state_key(row: Label) -> tuple[datetime, datetime]:
    assert row.labeled_at is not None, "every recorded answer has a labeling time"
    return row.labeled_at, row.recorded_at or row.labeled_at


def answer_states(rows: Iterable[Label]) -> dict[tuple[str, str], Label]:
    """(item id, answer id) -> the answer's state (its latest row)."""
    states: dict[tuple[str, str], Label] = {}
    for row in rows:
        key = (row.item_id, row.answer_id)
        if key not in states or _state_key(row) > _state_key(states[key]):
            states[key] = row
    return states


def current_labels(rows: Iterable[Label]) -> dict[str, Label]:
    """item id -> the state of the answer that is its current label (items with none are absent)."""
    best: dict[str, Label] = {}
    for state in answer_states(rows).values():
        if state.retracted:
            continue
        held = best.get(state.item_id)
        assert state.labeled_at is not None
        if held is None or (state.labeled_at, state.answer_id) > (held.labeled_at, held.answer_id):
            best[state.item_id] = state
    return best


def changes_state(new: Label, state: Label | None) -> bool:
    """Whether recording ``new`` changes its answer's state (``state``: the current one, or None)."""
    if new.labeled_at is None:
        raise ValueError("an answer needs its labeling time")
    if state is None:
        return not new.retracted  # retracting an answer never recorded says nothing
    assert state.labeled_at is not None
    if new.labeled_at <= state.labeled_at:
        return False  # older (or the same) answer arriving late
    if new.retracted or state.retracted:
        return new.retracted != state.retracted
    return new.label != state.label


def to_record(incoming: Iterable[Label], states: Mapping[tuple[str, str], Label]) -> list[Label]:
    """The rows of ``incoming`` to append, in order. ``states``: the state of every answer of the
    incoming items (:func:`answer_states` of their rows). A row is appended if it changes its
    answer's state (:func:`changes_state`), or if it is newer than that state and makes its answer the
    item's current label (a labeler who submits the same class again, later than another labeler's
    answer, is the latest word). Rows before it in ``incoming`` count (a batch may carry two versions
    of one answer)."""
    states = dict(states)
    out = []
    for row in incoming:
        key = (row.item_id, row.answer_id)
        state = states.get(key)
        record = changes_state(row, state)
        if not record and state is not None and not row.retracted and row.labeled_at > state.labeled_at:  # type: ignore[operator]
            before = current_labels(s for k, s in states.items() if k[0] == row.item_id).get(row.item_id)
            record = before is not None and before.answer_id != row.answer_id and \
                (row.labeled_at, row.answer_id) > (before.labeled_at, before.answer_id)
        if record:
            out.append(row)
            states[key] = row
    return out
