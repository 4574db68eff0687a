"""The uncertainty math, once. Every backend (DuckDB SQL, KQL) is tested against these functions.

For a probability vector sorted so that p1 >= p2 >= ...:
least confidence = 1 - p1; margin = p1 - p2 (smaller is more uncertain);
entropy = -sum(p log p) with 0 log 0 = 0 (natural log). Random ranks by a seeded MD5 key that SQL
and KQL compute identically: md5("<seed>:<item_id>") as lowercase hex.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np

RANKED_STRATEGIES = ("least_confidence", "margin", "entropy", "random")


def _as_float64(proba: np.ndarray) -> np.ndarray:
    p = np.asarray(proba, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 2:
        raise ValueError(f"probabilities must be (n, classes>=2), got shape {p.shape}")
    return p


def least_confidence(proba: np.ndarray) -> np.ndarray:
    """1 - p1: higher is more uncertain."""
    return 1.0 - _as_float64(proba).max(axis=1)


def margin(proba: np.ndarray) -> np.ndarray:
    """p1 - p2: LOWER is more uncertain."""
    p = _as_float64(proba)
    top2 = np.partition(p, p.shape[1] - 2, axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


def entropy(proba: np.ndarray) -> np.ndarray:
    """-sum p log p (nats), with 0 log 0 = 0: higher is more uncertain."""
    p = _as_float64(proba)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    return -terms.sum(axis=1)


def random_keys(item_ids: Iterable[str], seed: int) -> np.ndarray:
    """Seeded, order-independent random keys (lowercase MD5 hex); ascending key order is the draw."""
    return np.array(
        [hashlib.md5(f"{seed}:{i}".encode()).hexdigest() for i in item_ids], dtype=object
    )


def scores(strategy: str, proba: np.ndarray) -> np.ndarray:
    """The natural score of a ranked strategy (random has none: zeros)."""
    if strategy == "least_confidence":
        return least_confidence(proba)
    if strategy == "margin":
        return margin(proba)
    if strategy == "entropy":
        return entropy(proba)
    if strategy == "random":
        return np.zeros(len(proba))
    raise ValueError(f"unknown ranked strategy {strategy!r}; known: {', '.join(RANKED_STRATEGIES)}")


def rank_order(strategy: str, item_ids: np.ndarray, proba: np.ndarray, seed: int = 0) -> np.ndarray:
    """Indices from most to least uncertain; ties broken by item id (ascending)."""
    ids = np.asarray(item_ids, dtype=str)
    if strategy == "random":
        return np.lexsort((ids, random_keys(ids, seed)))
    s = scores(strategy, proba)
    primary = s if strategy == "margin" else -s
    return np.lexsort((ids, primary))
