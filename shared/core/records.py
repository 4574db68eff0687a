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
    """One human (or oracle) answer for an item, traceable to where it came from (``export_id``: the
    export file, or the Label Studio delivery; ``export_sha256``: the content it was read from).

    ``answer_id`` names the answer across its versions (a Label Studio annotation, or ``export``);
    ``retracted``: the answer was withdrawn (annotation deleted or skipped). Which row is an item's
    current label: :mod:`shared.core.answers`."""

    item_id: str
    label: str
    export_id: str
    export_sha256: str
    labeled_at: datetime | None = None
    answer_id: str = "export"
    retracted: bool = False
    recorded_at: datetime | None = None  # set by the store when read back


@dataclass(frozen=True, slots=True)
class LabelingTask:
    """One selected item as the labeling tool gets it: where its copy lies for the labeler
    (``container``/``name`` in the labeling store), the selection it came from with the strategy's
    uncertainty score and rank, and the serving model's guess (top class and its probability)."""

    item_id: str
    batch_id: str
    container: str
    name: str
    score: float
    rank: int
    model_version: str
    predicted_label: str | None = None
    confidence: float | None = None
