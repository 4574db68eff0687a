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
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from shared.core.naming import item_id_problem
from shared.errors import BatchRejectedError, Problem

SUM_TOLERANCE = 1e-3


class ScoringRecord(BaseModel):
    """One scoring result as the monitoring client sends it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prediction_id: str | None = Field(None, min_length=1, max_length=128)
    item_id: str = Field(min_length=1, max_length=256)
    item_uri: str | None = Field(None, min_length=1, max_length=2048)
    item_base64: str | None = None
    model_name: str = Field(min_length=1, max_length=128)
    model_version: str = Field(min_length=1, max_length=64)
    class_names: list[str] | None = None
    probabilities: list[float] = Field(min_length=2)
    predicted_label: str = Field(min_length=1)
    scored_at: AwareDatetime
    embedding: list[float] | None = None


_BATCH = TypeAdapter(list[ScoringRecord])


def derive_prediction_id(record: ScoringRecord) -> str:
    """A deterministic id from the content, so a re-sent record without an id is still a duplicate."""
    head = json.dumps([record.item_id, record.model_name, record.model_version,
                       record.scored_at.isoformat()], separators=(",", ":"))
    digest = hashlib.sha256(head.encode())
    digest.update(np.asarray(record.probabilities, dtype="<f8").tobytes())
    return digest.hexdigest()[:32]


def validate_batch(
    payload: object,
    *,
    classes_of: Callable[[str, str], Sequence[str] | None],
    max_records: int,
    max_item_bytes: int,
) -> list[tuple[ScoringRecord, tuple[str, ...], bytes | None]]:
    """Parse and check a batch; return (record, its class names, decoded inline bytes) per record.

    ``classes_of(model_name, model_version)`` gives the registered classes of a model version (or
    None); a record may instead carry ``class_names`` itself.
    """
    if not isinstance(payload, list):
        if isinstance(payload, Mapping) and isinstance(payload.get("records"), list):
            payload = payload["records"]
        else:
            raise BatchRejectedError("the body must be a JSON array of scoring results "
                                     "(or an object with a 'records' array)")
    if not payload:
        raise BatchRejectedError("the batch is empty", [Problem(None, "records", "no records")])
    if len(payload) > max_records:
        raise BatchRejectedError(
            "the batch is too large",
            [Problem(None, "records", f"{len(payload)} records, the limit is {max_records}")],
        )
    try:
        records = _BATCH.validate_python(payload)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = list(err["loc"])
            index = loc.pop(0) if loc and isinstance(loc[0], int) else None
            field = ".".join(str(p) for p in loc) or "record"
            problems.append(Problem(index, field, err["msg"]))
        raise BatchRejectedError("invalid scoring results", problems) from None

    problems: list[Problem] = []
    out: list[tuple[ScoringRecord, tuple[str, ...], bytes | None]] = []
    seen_ids: dict[str, int] = {}
    for i, rec in enumerate(records):
        before = len(problems)
        why = item_id_problem(rec.item_id)
        if why:
            problems.append(Problem(i, "item_id", why))
        if (rec.item_uri is None) == (rec.item_base64 is None):
            problems.append(Problem(i, "item_uri", "give exactly one of item_uri and item_base64"))
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
        classes = tuple(rec.class_names) if rec.class_names else classes_of(rec.model_name, rec.model_version)
        if not classes:
            problems.append(Problem(i, "class_names", f"model {rec.model_name!r} version "
                                    f"{rec.model_version!r} is not registered; send class_names"))
            classes = ()
        elif len(set(classes)) != len(classes):
            problems.append(Problem(i, "class_names", "class names must be distinct"))
        problems.extend(_probability_problems(i, rec.probabilities, len(classes)))
        if classes and rec.predicted_label not in classes:
            problems.append(Problem(i, "predicted_label", f"{rec.predicted_label!r} is not one of the model's classes"))
        if rec.embedding is not None and not np.isfinite(rec.embedding).all():
            problems.append(Problem(i, "embedding", "values must be finite"))
        pid = rec.prediction_id or derive_prediction_id(rec)
        if pid in seen_ids:
            problems.append(Problem(i, "prediction_id", f"duplicate of record {seen_ids[pid]} in this batch"))
        seen_ids.setdefault(pid, i)
        if len(problems) == before:
            out.append((rec.model_copy(update={"prediction_id": pid}), tuple(classes), raw))
    dims = {len(r.embedding) for r, _, _ in out if r.embedding is not None}
    if len(dims) > 1:
        problems.append(Problem(None, "embedding", f"all embeddings in a batch need one length, got {sorted(dims)}"))
    if problems:
        raise BatchRejectedError("invalid scoring results", problems)
    return out


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

