"""Azure Data Explorer: the :class:`shared.ports.PredictionStore` methods selection needs.

Reads run the shipped ``shared/kql/*.kql`` queries with their values as client request parameters
(``declare query_parameters``; never formatted into the text). Writes (a recorded selection, a
finished hand-off) are small JSON ingestions into the append-only ``Selections`` table: a hand-off is
marked by appending the batch's rows again with ``HandedOff = true``, which ``pending_handoffs.kql``
reads. Use a streaming ingest client here: a queued ingestion becomes visible only minutes later,
and the next run must see what the previous one recorded.

Identity-based (``DefaultAzureCredential`` through ``shared.adapters.adx_ingest.build_*_client``);
the caller builds the clients once per process.
"""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

import numpy as np

from shared.core import kql
from shared.core.records import ModelStatus, ModelVersion, SelectedItem, Selection
from shared.core.selection import CandidateFilter, Ranked
from shared.ports import CandidateSet, LabeledSet

SELECTIONS_TABLE = "Selections"
_SOURCE_NS = uuid.UUID("0c6a3f4e-7d1b-4f0a-9a55-5e1ec7000004")


class QueryClient(Protocol):
    """The part of ``azure.kusto.data.KustoClient`` used here."""

    def execute_query(self, database: str, query: str, properties: Any = None) -> Any: ...


class IngestClient(Protocol):
    """The part of ``azure.kusto.ingest.BaseIngestClient`` used here."""

    def ingest_from_stream(self, stream_descriptor: Any, ingestion_properties: Any) -> Any: ...


class AdxSelectionStore:
    """Selection's half of the prediction store on ADX (predictions and labels land elsewhere)."""

    def __init__(self, client: QueryClient, *, database: str, ingest: IngestClient | None = None) -> None:
        self._client = client
        self._database = database
        self._ingest = ingest

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

    def serving_version(self, name: str) -> ModelVersion | None:
        rows = self._rows("serving_version", {"model_name": name})
        if not rows:
            return None
        r = rows[0]
        metrics = _dynamic(r["Metrics"]) or {}
        return ModelVersion(
            name=str(r["ModelName"]), version=str(r["Version"]),
            class_names=tuple(str(c) for c in (_dynamic(r["ClassNames"]) or ())),
            metrics={str(k): float(v) for k, v in metrics.items()}, artifact_uri=str(r["ArtifactUri"] or ""),
            status=ModelStatus.SERVING, created_at=_aware(r["CreatedAt"]),
            trained_on_labels=int(r["TrainedOnLabels"] or 0),
        )

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

    def selection_uris(self, item_ids: Sequence[str]) -> dict[str, str]:
        if not item_ids:
            return {}
        rows = self._rows("selected_items", {"item_ids": list(item_ids)})
        return {str(r["ItemId"]): str(r["ItemUri"]) for r in rows}

    # writes ------------------------------------------------------------------------------
    def record_selection(self, selection: Selection) -> None:
        self._append(selection, selection.items, handed_off=False, tag=f"selection:{selection.batch_id}")

    def mark_handed_off(self, batch_id: str) -> None:
        pending = [s for s in self.pending_handoffs() if s.batch_id == batch_id]
        for selection in pending:
            self._append(selection, selection.items, handed_off=True, tag=f"handed-off:{batch_id}")

    def _append(self, selection: Selection, items: Iterable[SelectedItem], *, handed_off: bool, tag: str) -> None:
        if self._ingest is None:
            raise RuntimeError("this ADX selection store was built without an ingest client; it can only read")
        from azure.kusto.ingest import IngestionProperties, StreamDescriptor
        from azure.kusto.ingest.ingestion_properties import DataFormat

        at = selection.selected_at.astimezone(UTC).isoformat().replace("+00:00", "Z")
        body = "".join(json.dumps({
            "BatchId": selection.batch_id, "ItemId": it.item_id, "ItemUri": it.item_uri,
            "ModelName": selection.model_name, "ModelVersion": selection.model_version,
            "Strategy": selection.strategy, "Score": it.score, "Rank": it.rank, "SelectedAt": at,
            "HandedOff": handed_off,
        }) + "\n" for it in items).encode()
        props = IngestionProperties(
            database=self._database, table=SELECTIONS_TABLE, data_format=DataFormat.MULTIJSON,
            ingest_by_tags=[tag], ingest_if_not_exists=[tag], additional_tags=["selector_timer"],
        )
        descriptor = StreamDescriptor(io.BytesIO(body), source_id=uuid.uuid5(_SOURCE_NS, tag), is_compressed=False,
                                      stream_name=f"{tag.replace(':', '-')}.json", size=len(body))
        self._ingest.ingest_from_stream(descriptor, props)


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


def _aware(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
