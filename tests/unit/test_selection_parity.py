"""The DuckDB SQL must select exactly what the NumPy reference selects, on the awkward cases."""

from datetime import UTC, datetime

import numpy as np
import pytest

from shared.adapters.duckdb_store import DuckDBStore
from shared.core.records import Label, SelectedItem, Selection
from shared.core.selection import CandidateFilter, reference_top_k
from shared.core.uncertainty import RANKED_STRATEGIES
from tests.conftest import T0, make_batch

HOUR = np.timedelta64(3600, "s")


def tricky_table(rng: np.random.Generator, n_items: int = 120, classes: int = 7):
    """Ties (identical vectors), zeros, one-hot rows, repeated scorings, other versions, old rows."""
    rows, ids, versions, times = [], [], [], []
    for i in range(n_items):
        item = f"item-{i:04d}"
        kind = i % 6
        if kind == 0:
            p = np.full(classes, 1 / classes)  # the same vector many times: a tie block
        elif kind == 1:
            p = np.zeros(classes)
            p[rng.integers(classes)] = 1.0  # one-hot: zero entries
        elif kind == 2:
            p = np.zeros(classes)
            p[:2] = 0.5  # exact margin tie, with zeros
        else:
            p = rng.dirichlet(np.full(classes, 0.3))
        for repeat in range(1 + (i % 3 == 0)):  # some items scored twice: the later one counts
            q = p if repeat == 0 else rng.dirichlet(np.ones(classes))
            rows.append(q)
            ids.append(item)
            versions.append("v1" if i % 11 else "v0")
            times.append(T0 + (repeat + 1) * HOUR - (48 * HOUR if i % 13 == 0 else 0))
    return make_batch(np.asarray(rows), ids, versions=versions, scored_at=np.asarray(times))


@pytest.fixture
def setup(rng):
    table = tricky_table(rng)
    store = DuckDBStore()
    assert store.add_predictions(table) == len(table)
    excluded_sel = ["item-0003", "item-0010", "item-0042"]
    excluded_lab = ["item-0005", "item-0060"]
    store.record_selection(Selection(
        "b1", "margin", "m", "v1", datetime(2026, 3, 1, tzinfo=UTC),
        tuple(SelectedItem(i, "u", 0.0, n) for n, i in enumerate(excluded_sel))))
    store.add_labels([Label(i, "c0", "e", "sha") for i in excluded_lab])
    flt = CandidateFilter("m", "v1", T0 - 24 * HOUR, T0 + 24 * HOUR)
    return store, table, flt, set(excluded_sel + excluded_lab)


@pytest.mark.parametrize("strategy", RANKED_STRATEGIES)
@pytest.mark.parametrize("k", [1, 7, 30, 500])
def test_duckdb_selects_what_the_reference_selects(setup, strategy, k):
    store, table, flt, excluded = setup
    got = store.top_k(flt, strategy, k, seed=3)
    want = reference_top_k(table, flt, excluded, strategy, k, seed=3)
    assert [r.item_id for r in got] == [r.item_id for r in want]
    np.testing.assert_allclose([r.score for r in got], [r.score for r in want], atol=1e-9)
    assert not excluded & {r.item_id for r in got}


def test_candidates_follow_the_contract(setup):
    store, table, flt, excluded = setup
    cands = store.candidates(flt)
    ref = reference_top_k(table, flt, excluded, "random", 10_000)
    assert sorted(cands.item_ids.tolist()) == sorted(r.item_id for r in ref)
    # the latest scoring of a twice-scored item is the one returned
    i = cands.item_ids.tolist().index("item-0006")
    rows = [j for j, it in enumerate(table.item_ids) if it == "item-0006"]
    np.testing.assert_allclose(cands.probabilities[i], table.probabilities[rows[-1]])


def test_duplicate_predictions_are_stored_once(setup):
    store, table, _, _ = setup
    before = store.count_predictions()
    assert store.add_predictions(table) == 0
    assert store.count_predictions() == before


def test_window_and_version_exclude_rows(setup):
    store, table, _, excluded = setup
    narrow = CandidateFilter("m", "v1", T0 + HOUR, T0 + HOUR)
    got = {r.item_id for r in store.top_k(narrow, "entropy", 10_000)}
    want = {r.item_id for r in reference_top_k(table, narrow, excluded, "entropy", 10_000)}
    assert got == want and got
    assert store.top_k(CandidateFilter("m", "v9", T0 - 99 * HOUR, T0 + 99 * HOUR), "margin", 5) == []


@pytest.mark.parametrize("limit", [1, 9, 40, 10_000])
def test_the_shortlist_is_the_most_uncertain_by_margin(setup, limit):
    store, table, flt, excluded = setup
    got = store.candidates(flt, limit=limit)
    want = reference_top_k(table, flt, excluded, "margin", limit)
    assert got.item_ids.tolist() == sorted(r.item_id for r in want)
    assert len(got) == min(limit, len(store.candidates(flt)))
