"""The local model registry: one folder per model version (ONNX model, head weights, metadata)."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort

from shared.core.records import ModelVersion
from shared.model.head import HeadWeights
from shared.ports import ObjectStore

CONTAINER = "models"


class OnnxScorer:
    """Scores feature rows with the ONNX model of one version (one session, reused)."""

    def __init__(self, onnx_bytes: bytes, class_names: tuple[str, ...]) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self._session = ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
        self.class_names = class_names
        self.has_embedding = "embedding" in {o.name for o in self._session.get_outputs()}

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        out = self._session.run(["probabilities"], {"features": np.asarray(features, np.float32)})
        return np.asarray(out[0], dtype=np.float32)

    def predict(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities, embedding): the model's compact embedding, or the features themselves for
        a model without one (versions made before the projection existed)."""
        x = np.asarray(features, np.float32)
        if not self.has_embedding:
            return self.predict_proba(x), x
        proba, emb = self._session.run(["probabilities", "embedding"], {"features": x})
        return np.asarray(proba, dtype=np.float32), np.asarray(emb, dtype=np.float32)


class LocalModelRegistry:
    """Model versions as objects under ``models/<name>/<version>/`` of an object store."""

    def __init__(self, objects: ObjectStore) -> None:
        self._objects = objects
        self._scorers: dict[tuple[str, str], OnnxScorer] = {}

    def next_version(self, name: str) -> str:
        versions = {n.split("/")[1] for n in self._objects.list(CONTAINER, f"{name}/")}
        numbers = [int(v) for v in versions if v.isdigit()]
        return str(max(numbers, default=0) + 1)

    def register(self, mv: ModelVersion, onnx_bytes: bytes, weights: HeadWeights) -> str:
        prefix = f"{mv.name}/{mv.version}"
        self._objects.put(CONTAINER, f"{prefix}/head.npz", weights.to_bytes(), overwrite=True)
        meta = {"class_names": list(mv.class_names), "metrics": dict(mv.metrics)}
        self._objects.put(CONTAINER, f"{prefix}/meta.json", json.dumps(meta).encode(), overwrite=True)
        return self._objects.put(CONTAINER, f"{prefix}/model.onnx", onnx_bytes, overwrite=True)

    def weights(self, mv: ModelVersion) -> HeadWeights:
        return HeadWeights.from_bytes(self._objects.get(CONTAINER, f"{mv.name}/{mv.version}/head.npz"))

    def scorer(self, mv: ModelVersion) -> OnnxScorer:
        key = (mv.name, mv.version)
        if key not in self._scorers:
            onnx_bytes = self._objects.get(CONTAINER, f"{mv.name}/{mv.version}/model.onnx")
            self._scorers[key] = OnnxScorer(onnx_bytes, mv.class_names)
        return self._scorers[key]
