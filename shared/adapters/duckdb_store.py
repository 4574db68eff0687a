"""The embedded store: one DuckDB file holding predictions, selections, labels and model versions.

Selection runs in DuckDB SQL (:mod:`shared.core.sql`); the parity tests hold it to the NumPy
reference. One connection per store object; DuckDB serialises writers inside a process.

The random key is computed at ingestion for the store's ``random_seed`` (set it to
``AL_SELECTION_SEED``); a selection asking for another seed is still exact, it computes the keys at
query time instead (slower: an MD5 per candidate).
"""

from __future__ import annotations

import dataclasses
import json
import math
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from shared.core import answers, sql
from shared.core.records import (
    Label,
    ModelStatus,
    ModelVersion,
    PredictionBatch,
    SelectedItem,
    Selection,
)
from shared.core.selection import CandidateFilter, Ranked
from shared.errors import NotFoundError
from shared.ports import CandidateSet, LabeledSet


def _list_array(matrix: np.ndarray | None, n: int) -> pa.Array:
    """A (n, d) float32 matrix as an Arrow list column (nulls when there is no matrix)."""
    if matrix is None:
        return pa.nulls(n, type=pa.list_(pa.float32()))
    m = np.ascontiguousarray(matrix, dtype=np.float32)
    offsets = np.arange(0, m.size + 1, m.shape[1], dtype=np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(m.reshape(-1)))


def _naive_utc(ts: datetime | None) -> datetime | None:
    if ts is None:
        return None
    return ts.astimezone(UTC).replace(tzinfo=None) if ts.tzinfo else ts


def _naive_utc_many(values: list[datetime | None]) -> list[datetime | None]:
    """:func:`_naive_utc` per value, converting each distinct value once (exports share stamps)."""
    cache: dict[datetime | None, datetime | None] = {}
    out = []
    for v in values:
        if v not in cache:
            cache[v] = _naive_utc(v)
        out.append(cache[v])
    return out


def _aware(ts: datetime | None) -> datetime | None:
    return ts.replace(tzinfo=UTC) if ts is not None and ts.tzinfo is None else ts


class DuckDBStore:
    """:class:`shared.ports.PredictionStore` on a DuckDB file (or ``":memory:"``)."""

    def __init__(self, path: str | Path = ":memory:", *, threads: int | None = None,
                 random_seed: int = 0) -> None:
        self.random_seed = int(random_seed)
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._con = duckdb.connect(str(path))
        if threads:
            self._con.execute(f"SET threads = {int(threads)}")
        self._lock = threading.RLock()
        self._con.execute("SET enable_progress_bar = false")
        self._con.execute(sql.SCHEMA)

    def close(self) -> None:
        self._con.close()

    @contextmanager
    def _cursor(self) -> Iterator[duckdb.DuckDBPyConnection]:
        with self._lock:
            yield self._con

    # predictions -------------------------------------------------------------------------
    def add_predictions(self, batch: PredictionBatch) -> int:
        n = len(batch)
        if n == 0:
            return 0
        staged = pa.table(
            {
                "prediction_id": pa.array(batch.prediction_ids, pa.string()),
                "item_id": pa.array(batch.item_ids, pa.string()),
                "item_uri": pa.array(batch.item_uris, pa.string()),
                "model_name": pa.array(batch.model_name, pa.string()),
                "model_version": pa.array(batch.model_version, pa.string()),
                "predicted_label": pa.array(batch.predicted_labels, pa.string()),
                "scored_at": pa.array(batch.scored_at.astype("datetime64[us]"), pa.timestamp("us")),
                "probabilities": _list_array(batch.probabilities, n),
                "embedding": _list_array(batch.embeddings, n),
            }
        )
        with self._cursor() as con:
            before = _scalar(con, "SELECT count(*) FROM predictions")
            with _registered(con, "staged", staged), _transaction(con):
                con.execute(sql.STAGE_NEW_ROWS, {"seed": self.random_seed})
                for (band,) in con.execute(sql.BANDS_PRESENT).fetchall():
                    con.execute(sql.insert_band(band))
                con.execute(sql.UPSERT_LATEST)
                con.execute(sql.upsert_labeled_embeddings("new_rows", "labels"))
                con.execute("DROP TABLE new_rows")
            after = _scalar(con, "SELECT count(*) FROM predictions")
        return int(after - before)

    def count_predictions(self) -> int:
        with self._cursor() as con:
            return _scalar(con, "SELECT count(*) FROM predictions")

    def embedding_dim(self, model_name: str, model_version: str) -> int | None:
        """The length of the model version's stored embeddings (the first one stored), or None."""
        with self._cursor() as con:
            row = con.execute(
                "SELECT len(embedding) FROM predictions WHERE model_name = $n AND model_version = $v "
                "AND embedding IS NOT NULL ORDER BY ingested_at, prediction_id LIMIT 1",
                {"n": model_name, "v": model_version}).fetchone()
        return int(row[0]) if row else None

    @staticmethod
    def _filter_params(flt: CandidateFilter) -> dict[str, object]:
        return {
            "model_name": flt.model_name,
            "model_version": flt.model_version,
            "window_start": flt.window_start.astype("datetime64[us]").item(),
            "window_end": flt.window_end.astype("datetime64[us]").item(),
        }

    # The share of the table a bound's first guess samples (see _bound).
    sample_percent = 1.0

    def _bound(self, con: duckdb.DuckDBPyConnection, strategy: str, params: dict[str, object],
               k: int) -> object:
        """The bound a top-``k`` of ``strategy`` reads within (None: no candidates); see sql.bound_size.

        A sample first guesses a bound about twice as loose as needed; the heap then only sees keys
        within the guess and, when n come back, the bound is exact at a fraction of a full heap's
        cost. A guess too tight (fewer than n within it) falls back to the full heap."""
        n = sql.bound_size(k, _scalar(con, sql.EXCLUDED_COUNT))
        pre = con.execute(sql.prebound_query(strategy, self.sample_percent),
                          params | {"m": self._guess_size(n)}).fetchall()[0][0]
        if pre is not None:
            count, bound = con.execute(sql.bound_query(strategy, within_pre=True),
                                       params | {"n": n, "pre": pre}).fetchall()[0]
            if count == n:
                return bound
        return con.execute(sql.bound_query(strategy), params | {"n": n}).fetchall()[0][1]

    def _guess_size(self, n: int) -> int:
        """Which best key of the sample makes the guess: about 2n keys of the table are that good."""
        return math.ceil(2 * n * self.sample_percent / 100) + 16

    def top_k(self, flt: CandidateFilter, strategy: str, k: int, seed: int = 0) -> list[Ranked]:
        params = self._filter_params(flt)
        if strategy == "random":
            params["seed"] = int(seed)
        with self._cursor() as con, _snapshot(con):
            bound = self._bound(con, strategy, params, k)
            if bound is None:
                return []
            rows = con.execute(sql.top_k_query(strategy), params | {"bound": bound, "k": int(k)}).fetchall()
        return [Ranked(str(i), float(s), str(u)) for i, s, u in rows]

    def candidates(self, flt: CandidateFilter, limit: int | None = None) -> CandidateSet:
        params = self._filter_params(flt)
        with self._cursor() as con, _snapshot(con):
            if limit is None:
                table = con.sql(sql.CANDIDATES_QUERY, params=params).to_arrow_table()
            else:
                table = self._shortlist(con, params, int(limit))
        n = table.num_rows
        ids = np.asarray(table.column("item_id").to_pylist(), dtype=str)
        uris = np.asarray(table.column("item_uri").to_pylist(), dtype=str)
        proba = _matrix(table.column("probabilities"), n)
        emb_col = table.column("embedding")
        embeddings = None if n == 0 or emb_col.null_count == n else _matrix(emb_col, n)
        return CandidateSet(ids, uris, proba if proba is not None else np.zeros((0, 0), np.float32),
                            embeddings)

    def _shortlist(self, con: duckdb.DuckDBPyConnection, params: dict[str, object], limit: int) -> pa.Table:
        """The ``limit`` most uncertain candidates by margin with their probabilities and embeddings,
        sorted by item id: ids first (numeric scan, then the rows within the bound), then the vectors
        of those prediction ids only, from the margin bands that can hold them."""
        bound = self._bound(con, "margin", params, limit)
        if bound is None:
            return _EMPTY_CANDIDATES
        short = con.sql(sql.SHORTLIST_QUERY, params=params | {"bound": bound, "limit": limit}).to_arrow_table()
        if short.num_rows == 0:
            return _EMPTY_CANDIDATES
        with _registered(con, "wanted", short.select(["item_id", "item_uri", "prediction_id"])):
            table = con.sql(sql.payload_query(pc.max(short.column("margin")).as_py())).to_arrow_table()
        if table.num_rows != short.num_rows:
            raise RuntimeError("a shortlisted prediction is missing from its margin band")
        return table

    def labeled_set(self, model_name: str, model_version: str) -> LabeledSet:
        """Every labeled item with its latest embedding from any version of the model (features
        do not depend on the version); rows of items never scored with an embedding are NaN. Read
        from ``labeled_embeddings``, kept up to date at ingestion and when labels are recorded."""
        with self._cursor() as con:
            table = con.sql(sql.LABELED_SET_QUERY, params={"model_name": model_name}).to_arrow_table()
        n = table.num_rows
        ids = np.asarray(table.column("item_id").to_pylist(), dtype=str)
        labels = np.asarray(table.column("label").to_pylist(), dtype=str)
        emb_col = table.column("embedding").combine_chunks()
        embeddings = None
        if n and emb_col.null_count < n:
            present = emb_col.is_valid().to_numpy(zero_copy_only=False)
            values = emb_col.drop_null()
            dim = len(values[0])
            embeddings = np.full((n, dim), np.nan, dtype=np.float32)
            embeddings[present] = values.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim)
        return LabeledSet(ids, labels, embeddings)

    # selections --------------------------------------------------------------------------
    def record_selection(self, selection: Selection) -> None:
        items = selection.items
        rows = pa.table({
            "batch_id": pa.array([selection.batch_id] * len(items), pa.string()),
            "item_id": pa.array([it.item_id for it in items], pa.string()),
            "item_uri": pa.array([it.item_uri for it in items], pa.string()),
            "model_name": pa.array([selection.model_name] * len(items), pa.string()),
            "model_version": pa.array([selection.model_version] * len(items), pa.string()),
            "strategy": pa.array([selection.strategy] * len(items), pa.string()),
            "score": pa.array([it.score for it in items], pa.float64()),
            "rank": pa.array([it.rank for it in items], pa.int32()),
            "selected_at": pa.array([_naive_utc(selection.selected_at)] * len(items), pa.timestamp("us")),
        })
        self._insert("selections", rows, "*, FALSE")

    def _insert(self, table: str, rows: pa.Table, columns: str = "*") -> int:
        """Insert an Arrow table in one transaction; rows whose key exists are skipped."""
        with self._cursor() as con:
            before = _scalar(con, f"SELECT count(*) FROM {table}")
            with _registered(con, "incoming", rows):
                con.execute(f"INSERT INTO {table} SELECT {columns} FROM incoming ON CONFLICT DO NOTHING")
            return _scalar(con, f"SELECT count(*) FROM {table}") - before

    def pending_handoffs(self) -> list[Selection]:
        with self._cursor() as con:
            rows = con.execute(
                "SELECT batch_id, strategy, model_name, model_version, selected_at, item_id, "
                "item_uri, score, rank FROM selections WHERE NOT handed_off "
                "ORDER BY selected_at, batch_id, rank"
            ).fetchall()
        batches: dict[str, list[tuple]] = {}
        for row in rows:
            batches.setdefault(row[0], []).append(row)
        return [
            Selection(
                batch_id=b, strategy=r[0][1], model_name=r[0][2], model_version=r[0][3],
                selected_at=_aware(r[0][4]),  # type: ignore[arg-type]
                items=tuple(SelectedItem(x[5], x[6], x[7], x[8]) for x in r),
            )
            for b, r in batches.items()
        ]

    def mark_handed_off(self, batch_id: str) -> None:
        with self._cursor() as con:
            con.execute("UPDATE selections SET handed_off = TRUE WHERE batch_id = ?", [batch_id])

    def _with_ids(self, item_ids: Sequence[str], query: str) -> list[tuple]:
        """Run ``query`` against a registered one-column relation ``ids(item_id)`` (a semi-join
        stays linear where ``list_contains`` over a parameter list grows with rows x ids)."""
        ids = pa.table({"item_id": pa.array(list(item_ids), pa.string())})
        with self._cursor() as con, _registered(con, "ids", ids):
            return con.execute(query).fetchall()

    def is_selected(self, item_ids: Sequence[str]) -> np.ndarray:
        if not item_ids:
            return np.zeros(0, dtype=bool)
        found = {r[0] for r in self._with_ids(
            item_ids, "SELECT DISTINCT s.item_id FROM selections s SEMI JOIN ids ON s.item_id = ids.item_id")}
        return np.array([i in found for i in item_ids], dtype=bool)

    def handed_out(self, item_ids: Sequence[str]) -> dict[str, list[tuple[str, str]]]:
        if not item_ids:
            return {}
        found: dict[str, list[tuple[str, str]]] = {}
        for item, batch, uri in self._with_ids(
                sorted(set(item_ids)), "SELECT DISTINCT s.item_id, s.batch_id, s.item_uri FROM selections s "
                "SEMI JOIN ids ON s.item_id = ids.item_id WHERE s.handed_off ORDER BY 1, 2"):
            found.setdefault(str(item), []).append((str(batch), str(uri)))
        return found

    def selection_uris(self, item_ids: Sequence[str]) -> dict[str, str]:
        if not item_ids:
            return {}
        rows = self._with_ids(
            item_ids,
            "SELECT s.item_id, arg_max(s.item_uri, s.selected_at) FROM selections s "
            "SEMI JOIN ids ON s.item_id = ids.item_id GROUP BY s.item_id",
        )
        return {str(i): str(u) for i, u in rows}

    # labels ------------------------------------------------------------------------------
    def add_labels(self, labels: Sequence[Label]) -> int:
        """Append every answer row that changes something (:func:`shared.core.answers.to_record`);
        return how many."""
        if not labels:
            return 0
        now = datetime.now(UTC)
        labels = [lb if lb.labeled_at else dataclasses.replace(lb, labeled_at=now) for lb in labels]
        with self._cursor() as con:
            ids = pa.table({"item_id": pa.array(sorted({lb.item_id for lb in labels}), pa.string())})
            with _registered(con, "incoming_ids", ids), _transaction(con):
                states = {(r.item_id, r.answer_id): r for r in map(_label_row, con.execute(
                    f"SELECT {_LABEL_COLUMNS} FROM ({sql.ANSWER_STATES}) s SEMI JOIN incoming_ids i "
                    "ON s.item_id = i.item_id").fetchall())}
                new = answers.to_record(labels, states)
                if not new:
                    return 0
                rows = pa.table({
                    "item_id": pa.array([lb.item_id for lb in new], pa.string()),
                    "label": pa.array([lb.label for lb in new], pa.string()),
                    "export_id": pa.array([lb.export_id for lb in new], pa.string()),
                    "export_sha256": pa.array([lb.export_sha256 for lb in new], pa.string()),
                    "labeled_at": pa.array(_naive_utc_many([lb.labeled_at or now for lb in new]), pa.timestamp("us")),
                    "recorded_at": pa.array(_naive_utc_many([now] * len(new)), pa.timestamp("us")),
                    "answer_id": pa.array([lb.answer_id for lb in new], pa.string()),
                    "retracted": pa.array([lb.retracted for lb in new], pa.bool_()),
                })
                with _registered(con, "incoming", rows):
                    con.execute("INSERT INTO labels SELECT * FROM incoming")
                # The newly labeled items' embeddings: one scan of the predictions per recorded export.
                with _registered(con, "incoming_labels", rows.select(["item_id"])):
                    con.execute(sql.upsert_labeled_embeddings("predictions", "incoming_labels"))
        return len(new)

    def answer_items(self, answer_ids: Sequence[str]) -> dict[str, str]:
        if not answer_ids:
            return {}
        with self._cursor() as con:
            ids = pa.table({"answer_id": pa.array(sorted(set(answer_ids)), pa.string())})
            with _registered(con, "wanted", ids):
                rows = con.execute("SELECT DISTINCT l.answer_id, l.item_id FROM labels l "
                                   "SEMI JOIN wanted w ON l.answer_id = w.answer_id").fetchall()
        return {str(a): str(i) for a, i in rows}

    def prediction_guesses(self, model_name: str, model_version: str,
                           item_ids: Sequence[str]) -> dict[str, tuple[str, float]]:
        if not item_ids:
            return {}
        with self._cursor() as con:
            ids = pa.table({"item_id": pa.array(sorted(set(item_ids)), pa.string())})
            with _registered(con, "wanted", ids):
                rows = con.execute(
                    "SELECT l.item_id, p.predicted_label, 1.0 - p.least_confidence FROM latest_predictions l "
                    "JOIN predictions p ON p.prediction_id = l.prediction_id "
                    "SEMI JOIN wanted w ON l.item_id = w.item_id "
                    "WHERE l.model_name = ? AND l.model_version = ?", [model_name, model_version]).fetchall()
        return {str(i): (str(lb), float(c)) for i, lb, c in rows}

    def list_labels(self) -> list[Label]:
        """The current label of every labeled item (:mod:`shared.core.answers`)."""
        with self._cursor() as con:
            rows = con.execute(f"SELECT {_LABEL_COLUMNS} FROM ({sql.CURRENT_LABELS}) ORDER BY item_id").fetchall()
        return [_label_row(r) for r in rows]

    def awaiting_labels(self) -> int:
        with self._cursor() as con:
            return _scalar(con, "SELECT count(DISTINCT s.item_id) FROM selections s WHERE s.handed_off "
                                f"AND NOT EXISTS (SELECT 1 FROM ({sql.CURRENT_LABELS}) l WHERE l.item_id = s.item_id)")

    def count_labels(self) -> int:
        with self._cursor() as con:
            return _scalar(con, f"SELECT count(*) FROM ({sql.CURRENT_LABELS})")


    # model versions ----------------------------------------------------------------------
    def upsert_model_version(self, mv: ModelVersion) -> None:
        with self._cursor() as con, _transaction(con):
            if mv.status is ModelStatus.SERVING:
                con.execute(
                    "UPDATE model_versions SET status = 'retired' "
                    "WHERE model_name = ? AND status = 'serving' AND version <> ?",
                    [mv.name, mv.version],
                )
            con.execute(
                "INSERT OR REPLACE INTO model_versions VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [mv.name, mv.version, list(mv.class_names), json.dumps(dict(mv.metrics)),
                 mv.artifact_uri, mv.status.value, _naive_utc(mv.created_at),
                 mv.trained_on_labels],
            )

    def _versions(self, where: str, params: list[object]) -> list[ModelVersion]:
        with self._cursor() as con:
            rows = con.execute(
                "SELECT model_name, version, class_names, metrics, artifact_uri, status, created_at, "
                f"trained_on_labels FROM model_versions WHERE {where} ORDER BY created_at, version",
                params,
            ).fetchall()
        return [
            ModelVersion(r[0], r[1], tuple(r[2]), json.loads(r[3]), r[4], ModelStatus(r[5]),
                         _aware(r[6]), r[7])
            for r in rows
        ]

    def get_model_version(self, name: str, version: str) -> ModelVersion:
        found = self._versions("model_name = ? AND version = ?", [name, version])
        if not found:
            raise NotFoundError(f"model {name!r} has no version {version!r}")
        return found[0]

    def serving_version(self, name: str) -> ModelVersion | None:
        found = self._versions("model_name = ? AND status = 'serving'", [name])
        return found[-1] if found else None

    def list_model_versions(self, name: str) -> list[ModelVersion]:
        return self._versions("model_name = ?", [name])


def _scalar(con: duckdb.DuckDBPyConnection, query: str) -> int:
    return int(con.execute(query).fetchall()[0][0])


@contextmanager
def _transaction(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """A write transaction: committed when the block ends, rolled back if it raises."""
    con.execute("BEGIN")
    try:
        yield
    except Exception:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")


@contextmanager
def _registered(con: duckdb.DuckDBPyConnection, name: str, table: pa.Table) -> Iterator[None]:
    """An Arrow table visible to SQL as ``name`` for the block."""
    con.register(name, table)
    try:
        yield
    finally:
        con.unregister(name)


@contextmanager
def _snapshot(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """One read transaction: a bound and the rows read within it come from the same snapshot."""
    con.execute("BEGIN")
    try:
        yield
    finally:
        con.execute("COMMIT")


_EMPTY_CANDIDATES = pa.table({
    "item_id": pa.array([], pa.string()), "item_uri": pa.array([], pa.string()),
    "probabilities": pa.array([], pa.list_(pa.float32())), "embedding": pa.array([], pa.list_(pa.float32())),
})


def _matrix(column: pa.ChunkedArray, n: int) -> np.ndarray | None:
    if n == 0:
        return None
    flat = column.combine_chunks()
    values = flat.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return values.reshape(n, -1)


_LABEL_COLUMNS = "item_id, label, export_id, export_sha256, labeled_at, answer_id, retracted, recorded_at"


def _label_row(r: Sequence[Any]) -> Label:
    return Label(r[0], r[1], r[2], r[3], _aware(r[4]), r[5], bool(r[6]), _aware(r[7]))
