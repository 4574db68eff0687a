"""Azure Data Explorer: the whole :class:`shared.ports.PredictionStore` of the Azure backend.

ADX is the one source of truth for Predictions, Selections, Labels and ModelVersions: every function
app reads and writes the loop's state here, never on its own disk.

Reads run the shipped ``shared/kql/*.kql`` queries with their values as client request parameters
(``declare query_parameters``; never formatted into the text).

Writes the next step must see at once (a selection before the next run, a label before the training
manifest, a model version before the next selection) are **streaming ingestions** through a
``KustoStreamingIngestClient`` (no queued fallback: a queued ingestion becomes visible only minutes
later, so a failure must surface to the caller, who retries). Every table is append-only and every
read dedupes (``arg_max``/``distinct``), so a write repeated under redelivery changes no answer:

- Selections: a hand-off is marked by appending the batch's rows again with ``HandedOff = true``;
- Labels: a row per (item, export content) is appended only if the pair is not stored yet, and the
  current label of an item is its most recently recorded one;
- ModelVersions: a version's current row is the one with the newest ``RecordedAt``; making a version
  serving appends a ``retired`` row for the one it replaces.

Predictions arrive through the collector's landed batches (queued ingestion with ingest-by tags,
:mod:`shared.adapters.adx_ingest`); :meth:`AdxStore.add_predictions` exists for completeness of the
port and streams a batch the same way the other writes do.

Identity-based (``DefaultAzureCredential`` through ``shared.adapters.adx_ingest.build_*_client``);
the caller builds the clients once per process.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import uuid
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

import numpy as np

from shared.core import answers, kql, uncertainty
from shared.core.records import Label, ModelStatus, ModelVersion, PredictionBatch, SelectedItem, Selection
from shared.core.selection import CandidateFilter, Ranked
from shared.errors import NotFoundError
from shared.ports import CandidateSet, LabeledSet

SELECTIONS_TABLE = "Selections"
LABELS_TABLE = "Labels"
MODEL_VERSIONS_TABLE = "ModelVersions"
PREDICTIONS_TABLE = "Predictions"
_IDS_PER_QUERY = 1000  # item ids per "in (dynamic)" request parameter
_SOURCE_NS = uuid.UUID("0c6a3f4e-7d1b-4f0a-9a55-5e1ec7000004")


class QueryClient(Protocol):
    """The part of ``azure.kusto.data.KustoClient`` used here."""

    def execute_query(self, database: str, query: str, properties: Any = None) -> Any: ...


class IngestClient(Protocol):
    """The part of ``azure.kusto.ingest.BaseIngestClient`` used here."""

    def ingest_from_stream(self, stream_descriptor: Any, ingestion_properties: Any) -> Any: ...


class AdxStore:
    """:class:`shared.ports.PredictionStore` on Azure Data Explorer."""

    def __init__(self, client: QueryClient, *, database: str, ingest: IngestClient | None = None,
                 random_seed: int = 0) -> None:
        """``random_seed``: the selection seed whose random key a stored prediction carries."""
        self._client = client
        self._database = database
        self._ingest = ingest
        self._seed = random_seed

    # queries -----------------------------------------------------------------------------
    def _rows(self, name: str, values: dict[str, object]) -> list[Any]:
        from azure.kusto.data import ClientRequestProperties

        text = kql.load(name)
        props = ClientRequestProperties()
        for key, literal in kql.literals(text, values).items():
            props.set_parameter(key, literal)
        result = self._client.execute_query(self._database, text, props)
        return list(result.primary_results[0])

    def top_k(self, flt: CandidateFilter, strategy: str, k: int, seed: int = 0) -> list[Ranked]:
        values = kql.filter_values(flt) | {"k": int(k)}
        if strategy == "random":
            values["seed"] = int(seed)
        rows = self._rows(kql.top_k_name(strategy), values)
        return [Ranked(str(r["ItemId"]), float(r["Score"]), str(r["ItemUri"])) for r in rows]

    def candidates(self, flt: CandidateFilter, limit: int | None = None) -> CandidateSet:
        """All candidates, or the ``limit`` most uncertain by margin (``candidates_shortlist.kql``),
        sorted by item id either way."""
        if limit is None:
            rows = self._rows("candidates", kql.filter_values(flt))
        else:
            rows = sorted(self._rows("candidates_shortlist", kql.filter_values(flt) | {"k": int(limit)}),
                          key=lambda r: str(r["ItemId"]))
        ids = np.asarray([str(r["ItemId"]) for r in rows], dtype=str)
        uris = np.asarray([str(r["ItemUri"]) for r in rows], dtype=str)
        proba = _matrix([_dynamic(r["Probabilities"]) for r in rows])
        embeddings = [_dynamic(r["Embedding"]) for r in rows]
        emb = None if not rows or any(e is None for e in embeddings) else _matrix(embeddings)
        return CandidateSet(ids, uris, proba if proba is not None else np.zeros((0, 0), np.float32), emb)

    def labeled_set(self, model_name: str, model_version: str) -> LabeledSet:
        rows = self._rows("labeled_set", {"model_name": model_name})
        ids = np.asarray([str(r["ItemId"]) for r in rows], dtype=str)
        labels = np.asarray([str(r["Label"]) for r in rows], dtype=str)
        vectors = [_dynamic(r["Embedding"]) for r in rows]
        present = [v for v in vectors if v]
        embeddings = None
        if present:
            dim = len(present[0])
            embeddings = np.full((len(rows), dim), np.nan, dtype=np.float32)
            for i, v in enumerate(vectors):
                if v:
                    embeddings[i] = np.asarray(v, dtype=np.float32)
        return LabeledSet(ids, labels, embeddings)

    # model versions ------------------------------------------------------------------------
    def serving_version(self, name: str) -> ModelVersion | None:
        rows = self._rows("serving_version", {"model_name": name})
        return _model_version(rows[0]) if rows else None

    def get_model_version(self, name: str, version: str) -> ModelVersion:
        rows = self._rows("model_version", {"model_name": name, "model_version": version})
        if not rows:
            raise NotFoundError(f"model {name!r} has no version {version!r}")
        return _model_version(rows[0])

    def list_model_versions(self, name: str) -> list[ModelVersion]:
        return [_model_version(r) for r in self._rows("model_versions", {"model_name": name})]

    def upsert_model_version(self, mv: ModelVersion) -> None:
        """Append the version's new current row; a version made serving retires the one it replaces
        (in the same ingestion, so no reader sees two serving versions or none)."""
        now = datetime.now(UTC)
        rows = [_model_version_row(mv, now)]
        if mv.status is ModelStatus.SERVING:
            for old in self.list_model_versions(mv.name):
                if old.status is ModelStatus.SERVING and old.version != mv.version:
                    rows.append(_model_version_row(old, now, status=ModelStatus.RETIRED))
        self._stream(MODEL_VERSIONS_TABLE, rows, tag=f"model-version:{mv.name}:{mv.version}:{now.isoformat()}")

    # labels ------------------------------------------------------------------------------
    def add_labels(self, labels: Sequence[Label]) -> int:
        """Append every answer row that changes something (:func:`shared.core.answers.to_record`);
        return how many."""
        if not labels:
            return 0
        states = {}
        for chunk in _chunks(sorted({lb.item_id for lb in labels})):
            for r in self._rows("answer_states", {"item_ids": chunk}):
                row = _label(r)
                states[(row.item_id, row.answer_id)] = row
        now = datetime.now(UTC)
        labels = [lb if lb.labeled_at else dataclasses.replace(lb, labeled_at=now) for lb in labels]
        new = [{"ItemId": lb.item_id, "Label": lb.label, "ExportId": lb.export_id, "ExportSha256": lb.export_sha256,
                "LabeledAt": _iso(lb.labeled_at or now), "RecordedAt": _iso(now), "AnswerId": lb.answer_id,
                "Retracted": lb.retracted}
               for lb in answers.to_record(labels, states)]
        if new:
            digest = hashlib.sha256(json.dumps(new, sort_keys=True).encode()).hexdigest()[:16]
            self._stream(LABELS_TABLE, new, tag=f"labels:{digest}:{len(new)}")
        return len(new)

    def answer_items(self, answer_ids: Sequence[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        for chunk in _chunks(sorted(set(answer_ids))):
            found |= {str(r["AnswerId"]): str(r["ItemId"]) for r in self._rows("answer_items", {"answer_ids": chunk})}
        return found

    def prediction_guesses(self, model_name: str, model_version: str,
                           item_ids: Sequence[str]) -> dict[str, tuple[str, float]]:
        found: dict[str, tuple[str, float]] = {}
        for chunk in _chunks(sorted(set(item_ids))):
            found |= {str(r["ItemId"]): (str(r["PredictedLabel"]), float(r["Confidence"]))
                      for r in self._rows("prediction_guesses", {"model_name": model_name,
                                                                 "model_version": model_version, "item_ids": chunk})}
        return found

    def list_labels(self) -> list[Label]:
        return [_label(r) for r in self._rows("labels_current", {})]

    def awaiting_labels(self) -> int:
        rows = self._rows("awaiting_labels", {})
        return int(rows[0]["Count"]) if rows else 0

    def count_labels(self) -> int:
        rows = self._rows("label_count", {})
        return int(rows[0]["Count"]) if rows else 0

    # predictions ---------------------------------------------------------------------------
    def add_predictions(self, batch: PredictionBatch) -> int:
        """Stream the predictions whose id is not stored yet; return how many."""
        known: set[str] = set()
        for chunk in _chunks(list(batch.prediction_ids)):
            known |= {str(r["PredictionId"]) for r in self._rows("known_predictions", {"prediction_ids": chunk})}
        now = _iso(datetime.now(UTC))
        proba = np.asarray(batch.probabilities, dtype=np.float64)
        scores = zip(uncertainty.least_confidence(proba).tolist(), uncertainty.margin(proba).tolist(),
                     uncertainty.entropy(proba).tolist(), uncertainty.random_keys(batch.item_ids, self._seed),
                     strict=True)
        rows = []
        for i, (pid, (lc, mg, en, key)) in enumerate(zip(batch.prediction_ids, scores, strict=True)):
            if pid in known:
                continue
            known.add(pid)
            scored = batch.scored_at[i].astype("datetime64[us]").item().replace(tzinfo=UTC)
            rows.append({  # the scores and the random key computed once, as the collector's landing does
                "PredictionId": pid, "ItemId": batch.item_ids[i], "ItemUri": batch.item_uris[i],
                "ModelName": batch.model_name[i], "ModelVersion": batch.model_version[i],
                "PredictedLabel": batch.predicted_labels[i], "ScoredAt": _iso(scored),
                "Probabilities": [float(x) for x in batch.probabilities[i]],
                "Embedding": None if batch.embeddings is None else [float(x) for x in batch.embeddings[i]],
                "IngestedAt": now, "LeastConfidence": lc, "Margin": mg, "Entropy": en, "RandomKey": str(key),
                "RandomSeed": self._seed,
            })
        if rows:
            self._stream(PREDICTIONS_TABLE, rows, tag=f"predictions:{rows[0]['PredictionId']}:{len(rows)}")
        return len(rows)

    def embedding_dim(self, model_name: str, model_version: str) -> int | None:
        rows = self._rows("embedding_dim", {"model_name": model_name, "model_version": model_version})
        return int(rows[0]["Dim"]) if rows and rows[0]["Dim"] is not None else None

    def counts_by_version(self) -> list[Any]:
        from shared.services.ingest import VersionCount

        return [VersionCount(str(r["ModelName"]), str(r["ModelVersion"]), int(r["Predictions"]),
                             _aware(r["LastIngestedAt"])) for r in self._rows("prediction_counts", {})]

    # selections ----------------------------------------------------------------------------
    def pending_handoffs(self) -> list[Selection]:
        batches: dict[str, list[Any]] = {}
        for r in self._rows("pending_handoffs", {}):
            batches.setdefault(str(r["BatchId"]), []).append(r)
        return [
            Selection(
                batch_id=b, strategy=str(rs[0]["Strategy"]), model_name=str(rs[0]["ModelName"]),
                model_version=str(rs[0]["ModelVersion"]), selected_at=_aware(rs[0]["SelectedAt"]),  # type: ignore[arg-type]
                items=_items(rs),
            )
            for b, rs in batches.items()
        ]

    def is_selected(self, item_ids: Sequence[str]) -> np.ndarray:
        found = self.selection_uris(item_ids)
        return np.array([i in found for i in item_ids], dtype=bool)

    def handed_out(self, item_ids: Sequence[str]) -> dict[str, list[tuple[str, str]]]:
        found: dict[str, list[tuple[str, str]]] = {}
        for chunk in _chunks(sorted(set(item_ids))):
            for r in self._rows("handed_out", {"item_ids": chunk}):
                found.setdefault(str(r["ItemId"]), []).append((str(r["BatchId"]), str(r["ItemUri"])))
        return found

    def selection_uris(self, item_ids: Sequence[str]) -> dict[str, str]:
        if not item_ids:
            return {}
        found: dict[str, str] = {}
        for chunk in _chunks(list(dict.fromkeys(item_ids))):
            found |= {str(r["ItemId"]): str(r["ItemUri"]) for r in self._rows("selected_items", {"item_ids": chunk})}
        return found

    # writes ------------------------------------------------------------------------------
    def record_selection(self, selection: Selection) -> None:
        self._append(selection, selection.items, handed_off=False, tag=f"selection:{selection.batch_id}")

    def mark_handed_off(self, batch_id: str) -> None:
        pending = [s for s in self.pending_handoffs() if s.batch_id == batch_id]
        for selection in pending:
            self._append(selection, selection.items, handed_off=True, tag=f"handed-off:{batch_id}")

    def _append(self, selection: Selection, items: Iterable[SelectedItem], *, handed_off: bool, tag: str) -> None:
        at = _iso(selection.selected_at)
        rows = [{
            "BatchId": selection.batch_id, "ItemId": it.item_id, "ItemUri": it.item_uri,
            "ModelName": selection.model_name, "ModelVersion": selection.model_version,
            "Strategy": selection.strategy, "Score": it.score, "Rank": it.rank, "SelectedAt": at,
            "HandedOff": handed_off,
        } for it in items]
        self._stream(SELECTIONS_TABLE, rows, tag=tag)

    def _stream(self, table: str, rows: list[dict[str, Any]], *, tag: str) -> None:
        """One streaming ingestion of JSON rows (keys are the table's column names)."""
        if self._ingest is None:
            raise RuntimeError("this ADX store was built without an ingest client; it can only read")
        from azure.kusto.ingest import IngestionProperties, StreamDescriptor
        from azure.kusto.ingest.ingestion_properties import DataFormat

        body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()
        props = IngestionProperties(database=self._database, table=table, data_format=DataFormat.MULTIJSON,
                                    additional_tags=[tag])
        descriptor = StreamDescriptor(io.BytesIO(body), source_id=uuid.uuid5(_SOURCE_NS, tag), is_compressed=False,
                                      stream_name=f"{table}-{uuid.uuid5(_SOURCE_NS, tag)}.json", size=len(body))
        self._ingest.ingest_from_stream(descriptor, props)


def _chunks(values: list[str]) -> Iterator[list[str]]:
    for i in range(0, len(values), _IDS_PER_QUERY):
        yield values[i:i + _IDS_PER_QUERY]


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _model_version(r: Any) -> ModelVersion:
    metrics = _dynamic(r["Metrics"]) or {}
    status = str(r["Status"] or ModelStatus.CANDIDATE)
    return ModelVersion(
        name=str(r["ModelName"]), version=str(r["Version"]),
        class_names=tuple(str(c) for c in (_dynamic(r["ClassNames"]) or ())),
        metrics={str(k): float(v) for k, v in metrics.items()}, artifact_uri=str(r["ArtifactUri"] or ""),
        status=ModelStatus(status) if status in ModelStatus._value2member_map_ else ModelStatus.CANDIDATE,
        created_at=_aware(r["CreatedAt"]), trained_on_labels=int(r["TrainedOnLabels"] or 0),
    )


def _model_version_row(mv: ModelVersion, now: datetime, status: ModelStatus | None = None) -> dict[str, Any]:
    return {"ModelName": mv.name, "Version": mv.version, "ClassNames": list(mv.class_names),
            "Metrics": dict(mv.metrics), "ArtifactUri": mv.artifact_uri, "Status": (status or mv.status).value,
            "CreatedAt": _iso(mv.created_at or now), "TrainedOnLabels": int(mv.trained_on_labels),
            "RecordedAt": _iso(now)}


def _items(rows: list[Any]) -> tuple[SelectedItem, ...]:
    return tuple(SelectedItem(str(r["ItemId"]), str(r["ItemUri"]), float(r["Score"]), int(r["Rank"])) for r in rows)


def _dynamic(value: Any) -> Any:
    """A ``dynamic`` cell: the Python client returns parsed JSON, or text for some shapes."""
    if isinstance(value, str):
        return json.loads(value) if value else None
    return value


def _matrix(rows: list[Any]) -> np.ndarray | None:
    if not rows:
        return None
    return np.asarray(rows, dtype=np.float32)


def _label(r: Any) -> Label:
    """A ``Labels`` row (or a query's projection of one) as a record."""
    def get(name: str) -> Any:
        try:
            return r[name]
        except (KeyError, IndexError, LookupError):
            return None

    return Label(str(r["ItemId"]), str(r["Label"]), str(get("ExportId") or ""), str(get("ExportSha256") or ""),
                 _aware(get("LabeledAt")), str(get("AnswerId") or answers.EXPORT_ANSWER), bool(get("Retracted")),
                 _aware(get("RecordedAt")))


def _aware(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
