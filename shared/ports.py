"""Ports: what the services need from the outside world, as structural types.

Adapters live in :mod:`shared.adapters` (embedded: DuckDB, local folders, in-process trainer) and,
for Azure, beside them. Services receive ports; clients are built once per process.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import numpy as np

from shared.core.calibration import Calibration
from shared.core.records import Label, LabelingTask, ModelVersion, PredictionBatch, Selection
from shared.core.selection import CandidateFilter, Ranked


@dataclass(frozen=True, slots=True)
class CandidateSet:
    """Every candidate of a selection (contract of :mod:`shared.core.selection`), sorted by item id."""

    item_ids: np.ndarray  # str (n,)
    item_uris: np.ndarray  # str (n,)
    probabilities: np.ndarray  # float32 (n, c)
    embeddings: np.ndarray | None  # float32 (n, d)
    # The scoring model's accuracy and confidence on its held-out labels and its training accuracy
    # (None: not recorded); the select service sets it from the serving version's metrics.
    calibration: Calibration | None = None

    def __len__(self) -> int:
        return len(self.item_ids)


@dataclass(frozen=True, slots=True)
class LabeledSet:
    """Labeled items with their most recent embedding, for strategies that need them.

    ``embeddings`` is None when no labeled item has one; otherwise rows of items without one are NaN.
    """

    item_ids: np.ndarray
    labels: np.ndarray
    embeddings: np.ndarray | None


class PredictionStore(Protocol):
    """Tables for predictions, selections, labels and model versions, and selection queries."""

    def add_predictions(self, batch: PredictionBatch) -> int:
        """Store a batch; return how many rows were new (a known prediction id is a duplicate)."""
        ...

    def top_k(self, flt: CandidateFilter, strategy: str, k: int, seed: int = 0) -> list[Ranked]:
        """A ranked strategy's top ``k`` candidates, computed by the backend's own query language."""
        ...

    def candidates(self, flt: CandidateFilter, limit: int | None = None) -> CandidateSet:
        """Candidates with their probabilities (and embeddings), for batch-aware strategies: all of
        them, or the ``limit`` most uncertain by margin (ties by item id) — a shortlist that keeps a
        selection over millions of stored predictions bounded in memory."""
        ...

    def labeled_set(self, model_name: str, model_version: str) -> LabeledSet: ...

    def embedding_dim(self, model_name: str, model_version: str) -> int | None:
        """The length of the version's stored embeddings; None while none is stored."""
        ...

    def record_selection(self, selection: Selection) -> None: ...

    def pending_handoffs(self) -> list[Selection]:
        """Selections recorded but not yet fully handed to labeling (a crash in between)."""
        ...

    def mark_handed_off(self, batch_id: str) -> None: ...

    def add_labels(self, labels: Sequence[Label]) -> int:
        """Record answers, except those that change nothing (:func:`shared.core.answers.to_record`: a
        repeated webhook, catch-up or cumulative export records nothing twice); return how many."""
        ...

    def list_labels(self) -> list[Label]:
        """The current label of every labeled item (:mod:`shared.core.answers`)."""
        ...

    def answer_items(self, answer_ids: Sequence[str]) -> dict[str, str]:
        """The item each recorded answer is about (answer id -> item id)."""
        ...

    def prediction_guesses(self, model_name: str, model_version: str,
                           item_ids: Sequence[str]) -> dict[str, tuple[str, float]]:
        """The version's latest guess per item: (top class, its probability)."""
        ...

    def awaiting_labels(self) -> int:
        """Items handed off to labeling that have no label yet."""
        ...

    def count_labels(self) -> int: ...

    def is_selected(self, item_ids: Sequence[str]) -> np.ndarray: ...

    def handed_out(self, item_ids: Sequence[str]) -> dict[str, list[tuple[str, str]]]:
        """For each given item handed off to labeling: its (batch id, item URI) pairs."""
        ...

    def selection_uris(self, item_ids: Sequence[str]) -> dict[str, str]:
        """The item URI each selected item was handed to labeling with."""
        ...

    def upsert_model_version(self, mv: ModelVersion) -> None: ...

    def get_model_version(self, name: str, version: str) -> ModelVersion: ...

    def serving_version(self, name: str) -> ModelVersion | None: ...

    def list_model_versions(self, name: str) -> list[ModelVersion]: ...


class ObjectStore(Protocol):
    """Blob-like storage: containers of named byte objects."""

    def put(self, container: str, name: str, data: bytes, *, overwrite: bool = False) -> str:
        """Store ``data``; return its URI. Without ``overwrite`` an existing object is kept."""
        ...

    def get(self, container: str, name: str) -> bytes: ...

    def read(self, uri: str) -> bytes:
        """The bytes of an object named by its URI (as returned by :meth:`put`)."""
        ...

    def exists(self, container: str, name: str) -> bool: ...

    def copy(self, src_uri: str, container: str, name: str) -> str:
        """Copy an object (server-side where the backend can) and return the new URI."""
        ...

    def list(self, container: str, prefix: str = "") -> list[str]: ...

    def delete(self, container: str, name: str) -> None: ...

    def uri(self, container: str, name: str) -> str: ...

    def uri_roots(self) -> tuple[str, ...]:
        """URI prefixes of what this store holds and may copy from (its folders, its blob endpoint):
        item URIs under them are trusted (:mod:`shared.core.item_uris`)."""
        ...


@dataclass(frozen=True, slots=True)
class TrainingManifest:
    """What to train on: every label with the URI of its item, and the class list."""

    item_ids: tuple[str, ...]
    item_uris: tuple[str, ...]
    labels: tuple[str, ...]
    class_names: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class TrainedCandidate:
    """A trained, registered, not yet deployed model with metrics measured next to the serving one."""

    model: ModelVersion
    metric: float
    baseline_metric: float | None


class Trainer(Protocol):
    def train(
        self, manifest: TrainingManifest, base: ModelVersion | None, *, metric: str
    ) -> TrainedCandidate: ...


class Deployer(Protocol):
    def deploy(self, model: ModelVersion) -> None: ...


# --- label_export_trigger ---
@dataclass(frozen=True, slots=True)
class RetrainRequest:
    """"Enough new labels: retrain". ``watermark`` is the label count the request covers, so a
    consumer (and the sender) can tell a repeated request for the same labels from a new one."""

    model_name: str
    watermark: int
    pending: int
    export_id: str
    export_sha256: str
    requested_at: str  # ISO 8601, UTC

    def to_json(self) -> str:
        return json.dumps({"type": "retrain", "model_name": self.model_name, "watermark": self.watermark,
                           "pending": self.pending, "export_id": self.export_id,
                           "export_sha256": self.export_sha256, "requested_at": self.requested_at})

    @classmethod
    def from_json(cls, text: str | bytes) -> RetrainRequest:
        """Parse a queue message body (already base64-decoded); ValueError says what is wrong."""
        try:
            doc = json.loads(text)
            return cls(str(doc["model_name"]), int(doc["watermark"]), int(doc["pending"]),
                       str(doc["export_id"]), str(doc["export_sha256"]), str(doc["requested_at"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a retrain request message: {exc!r}") from exc


class RetrainRequests(Protocol):
    """Where retrain requests go (a Storage queue in Azure, an in-process queue embedded), with the
    watermark of the last request per model kept beside it."""

    def last_watermark(self, model_name: str) -> int | None: ...

    def request(self, req: RetrainRequest) -> bool:
        """Send ``req`` unless a request at the same or a higher watermark was sent; True if sent."""
        ...


class LabelingTool(Protocol):
    """Where people label: the selector hands tasks over, the label stage reads answers back
    (Label Studio: :mod:`shared.adapters.label_studio`)."""

    project_id: int

    def version(self) -> str: ...

    def create_tasks(self, batch_id: str, tasks: Sequence[LabelingTask]) -> int:
        """One task per item of the batch that has none yet (idempotent: a repeated hand-off creates
        nothing twice); return how many were created."""
        ...

    def changed_tasks(self, since: datetime | None) -> Iterator[dict[str, Any]]:
        """The tool's tasks with their annotations, most recently updated first, updated at or after
        ``since`` (every task when None): what the catch-up reads when a webhook was lost."""
        ...
