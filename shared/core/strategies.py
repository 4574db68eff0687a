"""Selection strategies: the ranked ones (one score per item, computed by the store's own query
language) and the batch-aware ones (a pure NumPy step over all candidates).

A batch-aware strategy sees the candidates' probabilities and embeddings and the labeled items,
and returns the chosen candidate indices in pick order with one score each.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from shared.core.uncertainty import RANKED_STRATEGIES
from shared.errors import SelectionError
from shared.ports import CandidateSet, LabeledSet

BatchPicker = Callable[[CandidateSet, LabeledSet, int, np.random.Generator], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class BatchStrategy:
    name: str
    pick: BatchPicker
    needs_embeddings: bool
    description: str
    # Pick from the most uncertain ``max(shortlist_per_item * k, shortlist_min)`` candidates by
    # margin, not from all of them: bounded memory over millions of predictions, and no change
    # where the pool is smaller (1,000 scored items per round in the simulation).
    shortlist_per_item: int = 50
    shortlist_min: int = 5000
    # Modules the strategy imports beyond the function apps' packages (requirements.txt): a strategy
    # whose module is missing is refused by name when it is configured, not when it first runs.
    requires: tuple[str, ...] = ()

    def shortlist(self, k: int) -> int:
        return max(self.shortlist_per_item * k, self.shortlist_min)


BATCH_STRATEGIES: dict[str, BatchStrategy] = {}


def register(strategy: BatchStrategy) -> BatchStrategy:
    BATCH_STRATEGIES[strategy.name] = strategy
    return strategy


def known_strategies() -> tuple[str, ...]:
    _load_builtin()
    return (*BATCH_STRATEGIES, *RANKED_STRATEGIES)


def _load_builtin() -> None:
    from shared.core import adaptive, batch, peers  # noqa: F401  (registers the built-in batch strategies)


def check_strategy(name: str) -> str:
    _load_builtin()
    if name not in RANKED_STRATEGIES and name not in BATCH_STRATEGIES:
        raise SelectionError(f"unknown strategy {name!r}; known: {', '.join(known_strategies())}")
    missing = [m for m in (BATCH_STRATEGIES[name].requires if name in BATCH_STRATEGIES else ())
               if importlib.util.find_spec(m) is None]
    if missing:
        raise SelectionError(f"strategy {name!r} needs {', '.join(missing)}, which is not installed (the function "
                             f"apps install requirements.txt only); pick another strategy, or install it")
    return name
