"""The KQL selection queries: load the shipped ``.kql`` files and build their parameter values.

Each query is one file under ``shared/kql`` and declares its inputs with ``declare query_parameters``;
Python never formats a value into query text. It only supplies values, checked here against the
declaration (a missing or unexpected name is a programming error, caught before a query is sent).
Pure: file reads of the package's own query texts only, no SDK.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

import numpy as np

from shared.core.selection import CandidateFilter
from shared.core.uncertainty import RANKED_STRATEGIES

KQL_DIR = Path(__file__).resolve().parents[1] / "kql"
_DECLARE = re.compile(r"^\s*declare\s+query_parameters\s*\(([^)]*)\)\s*;", re.MULTILINE)
_PARAM = re.compile(r"^\s*(\w+)\s*:\s*(\w+)\s*$")


def query_names() -> tuple[str, ...]:
    """Every shipped query (file stem), sorted."""
    return tuple(sorted(p.stem for p in KQL_DIR.glob("*.kql")))


@cache
def load(name: str) -> str:
    """The text of ``shared/kql/<name>.kql``."""
    path = KQL_DIR / f"{name}.kql"
    if not path.is_file():
        raise ValueError(f"no KQL query {name!r}; known: {', '.join(query_names())}")
    return path.read_text(encoding="utf-8")


def top_k_name(strategy: str) -> str:
    if strategy not in RANKED_STRATEGIES:
        raise ValueError(f"no KQL top-k query for strategy {strategy!r}; known: {', '.join(RANKED_STRATEGIES)}")
    return f"top_k_{strategy}"


def declared(text: str) -> dict[str, str]:
    """The ``declare query_parameters`` of a query: name -> KQL type (empty when it declares none)."""
    match = _DECLARE.search(text)
    if match is None:
        return {}
    out: dict[str, str] = {}
    for part in match.group(1).split(","):
        m = _PARAM.match(part)
        if m is None:
            raise ValueError(f"cannot read query parameter declaration {part.strip()!r}")
        out[m.group(1)] = m.group(2)
    return out


def filter_values(flt: CandidateFilter) -> dict[str, object]:
    """Typed values of the selection contract's parameters (model, version, window)."""
    return {
        "model_name": flt.model_name,
        "model_version": flt.model_version,
        "window_start": _to_datetime(flt.window_start),
        "window_end": _to_datetime(flt.window_end),
    }


def parameters(text: str, values: dict[str, object]) -> dict[str, object]:
    """``values`` checked against the query's declaration: exactly the declared names, right kinds."""
    decl = declared(text)
    missing = sorted(set(decl) - set(values))
    extra = sorted(set(values) - set(decl))
    if missing or extra:
        raise ValueError(f"query parameters do not match the declaration: missing {missing}, unexpected {extra}")
    for name, kql_type in decl.items():
        _check_kind(name, kql_type, values[name])
    return dict(values)


def literal(kql_type: str, value: object) -> str:
    """A value as a client request parameter carries it: the raw text for ``string``, a KQL literal
    of the declared type otherwise (the service parses it by the declaration, never as query text)."""
    _check_kind("value", kql_type, value)
    if kql_type == "string":
        return str(value)
    if kql_type in ("long", "int"):
        return str(int(value))  # type: ignore[call-overload]
    if kql_type == "real":
        return repr(float(value))  # type: ignore[arg-type]
    if kql_type == "bool":
        return "true" if value else "false"
    if kql_type == "datetime":
        assert isinstance(value, datetime)  # checked by _check_kind above
        utc = value.astimezone(UTC)
        return f"datetime({utc.strftime('%Y-%m-%dT%H:%M:%S.%f')}Z)"
    if kql_type == "dynamic":
        return f"dynamic({json.dumps(value, ensure_ascii=False)})"
    raise ValueError(f"no literal form for KQL type {kql_type!r}")


def literals(text: str, values: dict[str, object]) -> dict[str, str]:
    """The client request parameters of a query: every declared name -> its literal."""
    decl = declared(text)
    return {name: literal(decl[name], value) for name, value in parameters(text, values).items()}


def _to_datetime(value: np.datetime64) -> datetime:
    """A naive-UTC datetime64 as an aware UTC datetime (microsecond precision, as the stores keep)."""
    micros = int(value.astype("datetime64[us]").astype(np.int64))
    return datetime(1970, 1, 1, tzinfo=UTC) + np.timedelta64(micros, "us").item()


def _check_kind(name: str, kql_type: str, value: object) -> None:
    ok = {
        "string": lambda v: isinstance(v, str),
        "long": lambda v: isinstance(v, int | np.integer) and not isinstance(v, bool),
        "int": lambda v: isinstance(v, int | np.integer) and not isinstance(v, bool),
        "real": lambda v: isinstance(v, float | int) and not isinstance(v, bool),
        "bool": lambda v: isinstance(v, bool),
        "datetime": lambda v: isinstance(v, datetime) and v.tzinfo is not None,
        "dynamic": lambda v: isinstance(v, list | dict),
    }.get(kql_type)
    if ok is None:
        raise ValueError(f"query parameter {name!r} has unsupported KQL type {kql_type!r}")
    if not ok(value):
        raise ValueError(f"query parameter {name!r} must be a {kql_type} (aware datetimes only), got {value!r}")
