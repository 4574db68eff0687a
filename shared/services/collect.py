"""collect: validate a batch of scoring results, store inline items content-addressed, store rows."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC

import numpy as np

from shared.core.payload import ScoringRecord, validate_batch
from shared.core.records import PredictionBatch
from shared.errors import NotFoundError
from shared.ports import ObjectStore, PredictionStore

log = logging.getLogger(__name__)
ITEMS_CONTAINER = "items"


@dataclass(frozen=True, slots=True)
class CollectResult:
    accepted: int
    duplicates: int


class CollectService:
    def __init__(
        self, store: PredictionStore, objects: ObjectStore, *, max_records: int = 1000,
        max_item_bytes: int = 2 * 1024 * 1024,
    ) -> None:
        self._store = store
        self._objects = objects
        self._max_records = max_records
        self._max_item_bytes = max_item_bytes
        self._classes: dict[tuple[str, str], tuple[str, ...] | None] = {}

    def _classes_of(self, name: str, version: str) -> Sequence[str] | None:
        key = (name, version)
        if key not in self._classes:
            try:
                self._classes[key] = self._store.get_model_version(name, version).class_names
            except NotFoundError:
                return None
        return self._classes[key]

    def collect(self, payload: object) -> CollectResult:
        """Validate the whole batch first; store nothing unless every record is valid."""
        checked = validate_batch(
            payload, classes_of=self._classes_of, max_records=self._max_records,
            max_item_bytes=self._max_item_bytes,
        )
        uris = []
        for rec, _, raw in checked:
            if raw is None:
                uris.append(rec.item_uri or "")
                continue
            digest = hashlib.sha256(raw).hexdigest()
            uris.append(self._objects.put(ITEMS_CONTAINER, f"sha256/{digest}", raw))
        records = [rec for rec, _, _ in checked]
        new = 0
        # One stored batch per probability width (a batch may mix models with other class counts).
        for width in sorted({len(r.probabilities) for r in records}):
            rows = [i for i, r in enumerate(records) if len(r.probabilities) == width]
            new += self._store.add_predictions(_batch([records[i] for i in rows], [uris[i] for i in rows]))
        log.info("collected %d predictions (%d duplicates)", new, len(records) - new)
        return CollectResult(accepted=new, duplicates=len(records) - new)



def _batch(records: Sequence[ScoringRecord], uris: Sequence[str]) -> PredictionBatch:
    embeddings = None
    if all(r.embedding is not None for r in records):
        embeddings = np.asarray([r.embedding for r in records], dtype=np.float32)
    return PredictionBatch(
        prediction_ids=tuple(r.prediction_id or "" for r in records),
        item_ids=tuple(r.item_id for r in records),
        item_uris=tuple(uris),
        model_name=tuple(r.model_name for r in records),
        model_version=tuple(r.model_version for r in records),
        predicted_labels=tuple(r.predicted_label for r in records),
        scored_at=np.array(
            [r.scored_at.astimezone(UTC).replace(tzinfo=None) for r in records], dtype="datetime64[us]"
        ),
        probabilities=np.asarray([r.probabilities for r in records], dtype=np.float32),
        embeddings=embeddings,
    )
