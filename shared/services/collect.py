"""collect: validate a batch of scoring results, store inline items content-addressed, store rows.

Without an :class:`~shared.services.ingest.IngestService` rows go straight to the store (the
simulation's path). With one (the function app), the accepted batch is first landed durably as a
JSON-lines blob and then ingested; an ingestion failure leaves the blob for the re-ingest timer.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np

from shared.core.item_uris import ItemUriPolicy
from shared.core.payload import MAX_EMBEDDING_DIM, MIN_SCORED_AT, ScoringRecord, landing_jsonl, validate_batch
from shared.core.records import PredictionBatch
from shared.errors import NotFoundError, UnavailableError
from shared.ports import ObjectStore, PredictionStore
from shared.services.ingest import IngestService, batch_id_of

log = logging.getLogger(__name__)
ITEMS_CONTAINER = "items"


@dataclass(frozen=True, slots=True)
class CollectResult:
    """``accepted`` new predictions and ``duplicates`` already known. When the store cannot tell yet
    (queued ADX ingestion, or ingestion left to the retry), a batch landed before counts as duplicates
    and any other as accepted; cross-batch duplicates are then removed on read."""

    accepted: int
    duplicates: int
    batch_id: str = ""
    ingested: bool = True


class CollectService:
    def __init__(
        self, store: PredictionStore, objects: ObjectStore, *, max_records: int = 1000,
        max_item_bytes: int = 2 * 1024 * 1024, ingest: IngestService | None = None,
        items_container: str = ITEMS_CONTAINER, max_future: timedelta | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC), seed: int = 0,
        allowed_item_hosts: Sequence[str] = (), min_scored_at: datetime = MIN_SCORED_AT,
        max_embedding_dim: int = MAX_EMBEDDING_DIM,
    ) -> None:
        """``allowed_item_hosts``: blob hosts an ``https://`` item_uri may name besides the object
        store's own roots (:mod:`shared.core.item_uris`)."""
        self._seed = seed  # AL_SELECTION_SEED: landed lines carry the random key for it
        self._store = store
        self._objects = objects
        self._max_records = max_records
        self._max_item_bytes = max_item_bytes
        self._ingest = ingest
        self._items_container = items_container
        self._max_future = max_future
        self._clock = clock
        self._classes: dict[tuple[str, str], tuple[str, ...] | None] = {}
        self.item_uris = ItemUriPolicy.of(https_hosts=allowed_item_hosts, roots=objects.uri_roots())
        self._min_scored_at = min_scored_at
        self._max_embedding_dim = max_embedding_dim
        self._dims: dict[tuple[str, str], int] = {}  # embedding length per model version, once known

    def _classes_of(self, name: str, version: str) -> Sequence[str] | None:
        key = (name, version)
        if key not in self._classes:
            try:
                self._classes[key] = self._store.get_model_version(name, version).class_names
            except NotFoundError:
                return None
            except Exception as exc:  # the store is unreachable: nothing can be checked, so nothing is taken
                raise UnavailableError(f"cannot look up the classes of {name}:{version} now "
                                       f"({type(exc).__name__}); retry later") from exc
        return self._classes[key]

    def _embedding_dim_of(self, name: str, version: str) -> int | None:
        """The stored embedding length of a model version (None: none stored yet, or the store
        cannot tell; then the batch's first embedding sets it)."""
        key = (name, version)
        if key not in self._dims:
            found = self._store.embedding_dim(name, version)
            if not found:
                return None
            self._dims[key] = found
        return self._dims[key]

    def collect(self, payload: object) -> CollectResult:
        """Validate the whole batch first; store nothing unless every record is valid."""
        now = self._clock()
        future = {} if self._max_future is None else {"now": now, "max_future": self._max_future}
        checked = validate_batch(
            payload, classes_of=self._classes_of, max_records=self._max_records,
            max_item_bytes=self._max_item_bytes, min_scored_at=self._min_scored_at, item_uris=self.item_uris,
            max_embedding_dim=self._max_embedding_dim, embedding_dim_of=self._embedding_dim_of,
            **future,  # type: ignore[arg-type]
        )
        uris = []
        for rec, _, raw in checked:
            if raw is None:
                uris.append(rec.item_uri or "")
                continue
            digest = hashlib.sha256(raw).hexdigest()
            uris.append(self._objects.put(self._items_container, f"sha256/{digest}", raw))
        records = [rec for rec, _, _ in checked]
        result = self._land_and_ingest(records, uris, now) if self._ingest is not None else self._store_rows(
            records, uris)
        for rec in records:  # landed or stored: later batches of these versions keep these lengths
            if rec.embedding is not None:
                self._dims.setdefault((rec.model_name, rec.model_version), len(rec.embedding))
        return result

    def _store_rows(self, records: Sequence[ScoringRecord], uris: Sequence[str]) -> CollectResult:
        new = 0
        # One stored batch per probability width (a batch may mix models with other class counts).
        for width in sorted({len(r.probabilities) for r in records}):
            rows = [i for i, r in enumerate(records) if len(r.probabilities) == width]
            new += self._store.add_predictions(_batch([records[i] for i in rows], [uris[i] for i in rows]))
        log.info("collected %d predictions (%d duplicates)", new, len(records) - new)
        return CollectResult(accepted=new, duplicates=len(records) - new)

    def _land_and_ingest(self, records: Sequence[ScoringRecord], uris: Sequence[str], now: datetime) -> CollectResult:
        assert self._ingest is not None
        batch_id = batch_id_of([r.prediction_id or "" for r in records])
        landed = self._ingest.land(batch_id, landing_jsonl(records, uris, now, seed=self._seed))
        n = len(records)
        if landed.already_ingested:
            return CollectResult(0, n, batch_id, True)
        try:
            outcome = self._ingest.ingest(batch_id)
        except Exception:
            # Landed is durable: the re-ingest timer retries; the caller still gets its 2xx.
            log.warning("ingestion of landed batch %s failed; left for re-ingestion", batch_id, exc_info=True)
            return CollectResult(0 if landed.already_landed else n, n if landed.already_landed else 0,
                                 batch_id, False)
        if outcome.new_rows is None:
            return CollectResult(0 if landed.already_landed else n, n if landed.already_landed else 0,
                                 batch_id, True)
        log.info("collected %d predictions (%d duplicates), batch %s", outcome.new_rows, n - outcome.new_rows,
                 batch_id)
        return CollectResult(outcome.new_rows, n - outcome.new_rows, batch_id, True)



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
