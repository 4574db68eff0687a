"""retrain: train from the serving checkpoint on every label, gate against the serving model,
deploy only when the gate passes, and record the outcome either way."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

from shared.core.gate import GateDecision, decide
from shared.core.records import ModelStatus, ModelVersion
from shared.errors import TrainingError
from shared.ports import Deployer, PredictionStore, Trainer, TrainingManifest

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RetrainOutcome:
    candidate: ModelVersion
    decision: GateDecision
    deployed: bool


class RetrainService:
    def __init__(
        self,
        store: PredictionStore,
        trainer: Trainer,
        deployer: Deployer,
        *,
        model_name: str,
        metric: str = "accuracy",
        tolerance: float = 0.0,
    ) -> None:
        self._store = store
        self._trainer = trainer
        self._deployer = deployer
        self._model_name = model_name
        self._metric = metric
        self._tolerance = tolerance

    def manifest(self, class_names: tuple[str, ...] | None = None) -> TrainingManifest:
        serving = self._store.serving_version(self._model_name)
        classes = class_names or (serving.class_names if serving else None)
        if not classes:
            raise TrainingError(f"model {self._model_name!r} has no serving version; give the class names")
        labels = self._store.list_labels()
        if not labels:
            raise TrainingError("there are no labels to train on")
        uris = self._store.selection_uris([lb.item_id for lb in labels])
        missing = [lb.item_id for lb in labels if lb.item_id not in uris]
        if missing:
            raise TrainingError(f"{len(missing)} labeled items have no item URI (e.g. {missing[0]!r})")
        return TrainingManifest(
            item_ids=tuple(lb.item_id for lb in labels),
            item_uris=tuple(uris[lb.item_id] for lb in labels),
            labels=tuple(lb.label for lb in labels),
            class_names=tuple(classes),
        )

    def retrain(self, class_names: tuple[str, ...] | None = None) -> RetrainOutcome:
        serving = self._store.serving_version(self._model_name)
        manifest = self.manifest(class_names)
        trained = self._trainer.train(manifest, serving, metric=self._metric)
        decision = decide(trained.metric, trained.baseline_metric, tolerance=self._tolerance)
        if decision.passed:
            self._store.upsert_model_version(trained.model)
            self._deployer.deploy(trained.model)
        else:
            self._store.upsert_model_version(replace(trained.model, status=ModelStatus.REJECTED))
        log.info("model %s v%s: %s (%s)", trained.model.name, trained.model.version,
                 "deployed" if decision.passed else "rejected", decision.reason)
        return RetrainOutcome(trained.model, decision, decision.passed)
