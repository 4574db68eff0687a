"""Scoring: item bytes -> features -> ONNX probabilities -> scoring-result records.

The Azure ML scoring script and the simulation both call :func:`score_items`, so the simulated
loop sends the collector exactly what the endpoint sends in production.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import numpy as np

from shared.core.records import ModelVersion
from shared.model.items import Featurizer
from shared.model.registry import OnnxScorer


def score_items(
    scorer: OnnxScorer,
    featurizer: Featurizer,
    model: ModelVersion,
    item_ids: Sequence[str],
    item_uris: Sequence[str],
    item_bytes: Sequence[bytes],
    *,
    scored_at: datetime,
    embeddings: bool = True,
) -> list[dict[str, object]]:
    """Scoring-result records (the collector's payload schema) for a batch of items; with
    ``embeddings`` each carries the model's compact embedding (``shared/model/embedding.py``)."""
    features = featurizer.features(item_bytes)
    proba, embedding = scorer.predict(features)
    proba = proba.astype(np.float64)
    proba /= proba.sum(axis=1, keepdims=True)  # float32 softmax sums can drift by ~1e-7
    classes = model.class_names
    predicted = proba.argmax(axis=1)
    stamp = scored_at.isoformat()
    records: list[dict[str, object]] = []
    for i, item_id in enumerate(item_ids):
        record: dict[str, object] = {
            "item_id": item_id,
            "item_uri": item_uris[i],
            "model_name": model.name,
            "model_version": model.version,
            "probabilities": proba[i].tolist(),
            "predicted_label": classes[predicted[i]],
            "scored_at": stamp,
        }
        if embeddings:
            record["embedding"] = embedding[i].tolist()
        records.append(record)
    return records
