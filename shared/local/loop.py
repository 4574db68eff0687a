"""The loop of ``al label``: the embedded backend (DuckDB + a folder under the data dir) with a person
labeling in a local Label Studio instead of the simulation's oracle.

Round 0 has no model: a random batch is handed off (recorded as a selection of strategy ``random``,
tasks without predictions). The answers come back through the catch-up
(:meth:`AnnotationIntake.sync`, polled every few seconds: no webhook locally). Whenever another
``retrain_every`` labels are recorded, the local trainer trains from them, the gate decides, the
serving version scores every item, and the strategy picks the next batch, whose tasks carry the
model's guess as a pre-annotation. When the person has no open task left before that, another batch
is handed off by the model there is (random before the first one). Everything lives in the data dir,
so a restart resumes where the last run stopped.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np

from shared.adapters.label_studio import LabelStudioClient, LabelStudioTool, image_ref_for
from shared.backends import Backend
from shared.core.calibration import ACCURACY, TRAIN_ACCURACY
from shared.core.records import ModelVersion, SelectedItem, Selection
from shared.errors import TrainingError
from shared.local.items import Item, ItemSet
from shared.model.items import Featurizer
from shared.model.registry import LocalModelRegistry
from shared.model.scoring import score_items
from shared.model.trainer import EvaluationSet, LocalDeployer, LocalTrainer
from shared.services.annotations import AnnotationIntake
from shared.services.collect import CollectService
from shared.services.labels import LabelService
from shared.services.retrain import RetrainService
from shared.services.select import SelectService
from shared.settings import Settings

log = logging.getLogger(__name__)
SCORE_CHUNK = 500  # items scored and collected at once


@dataclass(frozen=True, slots=True)
class LoopOptions:
    batch: int = 20
    retrain_every: int = 20
    strategy: str = Settings.model_fields["strategy"].default
    poll_seconds: float = 3.0
    max_rounds: int | None = None  # stop after this many retrains (None: until Ctrl-C)
    once: bool = False  # one pass (catch up, retrain if due, hand off if nothing is open), then stop
    seed: int = 0


@dataclass(frozen=True, slots=True)
class Round:
    """One retrain: the candidate, what it was measured on, and the batch handed off after it."""

    version: str
    labels: int
    accuracy: float | None
    measured_on: str  # "held-out" (known classes) or "training" (the labels themselves)
    deployed: bool
    reason: str
    serving: str | None
    handed_off: int
    strategy: str


@dataclass(frozen=True, slots=True)
class Status:
    labels: int
    until_retrain: int
    open_tasks: int
    serving: str | None
    accuracy: float | None
    measured_on: str


def _chunks(items: Sequence[Item], n: int) -> Iterator[Sequence[Item]]:
    for start in range(0, len(items), n):
        yield items[start:start + n]


class LabelLoop:
    """The loop on ``ports`` (an embedded :class:`Backend`), ``items`` and one Label Studio project."""

    def __init__(self, ports: Backend, items: ItemSet, client: LabelStudioClient, project_id: int,
                 options: LoopOptions, *, say: Callable[[str], None] = print,
                 show: Callable[[Status], None] = lambda s: None) -> None:
        settings = ports.settings
        self.options = options
        self.items = items
        self.client = client
        self.project_id = project_id
        self._say = say
        self.show = show  # the status after every pass (the CLI's spinner line)
        self._model = settings.model_name
        self._classes = items.class_names
        self._tolerance = settings.gate_tolerance
        self.store = ports.store
        self.objects = ports.objects
        self.tool = LabelStudioTool(client, project_id=project_id, image_ref=image_ref_for(ports.labeling_objects))
        self.registry = LocalModelRegistry(self.objects)
        self.featurizer = Featurizer()
        self.labels = LabelService(self.store, model_name=self._model, class_names=lambda: self._classes,
                                   retrain_threshold=options.retrain_every)
        self.intake = AnnotationIntake(self.labels, self.store, self.objects, self.tool, project_id=project_id,
                                       reports_container=settings.quarantine_container,
                                       state_container=settings.retrain_state_container)
        self.collect = CollectService(self.store, self.objects, max_records=SCORE_CHUNK)
        self.window = timedelta(hours=settings.window_hours)
        self.select = SelectService(self.store, self.objects, model_name=self._model, strategy=options.strategy,
                                    batch_size=options.batch, window=self.window, seed=options.seed,
                                    lock=ports.selection_lock, labeling_container=settings.labeling_container,
                                    tool=self.tool)
        self._scored: tuple[str, float] | None = None  # (version, monotonic time) of the last scoring
        self._failed_at: int | None = None  # label count of a retrain that failed (not retried until more)
        self._exhausted = False
        self._held_out: EvaluationSet | None = None

    # --- what there is ----------------------------------------------------------------------------
    @property
    def measured_on(self) -> str:
        return "held-out" if self.items.held_out else "training"

    def accuracy_of(self, mv: ModelVersion | None) -> float | None:
        if mv is None:
            return None
        return mv.metrics.get(ACCURACY if self.items.held_out else TRAIN_ACCURACY)

    def open_tasks(self) -> int:
        """Tasks of the project the person has neither labeled nor skipped."""
        p = self.client.project(self.project_id)
        done = int(p.get("num_tasks_with_annotations") or 0) + int(p.get("skipped_annotations_number") or 0)
        return max(0, int(p.get("task_number") or 0) - done)

    def _last_attempt(self) -> int:
        """Labels the latest training saw (deployed or not), or a failed attempt's count."""
        trained = [mv.trained_on_labels for mv in self.store.list_model_versions(self._model)]
        return max([*trained, self._failed_at or 0])

    def status(self) -> Status:
        labels = self.store.count_labels()
        serving = self.store.serving_version(self._model)
        until = max(0, self.options.retrain_every - (labels - self._last_attempt()))
        return Status(labels, until, self.open_tasks(), serving.version if serving else None,
                      self.accuracy_of(serving), self.measured_on)

    # --- the loop ---------------------------------------------------------------------------------
    def run(self, stop: threading.Event | None = None) -> list[Round]:
        """Poll until ``max_rounds`` retrains are done, ``once`` is set, or ``stop`` is set (Ctrl-C:
        KeyboardInterrupt propagates; everything done so far is recorded)."""
        stop = stop or threading.Event()
        rounds: list[Round] = []
        resumed = self.select.resume()  # a hand-off an earlier run left half-done
        if resumed:
            self._say(f"finished handing off {len(resumed)} interrupted batch(es)")
        while not stop.is_set():
            done = self.step()
            if done is not None:
                rounds.append(done)
                self._say(self.describe(done))
            self.show(self.status())
            if self.options.once or (self.options.max_rounds is not None and len(rounds) >= self.options.max_rounds):
                break
            stop.wait(self.options.poll_seconds)
        return rounds

    def step(self) -> Round | None:
        """One pass: take the answers in, retrain when due, hand off when nothing is open."""
        # Open tasks counted before the answers are read: a task answered in between is then read
        # too (and may make a retrain due), never handed off again as if the person had run dry.
        nothing_open = self.open_tasks() == 0
        self.intake.sync()
        labels = self.store.count_labels()
        if labels and labels - self._last_attempt() >= self.options.retrain_every:
            return self.retrain(labels)
        if nothing_open:
            n, strategy = self.hand_off()
            if n:
                guess = "no model yet" if strategy == "random" else "with the model's guesses"
                self._say(f"{n} new tasks in Label Studio, picked by {strategy} ({guess})")
        return None

    def retrain(self, labels: int) -> Round | None:
        try:
            trainer = LocalTrainer(self.objects, self.registry, self.featurizer, self._evaluation(),
                                   model_name=self._model)
            service = RetrainService(self.store, trainer, LocalDeployer(self.store), model_name=self._model,
                                     tolerance=self._tolerance, objects=self.objects)
            outcome = service.retrain(class_names=self._classes)
        except TrainingError as exc:
            self._failed_at = labels
            self._say(f"training on {labels} labels failed: {exc}")
            return None
        serving = self.store.serving_version(self._model)
        handed, strategy = self.hand_off()
        cand = outcome.candidate
        return Round(cand.version, cand.trained_on_labels, self.accuracy_of(cand), self.measured_on,
                     outcome.deployed, outcome.decision.reason, serving.version if serving else None, handed, strategy)

    def describe(self, r: Round) -> str:
        acc = f"{self.measured_on} accuracy {r.accuracy:.1%}" if r.accuracy is not None else "no accuracy"
        verdict = "deployed" if r.deployed else f"not deployed ({r.reason}); v{r.serving} keeps serving"
        batch = (f"{r.handed_off} new tasks picked by {r.strategy}, with its guesses" if r.handed_off
                 else "no new tasks (every image is labeled or handed out)")
        return f"v{r.version}: trained on {r.labels} labels, {acc}, {verdict}; {batch}"

    # --- hand-offs --------------------------------------------------------------------------------
    def hand_off(self) -> tuple[int, str]:
        """Hand the next batch to Label Studio: chosen by the strategy from the serving model's scores,
        or at random while there is no model. (items handed off, strategy)."""
        serving = self.store.serving_version(self._model)
        if serving is None:
            n = self._hand_off_random()
            strategy = "random"
        else:
            self._score(serving)
            result = self.select.run(now=datetime.now(UTC))
            n = len(result.selection.items) if result.selection else 0
            strategy = result.selection.strategy if result.selection else self.options.strategy
        if n == 0 and not self._exhausted:
            self._say(f"every image is labeled or waiting in Label Studio ({len(self.items.pool)} in all)")
        self._exhausted = n == 0
        return n, strategy

    def _hand_off_random(self) -> int:
        pool = self.items.pool
        taken = self.store.is_selected([i.item_id for i in pool])
        free = [item for item, t in zip(pool, taken, strict=True) if not t]
        if not free:
            return 0
        rng = np.random.default_rng([self.options.seed, len(pool) - len(free)])
        picked = [free[i] for i in sorted(rng.choice(len(free), size=min(self.options.batch, len(free)),
                                                     replace=False))]
        now = datetime.now(UTC)
        digest = hashlib.sha256("\n".join(i.item_id for i in picked).encode()).hexdigest()[:10]
        selection = Selection(f"{now:%Y%m%dT%H%M%SZ}-random-{digest}", "random", self._model, "", now,
                              tuple(SelectedItem(i.item_id, i.uri, 0.0, n) for n, i in enumerate(picked)))
        self.store.record_selection(selection)
        self.select.hand_off(selection)
        return len(picked)

    def _score(self, serving: ModelVersion) -> None:
        """Every item of the pool scored by ``serving`` (the labeled ones too: their embeddings are
        what "labeled" looks like to the batch-aware strategies); again only for a new version, or
        when the last scores are about to leave the selection window."""
        if self._scored is not None and self._scored[0] == serving.version \
                and time.monotonic() - self._scored[1] < self.window.total_seconds() / 2:
            return
        scorer = self.registry.scorer(serving)
        now = datetime.now(UTC)
        for chunk in _chunks(self.items.pool, SCORE_CHUNK):
            uris = [i.uri for i in chunk]
            self.collect.collect(score_items(scorer, self.featurizer, serving, [i.item_id for i in chunk], uris,
                                             [self.objects.read(u) for u in uris], scored_at=now))
        self._scored = (serving.version, time.monotonic())

    def _evaluation(self) -> EvaluationSet:
        """What the gate measures each model on: the held-out items of known class, else the labels."""
        if self.items.held_out:
            if self._held_out is None:
                held = self.items.held_out
                self._held_out = EvaluationSet(self.featurizer.features([self.objects.read(i.uri) for i in held]),
                                               tuple(str(i.truth) for i in held))
            return self._held_out
        labels = self.store.list_labels()
        uris = self.store.selection_uris([lb.item_id for lb in labels])
        known = [lb for lb in labels if lb.item_id in uris]
        if not known:
            raise TrainingError("no labeled item to measure the model on")
        return EvaluationSet(self.featurizer.features([self.objects.read(uris[lb.item_id]) for lb in known]),
                             tuple(lb.label for lb in known))
