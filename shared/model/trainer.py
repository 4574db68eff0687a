"""The in-process trainer and deployer of the embedded loop (Azure ML takes this role in Azure)."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlparse

import numpy as np

from shared.core.calibration import ACCURACY, CONFIDENCE, TRAIN_ACCURACY, mean_confidence
from shared.core.records import ModelStatus, ModelVersion
from shared.errors import ConfigurationError, NotFoundError, TrainingError
from shared.model.embedding import EMBEDDING_WIDTH
from shared.model.head import HeadWeights, accuracy, predict_proba, to_onnx, train_head
from shared.model.items import Featurizer
from shared.model.registry import CONTAINER, LocalModelRegistry
from shared.ports import ObjectStore, PredictionStore, TrainedCandidate, TrainingManifest
from shared.training.contract import (
    DEFAULT_COMMAND,
    META_FILE,
    MODEL_FILE,
    TrainingCallable,
    check_model_folder,
    command_problem,
    run_training,
    write_manifest,
)

ITEMS_DATASTORE = "items"  # the datastore name of the embedded items mount's azureml:// URLs


@dataclass(frozen=True)
class EvaluationSet:
    """Labeled items the gate measures every candidate and the serving model on (never trained on)."""

    features: np.ndarray
    labels: tuple[str, ...]


def configured_command() -> str:
    """``AL_TRAINING_COMMAND`` (default: the project's trainer), checked as :class:`shared.settings.Settings`
    checks it. Only that setting is read: a problem in another one is not this trainer's to report."""
    raw = os.environ.get("AL_TRAINING_COMMAND")
    if raw is None:
        return DEFAULT_COMMAND
    why = command_problem(raw)
    if why:
        raise ConfigurationError(f"setting AL_TRAINING_COMMAND is invalid: {why} (got {raw!r})")
    return raw.strip()


class LocalTrainer:
    """:class:`shared.ports.Trainer`: features -> logistic head warm-started from the serving model.

    ``command`` swaps the training step (docs/your-model.md): a command line (default: the setting
    ``AL_TRAINING_COMMAND``) or a callable with the signature of :func:`shared.training.train.train`. The
    project's own command, ``python -m shared.training.train``, runs in-process on the gate's evaluation
    set; any other runs through the contract: the manifest, the serving version's folder as the checkpoint
    and the items under a mount in a temporary folder, its output folder checked by
    :func:`shared.training.contract.check_model_folder` and registered as it is, its ``metrics.json``
    the candidate's figures.
    """

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
        command: str | TrainingCallable | None = None,
        timeout_s: float | None = None,
    ) -> None:
        if command is None:
            command = configured_command()
        self._command = None if isinstance(command, str) and command.strip() == DEFAULT_COMMAND else command
        self._timeout_s = timeout_s
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
        if self._command is not None:
            return self._train_with(self._command, manifest, base, metric=metric)
        if metric != "accuracy":
            raise TrainingError(f"the local trainer measures 'accuracy', not {metric!r}")
        classes = manifest.class_names
        index = {c: i for i, c in enumerate(classes)}
        unknown = sorted({lb for lb in manifest.labels if lb not in index})
        if unknown:
            raise TrainingError(f"labels outside the model's classes: {unknown[:5]}")
        feats = self._featurizer.features([self._objects.read(u) for u in manifest.item_uris])
        targets = np.array([index[lb] for lb in manifest.labels])
        base_weights = self._base_weights(base)
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

    def _base_weights(self, base: ModelVersion | None) -> HeadWeights | None:
        """The serving head, or None (no serving version, or one another trainer made: no head.npz)."""
        if base is None:
            return None
        try:
            return self._registry.weights(base)
        except NotFoundError:
            return None

    def _train_with(self, step: str | TrainingCallable, manifest: TrainingManifest, base: ModelVersion | None,
                    *, metric: str) -> TrainedCandidate:
        classes = manifest.class_names
        with tempfile.TemporaryDirectory(prefix="al-train-") as tmp:
            root = Path(tmp)
            items, checkpoint, out = root / "items", root / "checkpoint", root / "out"
            for folder in (items, checkpoint):
                folder.mkdir()
            rows = []
            for n, (item_id, uri, label) in enumerate(
                    zip(manifest.item_ids, manifest.item_uris, manifest.labels, strict=True)):
                name = f"{n:06d}{PurePosixPath(unquote(urlparse(uri).path)).suffix}"
                (items / name).write_bytes(self._objects.read(uri))
                rows.append((item_id, f"azureml://datastores/{ITEMS_DATASTORE}/paths/{name}", label))
            write_manifest(root / "manifest.jsonl", rows)
            if base is not None:
                self._download(base, checkpoint)
            run_training(step, manifest=root / "manifest.jsonl", out=out, class_names=classes,
                         checkpoint=checkpoint, items=items, metric=metric, timeout_s=self._timeout_s)
            width = self._evaluation.features.shape[1] if self._evaluation.features.ndim == 2 else None
            produced = check_model_folder(out, class_names=classes, metric=metric, feature_dim=width or None)
            figures = {metric: produced.metric(metric), CONFIDENCE: produced.metric(CONFIDENCE),
                       TRAIN_ACCURACY: produced.metric(TRAIN_ACCURACY)}
            mv = ModelVersion(
                name=self._model_name, version=self._registry.next_version(self._model_name),
                class_names=classes, metrics=figures, status=ModelStatus.CANDIDATE,
                created_at=datetime.now(UTC), trained_on_labels=len(manifest.labels),
            )
            uri = self._upload(mv, out)
        return TrainedCandidate(replace(mv, artifact_uri=uri), figures[metric], produced.baseline(metric))

    def _download(self, mv: ModelVersion, folder: Path) -> None:
        """The version's registry folder, every file, as the checkpoint folder."""
        prefix = f"{mv.name}/{mv.version}/"
        for name in self._objects.list(CONTAINER, prefix):
            path = folder / name.removeprefix(prefix)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(self._objects.get(CONTAINER, name))

    def _upload(self, mv: ModelVersion, folder: Path) -> str:
        """Every file of the produced folder into the registry's layout; meta.json gains the metrics."""
        prefix = f"{mv.name}/{mv.version}"
        for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name not in (MODEL_FILE, META_FILE)):
            self._objects.put(CONTAINER, f"{prefix}/{path.relative_to(folder).as_posix()}", path.read_bytes(),
                              overwrite=True)
        meta = {**json.loads((folder / META_FILE).read_text()), "class_names": list(mv.class_names),
                "metrics": dict(mv.metrics)}
        self._objects.put(CONTAINER, f"{prefix}/{META_FILE}", json.dumps(meta).encode(), overwrite=True)
        return self._objects.put(CONTAINER, f"{prefix}/{MODEL_FILE}", (folder / MODEL_FILE).read_bytes(),
                                 overwrite=True)

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

