"""Batch-aware strategies: pure NumPy over every candidate of a selection.

Plain top-k by uncertainty fills a batch with near-duplicates (many items confused between the
same two classes) and with items no label will fix. These strategies spread the batch out.
"""

from __future__ import annotations

import numpy as np

from shared.core import uncertainty
from shared.core.strategies import BatchStrategy, register
from shared.ports import CandidateSet, LabeledSet


def pair_capped_margin(
    proba: np.ndarray, item_ids: np.ndarray, k: int, *, cap: int = 2
) -> np.ndarray:
    """Margin order, but at most ``cap`` items per confused class pair (top-1, top-2) until the
    batch would otherwise stay short; ties by item id. Returns indices in pick order."""
    margins = uncertainty.margin(proba)
    order = np.lexsort((np.asarray(item_ids, dtype=str), margins))
    top2 = np.argsort(-proba, axis=1, kind="stable")[:, :2]
    pairs = np.sort(top2, axis=1)
    pair_key = pairs[:, 0] * proba.shape[1] + pairs[:, 1]
    taken: dict[int, int] = {}
    chosen, overflow = [], []
    for i in order:
        key = int(pair_key[i])
        if taken.get(key, 0) < cap:
            taken[key] = taken.get(key, 0) + 1
            chosen.append(i)
            if len(chosen) == k:
                break
        else:
            overflow.append(i)
    chosen.extend(overflow[: k - len(chosen)])
    return np.asarray(chosen, dtype=np.int64)


def _pick_pair_capped(cands: CandidateSet, labeled: LabeledSet, k: int,
                      rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    idx = pair_capped_margin(cands.probabilities, cands.item_ids, k)
    return idx, uncertainty.margin(cands.probabilities[idx])


PAIR_CAPPED_MARGIN = register(BatchStrategy(
    "pair_capped_margin", _pick_pair_capped, needs_embeddings=False,
    description="margin order with at most 2 items per confused class pair",
))
