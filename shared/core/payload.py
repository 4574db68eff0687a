"""The scoring-result payload: schema (pydantic) and the semantic checks, every reason reported.

A batch is accepted whole or not at all: :func:`validate_batch` returns the parsed records or
raises :class:`BatchRejectedError` listing each record's index, field and reason.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import re
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import cast

import numpy as np
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StrictFloat, TypeAdapter, ValidationError
from pydantic_core import to_json

from shared.core import uncertainty
from shared.core.item_uris import ItemUriPolicy, item_uri_problem
from shared.core.naming import item_id_problem
from shared.errors import BatchRejectedError, Problem

SUM_TOLERANCE = 1e-3
# Defaults of AL_MIN_SCORED_AT and AL_MAX_EMBEDDING_DIM (shared/settings.py).
MIN_SCORED_AT = datetime(2000, 1, 1, tzinfo=UTC)
MAX_EMBEDDING_DIM = 4096


class ScoringRecord(BaseModel):
    """One scoring result as the monitoring client sends it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prediction_id: str | None = Field(None, min_length=1, max_length=128)
    item_id: str = Field(min_length=1, max_length=256)
    item_uri: str | None = Field(None, min_length=1, max_length=2048, description=(
        "Where the item is: https:// on a storage account the deployment allows (AL_ALLOWED_ITEM_HOSTS, "
        "or its own), or file:// inside the object store (embedded backend)."))
    item_base64: str | None = None
    model_name: str = Field(min_length=1, max_length=128)
    model_version: str = Field(min_length=1, max_length=64)
    class_names: list[str] | None = None
    # Strict: JSON numbers only. Lax mode would turn true/false and "0.7" into floats.
    probabilities: list[StrictFloat] = Field(min_length=2, description=(
        "One JSON number per class (no booleans or numeric strings), finite, >= 0, summing to 1."))
    predicted_label: str = Field(min_length=1)
    scored_at: AwareDatetime = Field(description=(
        "With a time zone; not before AL_MIN_SCORED_AT (2000-01-01), at most AL_MAX_FUTURE_SECONDS ahead."))
    embedding: list[StrictFloat] | None = Field(None, min_length=1, description=(
        "JSON numbers, finite; at most AL_MAX_EMBEDDING_DIM (4096) long; one length per model version."))


_BATCH = TypeAdapter(list[ScoringRecord])
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_ZERO = timedelta(0)
_FLOAT32_MAX = float(np.finfo(np.float32).max)
# Ids made only of these characters pass item_id_problem's checks (bar ".."): skip its slower scan.
_PLAIN_ID = re.compile(r"[A-Za-z0-9_.:@+=~ -]{1,256}")


def derive_prediction_id(record: ScoringRecord, probability_bytes: bytes | None = None) -> str:
    """A deterministic id from the content, so a re-sent record without an id is still a duplicate:
    item, model, version, the scoring instant (microseconds since the epoch, so one instant written
    in two time zones is one id) and the probabilities' float64 bytes."""
    micros = (record.scored_at - _EPOCH) // _MICROSECOND
    head = "\x1f".join((record.item_id, record.model_name, record.model_version, str(micros)))
    digest = hashlib.sha256(head.encode())
    if probability_bytes is None:
        probability_bytes = struct.pack(f"<{len(record.probabilities)}d", *record.probabilities)
    digest.update(probability_bytes)
    return digest.hexdigest()[:32]


def records_from_json(body: bytes, *, max_records: int) -> list[ScoringRecord] | None:
    """The fast path for a clean body: a JSON array of valid records, parsed and validated in one
    pass. None whenever the body needs the full path (an envelope object, too many records, NaN or
    any other error), which then reports every problem of every record."""
    if body.lstrip()[:1] != b"[":
        return None
    try:
        records = _BATCH.validate_json(body)
    except ValueError:  # pydantic's ValidationError is a ValueError
        return None
    return records if 0 < len(records) <= max_records else None


def validate_batch(
    payload: object,
    *,
    classes_of: Callable[[str, str], Sequence[str] | None],
    max_records: int,
    max_item_bytes: int,
    now: datetime | None = None,
    max_future: timedelta = timedelta(minutes=5),
    min_scored_at: datetime | None = MIN_SCORED_AT,
    item_uris: ItemUriPolicy | None = None,
    max_embedding_dim: int | None = MAX_EMBEDDING_DIM,
    embedding_dim_of: Callable[[str, str], int | None] | None = None,
) -> list[tuple[ScoringRecord, tuple[str, ...], bytes | None]]:
    """Parse and check a batch; return (record, its class names, decoded inline bytes) per record.

    ``classes_of(model_name, model_version)`` gives the registered classes of a model version (or
    None); a record may instead carry ``class_names`` itself. With ``now``, a ``scored_at`` more
    than ``max_future`` ahead of it is refused (a wrong clock would otherwise win "latest" forever);
    one before ``min_scored_at`` is refused as implausible.

    ``item_uris``: where an ``item_uri`` may point (None: not checked; whoever stores the rows must
    pass one). Embeddings are at most ``max_embedding_dim`` long and keep one length per model
    version: ``embedding_dim_of(model_name, model_version)`` gives the length already stored (or
    None), else the first one in the batch sets it; and one length per batch, which is stored as one
    matrix.
    """
    items: list[object]
    if isinstance(payload, list):
        items = payload
    elif isinstance(payload, Mapping) and isinstance(payload.get("records"), list):
        items = payload["records"]
    else:
        raise BatchRejectedError("the body must be a JSON array of scoring results "
                                 "(or an object with a 'records' array)")
    if not items:
        raise BatchRejectedError("the batch is empty", [Problem(None, "records", "no records")])
    if len(items) > max_records:
        raise BatchRejectedError(
            "the batch is too large",
            [Problem(None, "records", f"{len(items)} records, the limit is {max_records}")],
        )
    try:
        # Records from records_from_json are validated already (a client can only send dicts).
        records: list[ScoringRecord] = (
            cast(list[ScoringRecord], items) if all(type(r) is ScoringRecord for r in items)
            else _BATCH.validate_python(items)
        )
    except ValidationError as exc:
        raise BatchRejectedError("invalid scoring results", _schema_problems(exc)) from None

    problems: list[Problem] = []
    out: list[tuple[ScoringRecord, tuple[str, ...], bytes | None]] = []
    kept: list[int] = []  # the batch index of each record in out
    seen_ids: dict[str, int] = {}
    flagged, vectors = _flag_probabilities(records)
    latest = now + max_future if now is not None else None
    known: dict[tuple[str, str], tuple[str, ...] | None] = {}
    # (model, version) -> (embedding length, where it was first seen)
    dims: dict[tuple[str, str], tuple[int | None, str]] = {}
    checked_classes: dict[tuple[str, ...], tuple[frozenset[str], bool]] = {}
    for i, rec in enumerate(records):
        before = len(problems)
        why = None if _PLAIN_ID.fullmatch(rec.item_id) and ".." not in rec.item_id else item_id_problem(rec.item_id)
        if why:
            problems.append(Problem(i, "item_id", why))
        if (rec.item_uri is None) == (rec.item_base64 is None):
            problems.append(Problem(i, "item_uri", "give exactly one of item_uri and item_base64"))
        elif rec.item_uri is not None and item_uris is not None:
            why = item_uri_problem(rec.item_uri, item_uris)
            if why:
                problems.append(Problem(i, "item_uri", why))
        raw: bytes | None = None
        if rec.item_base64 is not None:
            try:
                raw = base64.b64decode(rec.item_base64, validate=True)
            except (binascii.Error, ValueError):
                problems.append(Problem(i, "item_base64", "not valid base64"))
            else:
                if len(raw) > max_item_bytes:
                    problems.append(Problem(i, "item_base64", f"{len(raw)} bytes, the limit is {max_item_bytes}"))
                elif not raw:
                    problems.append(Problem(i, "item_base64", "empty item"))
        if rec.class_names:
            classes: tuple[str, ...] | None = tuple(rec.class_names)
        else:
            key = (rec.model_name, rec.model_version)
            if key not in known:
                registered = classes_of(*key)
                known[key] = tuple(registered) if registered else None
            classes = known[key]
        if not classes:
            problems.append(Problem(i, "class_names", f"model {rec.model_name!r} version "
                                    f"{rec.model_version!r} is not registered; send class_names"))
            classes = ()
            label_set: frozenset[str] = frozenset()
        else:
            if classes not in checked_classes:
                checked_classes[classes] = (frozenset(classes), len(set(classes)) == len(classes))
            label_set, distinct = checked_classes[classes]
            if not distinct:
                problems.append(Problem(i, "class_names", "class names must be distinct"))
        if i in flagged or (classes and len(rec.probabilities) != len(classes)):
            problems.extend(_probability_problems(i, rec.probabilities, len(classes)))
        if classes and rec.predicted_label not in label_set:
            problems.append(Problem(i, "predicted_label", f"{rec.predicted_label!r} is not one of the model's classes"))
        if latest is not None and rec.scored_at > latest:
            ahead = (rec.scored_at - latest + max_future).total_seconds()
            problems.append(Problem(i, "scored_at", f"{ahead:.0f} s in the future; at most "
                                    f"{max_future.total_seconds():.0f} s of clock skew is accepted"))
        elif min_scored_at is not None and rec.scored_at < min_scored_at:
            problems.append(Problem(i, "scored_at", f"{rec.scored_at.isoformat()} is before "
                                    f"{min_scored_at.isoformat()} (AL_MIN_SCORED_AT); is the scoring clock set?"))
        elif rec.scored_at.year in (1, 9999) and _out_of_range(rec.scored_at):
            problems.append(Problem(i, "scored_at", "out of range once converted to UTC"))
        if rec.embedding is not None:
            why = _embedding_problem(rec, i, max_embedding_dim, embedding_dim_of, dims)
            if why:
                problems.append(Problem(i, "embedding", why))
        pid = rec.prediction_id or derive_prediction_id(rec, vectors.get(i))
        if pid in seen_ids:
            problems.append(Problem(i, "prediction_id", f"duplicate of record {seen_ids[pid]} in this batch"))
        seen_ids.setdefault(pid, i)
        if len(problems) == before:
            # The record was built by this call and is not shared yet: filling its id in place saves a
            # model_copy per record (a fifth of the validation time on 67-class batches).
            rec.__dict__["prediction_id"] = pid
            out.append((rec, tuple(classes), raw))
            kept.append(i)
    # Every version may keep its own length, but a batch is stored as one matrix: one length per batch.
    lengths = [(i, len(r.embedding)) for i, (r, _, _) in zip(kept, out, strict=True) if r.embedding is not None]
    for i, n in lengths[1:]:
        if n != lengths[0][1]:
            problems.append(Problem(i, "embedding", f"{n} values, but record {lengths[0][0]} has {lengths[0][1]}: "
                                    "a batch's embeddings need one length (send each model version on its own)"))
    if problems:
        raise BatchRejectedError("invalid scoring results", problems)
    return out


def _schema_problems(exc: ValidationError) -> list[Problem]:
    """pydantic's errors as problems. Non-numbers in ``probabilities``/``embedding`` become one problem
    per record and field (a vector of 67 strings is one mistake, not 67)."""
    found: list[Problem] = []
    numbers: dict[tuple[int | None, str], tuple[int, int, object, int]] = {}  # -> (slot, first k, input, count)
    for err in exc.errors():
        loc = list(err["loc"])
        first = loc.pop(0) if loc and isinstance(loc[0], int) else None
        index = first if isinstance(first, int) else None
        if (err["type"] == "float_type" and len(loc) == 2 and loc[0] in ("probabilities", "embedding")
                and isinstance(loc[1], int)):
            key = (index, str(loc[0]))
            if key in numbers:
                slot, k, value, count = numbers[key]
                numbers[key] = (slot, k, value, count + 1)
            else:
                numbers[key] = (len(found), loc[1], err.get("input"), 1)
                found.append(Problem(index, key[1], ""))
            continue
        field = ".".join(str(p) for p in loc) or "record"
        found.append(Problem(index, field, err["msg"]))
    for (index, field), (slot, k, value, count) in numbers.items():
        kind = "a boolean" if isinstance(value, bool) else "a string" if isinstance(value, str) else "not a number"
        shown = json.dumps(value, default=str)
        shown = shown if len(shown) <= 40 else shown[:37] + "..."
        found[slot] = Problem(index, field, f"values must be JSON numbers (not booleans or numeric strings): "
                                            f"{count} {'is' if count == 1 else 'are'} not, the first at [{k}] "
                                            f"is {kind} ({shown})")
    return found


def _embedding_problem(rec: ScoringRecord, i: int, max_dim: int | None,
                       dim_of: Callable[[str, str], int | None] | None,
                       dims: dict[tuple[str, str], tuple[int | None, str]]) -> str | None:
    """Why a record's embedding is refused (too long, not finite, another length than its model
    version's), or None; the first accepted length of a version is remembered in ``dims``."""
    assert rec.embedding is not None
    n = len(rec.embedding)
    if max_dim is not None and n > max_dim:
        return f"{n} values, the limit is {max_dim} (AL_MAX_EMBEDDING_DIM)"
    values = np.asarray(rec.embedding, dtype=np.float64)
    if not np.isfinite(values).all():
        return "values must be finite"
    if (np.abs(values) > _FLOAT32_MAX).any():
        return f"values must lie within ±{_FLOAT32_MAX:.4g} (embeddings are stored as float32)"
    key = (rec.model_name, rec.model_version)
    if key not in dims:
        stored = dim_of(*key) if dim_of is not None else None
        dims[key] = (stored, "in the store") if stored else (None, "")
    want, where = dims[key]
    if want is None:
        dims[key] = (n, f"at record {i}")
        return None
    if n != want:
        return (f"{n} values, but model {rec.model_name!r} version {rec.model_version!r} has embeddings of "
                f"{want} ({where}); one length per model version")
    return None


def _out_of_range(ts: datetime) -> bool:
    try:
        ts.astimezone(UTC)
    except OverflowError:
        return True
    return False


def _flag_probabilities(records: Sequence[ScoringRecord]) -> tuple[set[int], dict[int, bytes]]:
    """Indices of records whose probabilities are non-finite, negative or do not sum to 1, and each
    record's probabilities as little-endian float64 bytes (for the derived prediction id).

    Vectorised per vector length (the per-record check below only runs for these): validating
    1,000 records of 67 classes must cost milliseconds, not tens of them.
    """
    flagged: set[int] = set()
    vectors: dict[int, bytes] = {}
    by_length: dict[int, list[int]] = {}
    for i, rec in enumerate(records):
        by_length.setdefault(len(rec.probabilities), []).append(i)
    for rows in by_length.values():
        p = np.array([records[i].probabilities for i in rows], dtype=np.float64)
        with np.errstate(invalid="ignore"):
            bad = ~np.isfinite(p).all(axis=1) | (p < 0).any(axis=1) | (np.abs(p.sum(axis=1) - 1.0) > SUM_TOLERANCE)
        flagged.update(rows[k] for k in np.flatnonzero(bad))
        raw = p.astype("<f8", copy=False).tobytes()
        width = p.shape[1] * 8
        vectors.update((i, raw[k * width : (k + 1) * width]) for k, i in enumerate(rows))
    return flagged, vectors


def _probability_problems(i: int, values: Sequence[float], n_classes: int) -> list[Problem]:
    out = []
    p = np.asarray(values, dtype=np.float64)
    if n_classes and len(p) != n_classes:
        out.append(Problem(i, "probabilities", f"{len(p)} probabilities for {n_classes} classes"))
    if not np.isfinite(p).all():
        return [*out, Problem(i, "probabilities", "values must be finite")]
    if (p < 0).any():
        out.append(Problem(i, "probabilities", "values must not be negative"))
    total = math.fsum(values)
    if abs(total - 1.0) > SUM_TOLERANCE:
        out.append(Problem(i, "probabilities", f"sum to {total:.6f}, not 1 ± {SUM_TOLERANCE:g}"))
    return out



def batch_json_schema() -> dict[str, object]:
    """The published JSON Schema of a batch (``docs/scoring-result.schema.json`` is generated from it)."""
    schema = TypeAdapter(list[ScoringRecord]).json_schema()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Scoring results",
        "description": "A batch of scoring results for POST /api/predictions: a JSON array of records "
                       "(or an object with a 'records' array). Semantic checks (probabilities sum to 1 "
                       "and match the classes, label among the classes, exactly one of item_uri and "
                       "item_base64, item_uri on an allowed storage location, safe item ids, scored_at "
                       "neither implausibly old nor in the future, one embedding length per model version "
                       "and per batch) are documented in docs/collector.md.",
        **schema,
    }


# Landing lines: one JSON object per accepted prediction, the durable form ADX and DuckDB ingest.
# The last five are computed here, once per prediction, with the NumPy core (shared.core.uncertainty,
# the only home of the math): ADX stores them as columns (infra/adx/01-tables.kql) so that no query
# ranks by reading probability vectors. The embedded store computes the same values in SQL.
LANDING_SCORE_FIELDS = ("least_confidence", "margin", "entropy", "random_key", "random_seed")
LANDING_FIELDS = ("prediction_id", "item_id", "item_uri", "model_name", "model_version", "predicted_label",
                  "scored_at", "probabilities", "embedding", "ingested_at", *LANDING_SCORE_FIELDS)


def landing_jsonl(records: Sequence[ScoringRecord], item_uris: Sequence[str], landed_at: datetime,
                  *, seed: int = 0) -> bytes:
    """Accepted records (ids filled in, inline items replaced by their URIs) as JSON lines, with the
    uncertainty scores and the random key for the selection ``seed`` (``AL_SELECTION_SEED``)."""
    stamp = _utc_text(landed_at)
    scores = _landing_scores(records)
    keys = uncertainty.random_keys([rec.item_id for rec in records], seed)
    lines = []
    for rec, uri, (lc, mg, en), key in zip(records, item_uris, scores, keys, strict=True):
        lines.append(to_json({
            "prediction_id": rec.prediction_id, "item_id": rec.item_id, "item_uri": uri,
            "model_name": rec.model_name, "model_version": rec.model_version,
            "predicted_label": rec.predicted_label, "scored_at": _utc_text(rec.scored_at),
            "probabilities": rec.probabilities, "embedding": rec.embedding, "ingested_at": stamp,
            "least_confidence": lc, "margin": mg, "entropy": en, "random_key": key, "random_seed": seed,
        }))
    return b"\n".join(lines) + b"\n"


def _landing_scores(records: Sequence[ScoringRecord]) -> list[tuple[float, float, float]]:
    """(least confidence, margin, entropy) per record, vectorised per probability-vector length."""
    out: list[tuple[float, float, float]] = [(0.0, 0.0, 0.0)] * len(records)
    by_length: dict[int, list[int]] = {}
    for i, rec in enumerate(records):
        by_length.setdefault(len(rec.probabilities), []).append(i)
    for rows in by_length.values():
        p = np.array([records[i].probabilities for i in rows], dtype=np.float64)
        columns = zip(uncertainty.least_confidence(p).tolist(), uncertainty.margin(p).tolist(),
                      uncertainty.entropy(p).tolist(), strict=True)
        for i, values in zip(rows, columns, strict=True):
            out[i] = values
    return out


def parse_landing_jsonl(data: bytes) -> list[dict[str, object]]:
    """The rows of a landing blob (written by :func:`landing_jsonl`); a torn or foreign line raises."""
    rows = []
    for n, line in enumerate(data.splitlines(), start=1):
        if not line.strip():
            continue
        row = json.loads(line)
        # A line landed before the scores existed lacks them: still readable (the embedded store
        # computes its own; see docs/selection.md for ADX).
        missing = [f for f in LANDING_FIELDS if f not in row and f not in LANDING_SCORE_FIELDS]
        if missing:
            raise ValueError(f"landing line {n} lacks {missing}")
        rows.append(row)
    return rows


def landing_rows_by_width(rows: Iterable[Mapping[str, object]]) -> list[list[Mapping[str, object]]]:
    """Rows grouped by probability-vector length (one stored batch per width), in first-seen order."""
    groups: dict[int, list[Mapping[str, object]]] = {}
    for row in rows:
        groups.setdefault(len(row["probabilities"]), []).append(row)  # type: ignore[arg-type]
    return list(groups.values())


def _utc_text(ts: datetime) -> str:
    offset = ts.utcoffset()
    if offset is None:
        return ts.isoformat(timespec="microseconds") + "Z"
    if offset != _ZERO:  # most clients already send UTC: skip the conversion then
        ts = ts.astimezone(UTC)
    return ts.isoformat(timespec="microseconds")[:-6] + "Z"  # "+00:00" -> "Z"
