"""Domain records shared by every stage. Plain frozen dataclasses: no I/O, no SDK types."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

import numpy as np


class ModelStatus(StrEnum):
    CANDIDATE = "candidate"
    SERVING = "serving"
    REJECTED = "rejected"
    RETIRED = "retired"


@dataclass(frozen=True, slots=True)
class ModelVersion:
    """A trained model: its classes (the order of every probability vector it emits) and metrics."""

    name: str
    version: str
    class_names: tuple[str, ...]
    metrics: Mapping[str, float] = field(default_factory=dict)
    artifact_uri: str = ""
    status: ModelStatus = ModelStatus.CANDIDATE
    created_at: datetime | None = None
    trained_on_labels: int = 0


@dataclass(frozen=True, slots=True)
class PredictionBatch:
    """Scoring results in columns: row ``i`` of every field belongs to one prediction.

    ``probabilities`` is (n, classes) in the model version's class order; ``embeddings`` is
    optional (n, d). Columns, not a list of objects, because batches reach millions of rows.
    """

    prediction_ids: tuple[str, ...]
    item_ids: tuple[str, ...]
    item_uris: tuple[str, ...]
    model_name: tuple[str, ...]
    model_version: tuple[str, ...]
    predicted_labels: tuple[str, ...]
    scored_at: np.ndarray  # datetime64[us], UTC
    probabilities: np.ndarray  # float32 (n, c)
    embeddings: np.ndarray | None = None  # float32 (n, d)

    def __post_init__(self) -> None:
        n = len(self.prediction_ids)
        columns = (self.item_ids, self.item_uris, self.model_name, self.model_version,
                   self.predicted_labels, self.scored_at, self.probabilities)
        if any(len(c) != n for c in columns):
            raise ValueError("every column of a PredictionBatch must have the same length")
        if self.embeddings is not None and len(self.embeddings) != n:
            raise ValueError("embeddings must have one row per prediction")

    def __len__(self) -> int:
        return len(self.prediction_ids)


@dataclass(frozen=True, slots=True)
class SelectedItem:
    item_id: str
    item_uri: str
    score: float
    rank: int


@dataclass(frozen=True, slots=True)
class Selection:
    """One batch handed to labeling: what was picked, by which strategy, from which model."""

    batch_id: str
    strategy: str
    model_name: str
    model_version: str
    selected_at: datetime
    items: tuple[SelectedItem, ...]


@dataclass(frozen=True, slots=True)
class Label:
    """One human (or oracle) answer for an item, traceable to the export it came from."""

    item_id: str
    label: str
    export_id: str
    export_sha256: str
    labeled_at: datetime | None = None
