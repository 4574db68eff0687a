"""select: pick the candidates the serving model is least sure about and hand them to labeling.

The selection is recorded before any item is copied, so a run that dies mid-copy is finished by
the next run (same batch, same names, no duplicates); recorded items are never candidates again.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np

from shared.core import strategies
from shared.core.naming import extension_of, labeling_name
from shared.core.records import SelectedItem, Selection
from shared.core.selection import CandidateFilter
from shared.core.uncertainty import RANKED_STRATEGIES
from shared.ports import ObjectStore, PredictionStore

log = logging.getLogger(__name__)
LABELING_CONTAINER = "labeling-input"


@dataclass(frozen=True, slots=True)
class SelectionResult:
    selection: Selection | None
    reason: str
    resumed: tuple[str, ...] = ()


class SelectService:
    def __init__(
        self,
        store: PredictionStore,
        objects: ObjectStore,
        *,
        model_name: str,
        strategy: str,
        batch_size: int,
        window: timedelta,
        seed: int = 0,
    ) -> None:
        self._store = store
        self._objects = objects
        self._model_name = model_name
        self._strategy = strategies.check_strategy(strategy)
        self._batch_size = batch_size
        self._window = window
        self._seed = seed

    def preview(self, *, now: datetime | None = None, strategy: str | None = None,
                k: int | None = None) -> SelectionResult:
        """What a run would pick now; nothing is recorded or copied."""
        return self._choose(now or datetime.now(UTC), strategy or self._strategy, k or self._batch_size)

    def run(self, *, now: datetime | None = None, strategy: str | None = None,
            k: int | None = None) -> SelectionResult:
        """Finish interrupted hand-offs, then select, record and hand a new batch to labeling."""
        resumed = tuple(self.resume())
        result = self._choose(now or datetime.now(UTC), strategy or self._strategy, k or self._batch_size)
        if result.selection is None:
            log.info("selection: nothing selected (%s)", result.reason)
            return SelectionResult(None, result.reason, resumed)
        self._store.record_selection(result.selection)
        self.hand_off(result.selection)
        log.info("selection %s: %d items by %s", result.selection.batch_id,
                 len(result.selection.items), result.selection.strategy)
        return SelectionResult(result.selection, result.reason, resumed)

    def resume(self) -> list[str]:
        done = []
        for selection in self._store.pending_handoffs():
            log.warning("selection %s was not fully handed off; finishing it", selection.batch_id)
            self.hand_off(selection)
            done.append(selection.batch_id)
        return done

    def hand_off(self, selection: Selection) -> None:
        """Copy every item of a recorded selection to the labeling input folder (idempotent)."""
        for item in selection.items:
            name = labeling_name(selection.batch_id, item.item_id, extension_of(item.item_uri))
            if not self._objects.exists(LABELING_CONTAINER, name):
                self._objects.copy(item.item_uri, LABELING_CONTAINER, name)
        self._store.mark_handed_off(selection.batch_id)

    def _choose(self, now: datetime, strategy: str, k: int) -> SelectionResult:
        strategies.check_strategy(strategy)
        serving = self._store.serving_version(self._model_name)
        if serving is None:
            return SelectionResult(None, f"model {self._model_name!r} has no serving version")
        end = np.datetime64(now.astimezone(UTC).replace(tzinfo=None), "us")
        flt = CandidateFilter(self._model_name, serving.version, end - np.timedelta64(self._window), end)
        if strategy in RANKED_STRATEGIES:
            ranked = self._store.top_k(flt, strategy, k, self._seed)
            items = tuple(SelectedItem(r.item_id, r.item_uri, r.score, n) for n, r in enumerate(ranked))
        else:
            items = self._batch_aware(flt, strategy, k, serving.version, now)
        if not items:
            return SelectionResult(None, "no candidates (empty pool, or all selected or labeled)")
        reason = "ok" if len(items) == k else f"only {len(items)} candidates for k={k}"
        batch_id = _batch_id(now, strategy, serving.version, [i.item_id for i in items])
        return SelectionResult(
            Selection(batch_id, strategy, self._model_name, serving.version, now, items), reason
        )

    def _batch_aware(self, flt: CandidateFilter, strategy: str, k: int, version: str,
                     now: datetime) -> tuple[SelectedItem, ...]:
        spec = strategies.BATCH_STRATEGIES[strategy]
        cands = self._store.candidates(flt)
        if len(cands) == 0:
            return ()
        labeled = self._store.labeled_set(self._model_name, version)
        rng = np.random.default_rng([self._seed, int(now.timestamp())])
        idx, scores = spec.pick(cands, labeled, min(k, len(cands)), rng)
        return tuple(
            SelectedItem(str(cands.item_ids[i]), str(cands.item_uris[i]), float(s), n)
            for n, (i, s) in enumerate(zip(idx, scores, strict=True))
        )


def _batch_id(now: datetime, strategy: str, version: str, item_ids: list[str]) -> str:
    digest = hashlib.sha256("\n".join([strategy, version, *item_ids]).encode()).hexdigest()[:10]
    return f"{now.astimezone(UTC):%Y%m%dT%H%M%SZ}-{digest}"
