"""ingest: durable landing of accepted batches, then ingestion into the prediction store, with retry.

Why a landing step: the collector answers 2xx only once a batch can no longer be lost. The batch is
first written as a JSON-lines blob ``pending/<batch id>.jsonl`` in the landing container; ingestion
(DuckDB in the embedded backend, Azure Data Explorer in Azure) reads that blob. On success the blob
moves to ``ingested/``; on failure it stays under ``pending/`` and the re-ingest timer (or the admin
action) picks it up. The batch id is a hash of the batch's prediction ids, so the same batch posted
twice lands once and is ingested once (ADX: ingest-by / ingest-if-not-exists tags; DuckDB: prediction
id dedupe); a prediction repeated across different batches is removed on read.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

import numpy as np
from tenacity import Retrying, retry_if_not_exception_type, stop_after_attempt, wait_exponential

from shared.core.payload import landing_rows_by_width, parse_landing_jsonl
from shared.core.records import PredictionBatch
from shared.errors import NotFoundError
from shared.ports import ObjectStore, PredictionStore

log = logging.getLogger(__name__)

PENDING = "pending/"
INGESTED = "ingested/"
REJECTED = "rejected/"
STATE_NAME = "state/last-ingestion.json"


def batch_id_of(prediction_ids: Sequence[str]) -> str:
    """The landing name of a batch: order-independent, so a re-sent batch maps to the same blob."""
    digest = hashlib.sha256("\n".join(sorted(prediction_ids)).encode())
    return digest.hexdigest()[:40]


@dataclass(frozen=True, slots=True)
class VersionCount:
    """Distinct predictions of one model version in the store, and when the last one was ingested."""

    model_name: str
    model_version: str
    predictions: int
    last_ingested_at: datetime | None


class PredictionCounts(Protocol):
    def counts_by_version(self) -> list[VersionCount]: ...


@dataclass(frozen=True, slots=True)
class IngestOutcome:
    """What the store reported: new rows, or None when it cannot tell yet (queued ADX ingestion)."""

    new_rows: int | None


class Ingestor(Protocol):
    """Port: ingest one landed batch. Raise on failure (the blob stays pending); be idempotent per id."""

    def ingest(self, batch_id: str, jsonl: bytes) -> IngestOutcome: ...


class StoreIngestor:
    """Embedded ingestion: landing rows -> :class:`PredictionBatch` -> ``PredictionStore.add_predictions``."""

    def __init__(self, store: PredictionStore) -> None:
        self._store = store

    def ingest(self, batch_id: str, jsonl: bytes) -> IngestOutcome:
        new = 0
        for rows in landing_rows_by_width(parse_landing_jsonl(jsonl)):
            new += self._store.add_predictions(rows_to_batch(rows))
        return IngestOutcome(new)


def rows_to_batch(rows: Sequence[Mapping[str, object]]) -> PredictionBatch:
    """Landing rows of one probability width as a columnar batch (timestamps as naive UTC)."""
    embeddings = None
    if all(r.get("embedding") is not None for r in rows):
        embeddings = np.asarray([r["embedding"] for r in rows], dtype=np.float32)
    stamps = [str(r["scored_at"]).rstrip("Z") for r in rows]
    return PredictionBatch(
        prediction_ids=tuple(str(r["prediction_id"]) for r in rows),
        item_ids=tuple(str(r["item_id"]) for r in rows),
        item_uris=tuple(str(r["item_uri"]) for r in rows),
        model_name=tuple(str(r["model_name"]) for r in rows),
        model_version=tuple(str(r["model_version"]) for r in rows),
        predicted_labels=tuple(str(r["predicted_label"]) for r in rows),
        scored_at=np.array(stamps, dtype="datetime64[us]"),
        probabilities=np.asarray([r["probabilities"] for r in rows], dtype=np.float32),
        embeddings=embeddings,
    )


@dataclass(frozen=True, slots=True)
class Landed:
    batch_id: str
    uri: str
    already_landed: bool
    already_ingested: bool = False


@dataclass(frozen=True, slots=True)
class ReingestReport:
    ingested: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    skipped_recent: list[str] = field(default_factory=list)


class IngestService:
    """Land batches durably, ingest them, and re-ingest whatever is still pending."""

    def __init__(
        self, objects: ObjectStore, ingestor: Ingestor, *, container: str = "landing", attempts: int = 3,
        max_wait: float = 2.0, clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._objects = objects
        self._ingestor = ingestor
        self.container = container
        self._attempts = attempts
        self._max_wait = max_wait
        self._clock = clock

    def land(self, batch_id: str, jsonl: bytes) -> Landed:
        """Write the batch blob unless this batch was landed before (then keep the first copy)."""
        pending, done = f"{PENDING}{batch_id}.jsonl", f"{INGESTED}{batch_id}.jsonl"
        if self._objects.exists(self.container, done):
            return Landed(batch_id, self._objects.uri(self.container, done), True, True)
        already = self._objects.exists(self.container, pending)
        uri = self._objects.put(self.container, pending, jsonl)
        return Landed(batch_id, uri, already)

    def ingest(self, batch_id: str) -> IngestOutcome:
        """Ingest a pending batch (a few quick retries), then move its blob to ``ingested/``.

        Raises the last error when every attempt failed; the blob then stays pending.
        """
        pending = f"{PENDING}{batch_id}.jsonl"
        data = self._objects.get(self.container, pending)
        retrying = Retrying(
            stop=stop_after_attempt(self._attempts),
            wait=wait_exponential(multiplier=0.1, max=self._max_wait),
            retry=retry_if_not_exception_type((ValueError, KeyError, TypeError)),
            reraise=True,
        )
        outcome = retrying(self._ingestor.ingest, batch_id, data)
        self._objects.put(self.container, f"{INGESTED}{batch_id}.jsonl", data)
        self._objects.delete(self.container, pending)
        stamp = {"batch_id": batch_id, "at": self._clock().isoformat()}
        self._objects.put(self.container, STATE_NAME, json.dumps(stamp).encode(), overwrite=True)
        return outcome

    def reingest_pending(self, *, min_age_seconds: float = 0.0) -> ReingestReport:
        """Ingest every pending batch landed at least ``min_age_seconds`` ago (younger ones are
        probably still being ingested by the request that landed them)."""
        report = ReingestReport()
        now = self._clock()
        for name in self._objects.list(self.container, PENDING):
            batch_id = name[len(PENDING):].removesuffix(".jsonl")
            try:
                landed_at = _landed_at(self._objects.get(self.container, name))
            except NotFoundError:
                continue  # ingested by someone else meanwhile
            except ValueError as exc:
                self._reject(name, batch_id, exc)
                report.failed.append(batch_id)
                continue
            if (now - landed_at).total_seconds() < min_age_seconds:
                report.skipped_recent.append(batch_id)
                continue
            try:
                self.ingest(batch_id)
            except (ValueError, KeyError, TypeError) as exc:
                self._reject(name, batch_id, exc)
                report.failed.append(batch_id)
            except Exception:
                log.warning("re-ingestion of landed batch %s failed; it stays pending", batch_id, exc_info=True)
                report.failed.append(batch_id)
            else:
                report.ingested.append(batch_id)
        return report

    def backlog(self) -> int:
        return len(self._objects.list(self.container, PENDING))

    def last_ingestion(self) -> datetime | None:
        try:
            return datetime.fromisoformat(json.loads(self._objects.get(self.container, STATE_NAME))["at"])
        except NotFoundError:
            return None

    def _reject(self, name: str, batch_id: str, exc: Exception) -> None:
        """A blob no ingestion can read (torn, foreign) is set aside instead of retried forever."""
        log.error("landed batch %s is unreadable (%s); moved to %s", batch_id, exc, REJECTED)
        self._objects.put(self.container, f"{REJECTED}{batch_id}.jsonl", self._objects.get(self.container, name))
        self._objects.delete(self.container, name)


def _landed_at(data: bytes) -> datetime:
    first = data.split(b"\n", 1)[0]
    try:
        stamp = json.loads(first)["ingested_at"]
        return datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"not a landing blob: {exc}") from exc
