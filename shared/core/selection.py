"""The selection contract, as the NumPy reference every backend must agree with.

Candidates are the latest prediction per item (latest ``scored_at``, then highest prediction id)
from the serving model version, kept when it was scored inside the window ``[start, end]``,
minus items selected or labeled before. (Latest first, then the window: an item re-scored after
the window's end is judged by its newest scores, and the stores can keep "latest" up to date at
ingestion instead of grouping every row at query time.) Ranked strategies order candidates by
their uncertainty score and break ties by item id; random orders by the seeded key of
:func:`shared.core.uncertainty.random_keys`.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import numpy as np

from shared.core import uncertainty
from shared.core.records import PredictionBatch


@dataclass(frozen=True, slots=True)
class CandidateFilter:
    """Which predictions are candidates: one model version, a scoring-time window."""

    model_name: str
    model_version: str
    window_start: np.datetime64
    window_end: np.datetime64


@dataclass(frozen=True, slots=True)
class Ranked:
    item_id: str
    score: float
    item_uri: str = ""


def candidate_rows(
    table: PredictionBatch, flt: CandidateFilter, excluded: Collection[str]
) -> np.ndarray:
    """Row indices of ``table`` that are candidates, sorted by item id."""
    names = np.asarray(table.model_name, dtype=str)
    versions = np.asarray(table.model_version, dtype=str)
    at = table.scored_at.astype("datetime64[us]")
    mask = (names == flt.model_name) & (versions == flt.model_version)
    rows = np.flatnonzero(mask)
    if rows.size == 0:
        return rows
    items = np.asarray(table.item_ids, dtype=str)[rows]
    pids = np.asarray(table.prediction_ids, dtype=str)[rows]
    # Sort by item, then newest first (scored_at desc, prediction id desc): the first row per item wins.
    order = np.lexsort((_desc_str(pids), -at[rows].astype(np.int64), items))
    rows, items = rows[order], items[order]
    first = np.ones(len(rows), dtype=bool)
    first[1:] = items[1:] != items[:-1]
    rows, items = rows[first], items[first]
    inside = (at[rows] >= flt.window_start) & (at[rows] <= flt.window_end)
    rows, items = rows[inside], items[inside]
    if excluded:
        keep = ~np.isin(items, np.asarray(list(excluded), dtype=str))
        rows = rows[keep]
    return rows


def _desc_str(values: np.ndarray) -> np.ndarray:
    """A key that sorts strings descending under an ascending sort."""
    _, inverse = np.unique(values, return_inverse=True)
    return -inverse


def reference_top_k(
    table: PredictionBatch,
    flt: CandidateFilter,
    excluded: Collection[str],
    strategy: str,
    k: int,
    seed: int = 0,
) -> list[Ranked]:
    """The top ``k`` candidates for a ranked strategy, most uncertain first."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    rows = candidate_rows(table, flt, excluded)
    if rows.size == 0:
        return []
    ids = np.asarray(table.item_ids, dtype=str)[rows]
    proba = table.probabilities[rows]
    order = uncertainty.rank_order(strategy, ids, proba, seed)[:k]
    s = uncertainty.scores(strategy, proba)
    uris = np.asarray(table.item_uris, dtype=str)[rows]
    return [Ranked(str(ids[i]), float(s[i]), str(uris[i])) for i in order]
