"""select: pick the candidates the serving model is least sure about and hand them to labeling.

The hand-off of a batch: record the selection, copy each item into the labeling store (the labeling
account that Label Studio reads, in Azure), create one labeling task per item (the item id, the
batch, the uncertainty score, the serving model's guess as a pre-annotation: :class:`LabelingTool`),
then mark the batch handed off. The selection is recorded before anything is copied, so a run that
dies (or finds Label Studio down) mid-hand-off is finished by the next run: same batch, same names,
and the tool creates only the tasks that are missing; recorded items are never candidates again.
A run holds a lock (a blob lease in Azure, a file lock embedded) from resume to hand-off, so two
overlapping runs never pick the same item. A label budget (per UTC day, in total) caps the batch,
counted from the labeling input folder itself; an optional stopping rule skips a batch the model is
already sure about (docs/selection.md). Before it copies an item, the item URI is checked again
against the item URI policy (:mod:`shared.core.item_uris`): an item whose URI is refused is skipped,
logged and reported in the result, so a row stored before the collector checked URIs cannot make
the selector fetch an arbitrary URL.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import numpy as np

from shared.core import strategies
from shared.core.calibration import Calibration
from shared.core.item_uris import ItemUriPolicy, item_uri_problem
from shared.core.naming import extension_of, labeling_name
from shared.core.records import LabelingTask, ModelVersion, SelectedItem, Selection
from shared.core.selection import CandidateFilter
from shared.core.uncertainty import RANKED_STRATEGIES, margin
from shared.errors import SelectionError
from shared.ports import LabelingTool, ObjectStore, PredictionStore

if TYPE_CHECKING:
    from shared.adapters.selection_lock import SelectionLock

log = logging.getLogger(__name__)
LABELING_CONTAINER = "labeling-input"


@dataclass(frozen=True, slots=True)
class RefusedItem:
    """A selected item that was not copied to labeling because its URI is not trusted."""

    batch_id: str
    item_id: str
    item_uri: str
    reason: str


@dataclass(frozen=True, slots=True)
class SelectionResult:
    """``status``: selected, preview, empty (no model or no candidates), busy, budget or stopped.
    ``refused``: items of this run's hand-offs (new or resumed) skipped for their URI."""

    selection: Selection | None
    reason: str
    resumed: tuple[str, ...] = ()
    status: str = ""
    uncertainty: float | None = None
    refused: tuple[RefusedItem, ...] = ()


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
        lock: SelectionLock | None = None,
        labeling_container: str = LABELING_CONTAINER,
        labels_per_day: int | None = None,
        labels_total: int | None = None,
        stop_uncertainty_below: float | None = None,
        allowed_item_hosts: Sequence[str] = (),
        labeling_objects: ObjectStore | None = None,
        tool: LabelingTool | None = None,
    ) -> None:
        """``allowed_item_hosts``: blob hosts an ``https://`` item URI may name besides the object
        store's own roots; any other item is not copied (:mod:`shared.core.item_uris`).
        ``labeling_objects``: where the items under labeling are copied (default ``objects``);
        ``tool``: the labeling tool given one task per item (None: the copy is the hand-off, as in
        the simulation, whose oracle reads the labeling folder)."""
        self.item_uris = ItemUriPolicy.of(https_hosts=allowed_item_hosts, roots=objects.uri_roots())
        self._lock = lock
        self._container = labeling_container
        self._per_day = labels_per_day
        self._total = labels_total
        self._stop_below = stop_uncertainty_below
        self._store = store
        self._objects = objects
        self._labeling_store = labeling_objects
        self._tool = tool
        self._model_name = model_name
        self._strategy = strategies.check_strategy(strategy)
        self._batch_size = batch_size
        self._window = window
        self._seed = seed

    @property
    def _labeling(self) -> ObjectStore:
        return self._labeling_store or self._objects

    def preview(self, *, now: datetime | None = None, strategy: str | None = None,
                k: int | None = None) -> SelectionResult:
        """What a run would pick now; nothing is recorded or copied (no lock, no budget)."""
        result = self._choose(now or datetime.now(UTC), strategy or self._strategy, k or self._batch_size)
        status = "preview" if result.selection is not None else "empty"
        return SelectionResult(result.selection, result.reason, (), status, result.uncertainty)

    def run(self, *, now: datetime | None = None, strategy: str | None = None,
            k: int | None = None) -> SelectionResult:
        """Under the lock: finish interrupted hand-offs, then select, record and hand a new batch to
        labeling. A busy lock, an empty pool, a spent budget or the stopping rule end it cleanly."""
        from shared.adapters.selection_lock import LockBusyError

        if strategy is not None:
            strategies.check_strategy(strategy)
        if k is not None and k < 1:
            raise SelectionError(f"k must be at least 1, got {k}")
        try:
            with self._hold():
                return self._run_locked(now or datetime.now(UTC), strategy or self._strategy, k or self._batch_size)
        except LockBusyError as exc:
            log.info("selection: skipped, %s", exc)
            return SelectionResult(None, str(exc), (), "busy")

    def _hold(self) -> AbstractContextManager[None]:
        return self._lock.hold() if self._lock is not None else nullcontext()

    def _run_locked(self, now: datetime, strategy: str, k: int) -> SelectionResult:
        resumed, refused = self._resume()
        left = self.budget_left(now)
        if left is not None and left <= 0:
            log.info("selection: label budget spent (per day %s, total %s)", self._per_day, self._total)
            return SelectionResult(None, "label budget spent", resumed, "budget", refused=refused)
        result = self._choose(now, strategy, k if left is None else min(k, left))
        if result.selection is None:
            log.info("selection: nothing selected (%s)", result.reason)
            return SelectionResult(None, result.reason, resumed, "empty", refused=refused)
        if (self._stop_below is not None and result.uncertainty is not None
                and result.uncertainty < self._stop_below):
            reason = (f"stopping rule: mean uncertainty {result.uncertainty:.4f} of the batch is under "
                      f"{self._stop_below}")
            log.info("selection: %s; nothing recorded", reason)
            return SelectionResult(None, reason, resumed, "stopped", result.uncertainty, refused)
        self._store.record_selection(result.selection)
        refused += tuple(self.hand_off(result.selection))
        log.info("selection %s: %d items by %s", result.selection.batch_id,
                 len(result.selection.items), result.selection.strategy)
        return SelectionResult(result.selection, result.reason, resumed, "selected", result.uncertainty, refused)

    def budget_left(self, now: datetime) -> int | None:
        """Items that may still go to labeling now (None: no cap), counted from the labeling folder,
        where every handed-off item lies under ``<batch id>/`` and batch ids start with the UTC date."""
        if self._per_day is None and self._total is None:
            return None
        left: list[int] = []
        if self._total is not None:
            left.append(self._total - len(self._labeling.list(self._container)))
        if self._per_day is not None:
            today = now.astimezone(UTC).strftime("%Y%m%dT")
            left.append(self._per_day - len(self._labeling.list(self._container, today)))
        return max(0, min(left))

    def resume(self) -> list[str]:
        return list(self._resume()[0])

    def _resume(self) -> tuple[tuple[str, ...], tuple[RefusedItem, ...]]:
        done, refused = [], []
        for selection in self._store.pending_handoffs():
            log.warning("selection %s was not fully handed off; finishing it", selection.batch_id)
            refused += self.hand_off(selection)
            done.append(selection.batch_id)
        return tuple(done), tuple(refused)

    def hand_off(self, selection: Selection) -> list[RefusedItem]:
        """Copy every item of a recorded selection to the labeling store and give the labeling tool
        one task per item (both idempotent), then mark the batch handed off. An item whose URI the
        policy refuses is not fetched: it is skipped, logged and returned. If the tool is down the
        error propagates and the batch stays pending: the next run finishes it."""
        refused, tasks = [], []
        for item in selection.items:
            why = item_uri_problem(item.item_uri, self.item_uris)
            if why:
                log.warning("selection %s: item %r not copied to labeling, its URI %r is refused: %s",
                            selection.batch_id, item.item_id, item.item_uri[:200], why)
                refused.append(RefusedItem(selection.batch_id, item.item_id, item.item_uri, why))
                continue
            name = labeling_name(selection.batch_id, item.item_id, extension_of(item.item_uri))
            if self._labeling is self._objects:
                if not self._objects.exists(self._container, name):
                    self._objects.copy(item.item_uri, self._container, name)
            elif not self._labeling.exists(self._container, name):  # another account: read, then write
                self._labeling.put(self._container, name, self._objects.read(item.item_uri))
            tasks.append(LabelingTask(item.item_id, selection.batch_id, self._container, name, item.score, item.rank,
                                      selection.model_version))
        if self._tool is not None and tasks:
            guesses = self._store.prediction_guesses(selection.model_name, selection.model_version,
                                                     [t.item_id for t in tasks])
            tasks = [replace(t, predicted_label=guesses[t.item_id][0], confidence=guesses[t.item_id][1])
                     if t.item_id in guesses else t for t in tasks]
            self._tool.create_tasks(selection.batch_id, tasks)
        self._store.mark_handed_off(selection.batch_id)
        return refused

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
            level = batch_uncertainty(strategy, [i.score for i in items], len(serving.class_names))
        else:
            items, level = self._batch_aware(flt, strategy, k, serving, now)
        if not items:
            return SelectionResult(None, "no candidates (empty pool, or all selected or labeled)")
        reason = "ok" if len(items) == k else f"only {len(items)} candidates for k={k}"
        batch_id = _batch_id(now, strategy, serving.version, [i.item_id for i in items])
        return SelectionResult(
            Selection(batch_id, strategy, self._model_name, serving.version, now, items), reason,
            uncertainty=level,
        )

    def _batch_aware(self, flt: CandidateFilter, strategy: str, k: int, serving: ModelVersion,
                     now: datetime) -> tuple[tuple[SelectedItem, ...], float | None]:
        spec = strategies.BATCH_STRATEGIES[strategy]
        cands = self._store.candidates(flt, limit=spec.shortlist(k))
        if len(cands) == 0:
            return (), None
        cands = replace(cands, calibration=Calibration.from_metrics(serving.metrics))
        labeled = self._store.labeled_set(self._model_name, serving.version)
        rng = selection_rng(self._seed, serving.version, cands.item_ids)
        idx, scores = spec.pick(cands, labeled, min(k, len(cands)), rng)
        items = tuple(
            SelectedItem(str(cands.item_ids[i]), str(cands.item_uris[i]), float(s), n)
            for n, (i, s) in enumerate(zip(idx, scores, strict=True))
        )
        level = float(np.mean(1.0 - margin(cands.probabilities[idx]))) if len(idx) else None
        return items, level


def selection_rng(seed: int, version: str, item_ids: Sequence[str] | np.ndarray) -> np.random.Generator:
    """The random generator of a batch-aware selection (BADGE's sampling, the default's when the model
    is overconfident), seeded by the service's seed, the serving version and the candidates: the same
    inputs pick the same batch whatever the clock says (a retried selection, a replayed test)."""
    digest = hashlib.sha256("\n".join([version, *map(str, item_ids)]).encode()).digest()
    return np.random.default_rng([seed, *np.frombuffer(digest[:16], dtype=np.uint32).tolist()])


def batch_uncertainty(strategy: str, scores: list[float], classes: int) -> float | None:
    """The mean uncertainty of a batch on a 0..1 scale (1 = as unsure as possible), for the stopping
    rule: 1 - margin for margin, least confidence / (1 - 1/C), entropy / ln C; random has none."""
    if not scores or strategy == "random":
        return None
    s = np.asarray(scores, dtype=np.float64)
    if strategy == "margin":
        return float(np.mean(1.0 - s))
    if classes < 2:
        return None
    if strategy == "least_confidence":
        return float(np.mean(s) / (1.0 - 1.0 / classes))
    if strategy == "entropy":
        return float(np.mean(s) / math.log(classes))
    return None


def _batch_id(now: datetime, strategy: str, version: str, item_ids: list[str]) -> str:
    digest = hashlib.sha256("\n".join([strategy, version, *item_ids]).encode()).hexdigest()[:10]
    return f"{now.astimezone(UTC):%Y%m%dT%H%M%SZ}-{digest}"
