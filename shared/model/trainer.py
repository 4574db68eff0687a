"""The in-process trainer and deployer of the embedded loop (Azure ML takes this role in Azure)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime

import numpy as np

from shared.core.calibration import ACCURACY, CONFIDENCE, TRAIN_ACCURACY, mean_confidence
from shared.core.records import ModelStatus, ModelVersion
from shared.errors import TrainingError
from shared.model.embedding import EMBEDDING_WIDTH
from shared.model.head import HeadWeights, accuracy, predict_proba, to_onnx, train_head
from shared.model.items import Featurizer
from shared.model.registry import LocalModelRegistry
from shared.ports import ObjectStore, PredictionStore, TrainedCandidate, TrainingManifest


@dataclass(frozen=True)
class EvaluationSet:
    """Labeled items the gate measures every candidate and the serving model on (never trained on)."""

    features: np.ndarray
    labels: tuple[str, ...]


class LocalTrainer:
    """:class:`shared.ports.Trainer`: features -> logistic head warm-started from the serving model."""

    def __init__(
        self,
        objects: ObjectStore,
        registry: LocalModelRegistry,
        featurizer: Featurizer,
        evaluation: EvaluationSet,
        *,
        model_name: str,
        c: float = 100.0,
        embedding_width: int | None = EMBEDDING_WIDTH,
    ) -> None:
        self._objects = objects
        self._registry = registry
        self._featurizer = featurizer
        self._evaluation = evaluation
        self._model_name = model_name
        self._c = c
        self._embedding_width = embedding_width

    def train(
        self, manifest: TrainingManifest, base: ModelVersion | None, *, metric: str = "accuracy"
    ) -> TrainedCandidate:
        if metric != "accuracy":
            raise TrainingError(f"the local trainer measures 'accuracy', not {metric!r}")
        classes = manifest.class_names
        index = {c: i for i, c in enumerate(classes)}
        unknown = sorted({lb for lb in manifest.labels if lb not in index})
        if unknown:
            raise TrainingError(f"labels outside the model's classes: {unknown[:5]}")
        feats = self._featurizer.features([self._objects.read(u) for u in manifest.item_uris])
        targets = np.array([index[lb] for lb in manifest.labels])
        base_weights = self._registry.weights(base) if base is not None else None
        weights = train_head(feats, targets, len(classes), base=base_weights, c=self._c,
                             embedding_width=self._embedding_width)
        acc, confidence = self._measure(weights, classes)
        train_acc = accuracy(weights, feats, targets)
        baseline = self._measure(base_weights, base.class_names)[0] if base_weights is not None and base else None
        mv = ModelVersion(
            name=self._model_name,
            version=self._registry.next_version(self._model_name),
            class_names=classes,
            metrics={ACCURACY: acc, CONFIDENCE: confidence, TRAIN_ACCURACY: train_acc},
            status=ModelStatus.CANDIDATE,
            created_at=datetime.now(UTC),
            trained_on_labels=len(manifest.labels),
        )
        uri = self._registry.register(mv, to_onnx(weights), weights)
        mv = replace(mv, artifact_uri=uri)
        return TrainedCandidate(mv, acc, baseline)

    def _measure(self, weights: HeadWeights, classes: tuple[str, ...]) -> tuple[float, float]:
        """Accuracy and confidence (mean top-class probability) on the evaluation set."""
        ev = self._evaluation
        if len(ev.labels) == 0:
            raise TrainingError("the evaluation set is empty")
        proba = predict_proba(weights, ev.features)
        predicted = np.asarray(classes)[proba.argmax(axis=1)]
        return float(np.mean(predicted == np.asarray(ev.labels))), mean_confidence(proba)


class LocalDeployer:
    """:class:`shared.ports.Deployer`: marks the version serving (the scorer loads it from the registry)."""

    def __init__(self, store: PredictionStore) -> None:
        self._store = store

    def deploy(self, model: ModelVersion) -> None:
        self._store.upsert_model_version(replace(model, status=ModelStatus.SERVING))

