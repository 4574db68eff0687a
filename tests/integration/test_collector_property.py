"""The collector's contract under random, often hostile, bodies (hypothesis).

Bodies are generated from the published JSON Schema (``docs/scoring-result.schema.json``): each
property of a record gets a strategy from its schema node, and a few properties get a semantic
override so that most unmutated records are valid. Random mutations then break them (wrong types,
booleans and numeric strings for numbers, huge or mismatched embeddings, hostile URIs, ancient and
future times, missing and extra fields, NaN, unsafe ids). Every body goes through the indexed app's
``post_predictions`` with a real ``azure.functions.HttpRequest`` on the embedded backend, and:

* a 2xx stores every record of the batch (each item is in the store afterwards);
* a 4xx stores nothing (rows in DuckDB and files in the object store unchanged);
* nothing else happens: no 5xx, no exception escapes the handler.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from function_app import build_app
from functions.scoring_collector import wiring
from shared.core.records import ModelStatus, ModelVersion
from shared.settings import get_settings, load_settings

SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "docs" / "scoring-result.schema.json").read_text())
RECORD = SCHEMA["$defs"]["ScoringRecord"]
PROPERTIES: dict[str, dict[str, Any]] = RECORD["properties"]
REQUIRED: list[str] = RECORD["required"]
REGISTERED = ("cat", "dog", "eel")  # model "m" version "1" is registered with these classes
EMBEDDING_DIM = 4
OFFSETS = st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m)))


# --- strategies from the schema ---------------------------------------------------------------------

def from_schema(node: dict[str, Any]) -> st.SearchStrategy[Any]:
    """A strategy for the JSON values a schema node allows (the subset pydantic emits)."""
    if "anyOf" in node:
        return st.one_of(*(from_schema(n) for n in node["anyOf"]))
    kind = node.get("type")
    if kind == "string":
        if node.get("format") == "date-time":
            return st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30),
                                timezones=OFFSETS).map(datetime.isoformat)
        return st.text(min_size=node.get("minLength", 0), max_size=min(node.get("maxLength", 16), 16))
    if kind == "number":
        return st.floats(width=64, allow_nan=False, allow_infinity=False)
    if kind == "integer":
        return st.integers()
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    if kind == "array":
        return st.lists(from_schema(node["items"]), min_size=node.get("minItems", 0),
                        max_size=max(node.get("minItems", 0), 6))
    raise AssertionError(f"no strategy for schema node {node}")


def probabilities(n: int) -> st.SearchStrategy[list[float]]:
    def normalise(weights: list[float]) -> list[float]:
        total = sum(weights)
        return [w / total for w in weights]
    return st.lists(st.floats(0.01, 1.0), min_size=n, max_size=n).map(normalise)


@st.composite
def valid_record(draw: st.DrawFn, root: str) -> dict[str, Any]:
    """A record built property by property from the schema; where the schema cannot say what is
    valid (sums, classes, safe ids, trusted URIs, plausible times), an override does."""
    registered = draw(st.booleans())
    classes = list(REGISTERED) if registered else draw(st.sampled_from([["a", "b"], ["x", "y", "z", "w"]]))
    item_id = f"item-{draw(st.uuids()).hex[:12]}"
    overrides: dict[str, st.SearchStrategy[Any]] = {
        "prediction_id": st.one_of(st.none(), st.uuids().map(str)),
        "item_id": st.just(item_id),
        "item_uri": st.just(f"{root}items/{item_id}.png"),
        "item_base64": st.sampled_from(["iVBORw0KGgo=", "AAECAwQ="]),
        "model_name": st.just("m"),
        "model_version": st.just("1" if registered else "2"),
        "class_names": st.just(None if registered else classes),
        "probabilities": probabilities(len(classes)),
        "predicted_label": st.sampled_from(classes),
        "scored_at": st.datetimes(min_value=datetime(2000, 1, 2), max_value=datetime(2026, 1, 1),
                                  timezones=OFFSETS).map(datetime.isoformat),
        "embedding": st.one_of(st.none(), st.lists(st.floats(-1, 1), min_size=EMBEDDING_DIM,
                                                   max_size=EMBEDDING_DIM)),
    }
    record: dict[str, Any] = {}
    for name, node in PROPERTIES.items():
        if name not in REQUIRED and name not in ("item_uri", "item_base64") and not draw(st.booleans()):
            continue
        value = draw(overrides.get(name, from_schema(node)))
        if value is not None:
            record[name] = value
    inline = draw(st.booleans())
    record.pop("item_uri" if inline else "item_base64")  # exactly one of them
    return record


# --- mutations: (name, breaks the record for sure?, how) ----------------------------------------------

HOSTILE_URIS = ["file:///etc/passwd", "http://169.254.169.254/metadata/instance?api-version=2021-02-01",
                "ftp://files.example/x.png", "http://files.example/x.png", "https://files.example/x.png",
                "file:///tmp/../etc/passwd", "gopher://x/", "//no-scheme/x.png", "", "x" * 3000]
ANCIENT = ["0001-01-01T00:00:00Z", "0001-01-01T00:30:00+01:00", "1970-01-01T00:00:00Z", "1999-12-31T23:59:59Z"]
OTHER_TYPES: list[Any] = [True, False, 0, 1.5, "0.5", "", [], {}, None, [1, 2], {"a": 1}]

Mutation = Callable[[st.DrawFn, dict[str, Any]], bool]  # mutates in place; True if it surely broke it


def wrong_type(draw: st.DrawFn, rec: dict[str, Any]) -> bool:
    rec[draw(st.sampled_from(sorted(PROPERTIES)))] = draw(st.sampled_from(OTHER_TYPES))
    return False  # e.g. None for an optional field, or 0 for a number, may still be valid


def booleans_for_numbers(field: str) -> Mutation:
    def mutate(draw: st.DrawFn, rec: dict[str, Any]) -> bool:
        # One true among falses sums to 1: lax parsing would take it for a probability vector.
        n = len(rec.get(field) or [0.5, 0.5])
        hot = draw(st.integers(0, n - 1))
        rec[field] = [i == hot for i in range(n)]
        return True
    mutate.__name__ = f"booleans_in_{field}"
    return mutate


def numeric_strings(field: str) -> Mutation:
    def mutate(draw: st.DrawFn, rec: dict[str, Any]) -> bool:
        values = list(rec.get(field) or [0.5, 0.5])
        for k in draw(st.sets(st.integers(0, len(values) - 1), min_size=1)):
            values[k] = str(values[k])
        rec[field] = values
        return True
    mutate.__name__ = f"numeric_strings_in_{field}"
    return mutate


def huge_embedding(draw: st.DrawFn, rec: dict[str, Any]) -> bool:
    rec["embedding"] = [0.25] * draw(st.integers(4097, 12_000))
    return True


def mismatched_embedding(draw: st.DrawFn, rec: dict[str, Any]) -> bool:
    rec["embedding"] = [0.5] * draw(st.sampled_from([1, EMBEDDING_DIM - 1, EMBEDDING_DIM + 1, 64]))
    return False  # refused only against another embedding of the version (in the batch or the store)


def beyond_float32(draw: st.DrawFn, rec: dict[str, Any]) -> bool:
    values = list(rec.get("embedding") or [0.5] * EMBEDDING_DIM)
    values[draw(st.integers(0, len(values) - 1))] = draw(st.sampled_from([1e39, -3.5e38, 1.7e308]))
    rec["embedding"] = values  # finite in JSON, infinite as the stored float32
    return True


def hostile_uri(draw: st.DrawFn, rec: dict[str, Any]) -> bool:
    inside = rec.get("item_uri") if isinstance(rec.get("item_uri"), str) else "file:///data/blobs/items/x.png"
    escapes = [inside + "/../../../../../etc/passwd", inside.rsplit("/", 1)[0] + "/%2e%2e/%2E%2E/%2e%2e/etc/passwd"]
    rec.pop("item_base64", None)
    rec["item_uri"] = draw(st.sampled_from([*HOSTILE_URIS, *escapes]))  # the latter start inside the store
    return True


def ancient_time(draw: st.DrawFn, rec: dict[str, Any]) -> bool:
    rec["scored_at"] = draw(st.sampled_from(ANCIENT))
    return True


def future_time(draw: st.DrawFn, rec: dict[str, Any]) -> bool:
    rec["scored_at"] = draw(st.sampled_from(["2999-01-01T00:00:00Z", "9999-12-31T23:59:59-01:00"]))
    return True


def missing_field(draw: st.DrawFn, rec: dict[str, Any]) -> bool:
    rec.pop(draw(st.sampled_from(REQUIRED)), None)
    return True


def extra_field(draw: st.DrawFn, rec: dict[str, Any]) -> bool:
    name = draw(st.text(min_size=1, max_size=8).filter(lambda k: k not in PROPERTIES))
    rec[name] = draw(st.sampled_from(OTHER_TYPES))
    return True


def not_finite(draw: st.DrawFn, rec: dict[str, Any]) -> bool:
    field = draw(st.sampled_from(["probabilities", "embedding"]))
    values = list(rec.get(field) or [0.5, 0.5])
    values[0] = draw(st.sampled_from([float("nan"), float("inf"), float("-inf")]))
    rec[field] = values
    return True


def unsafe_id(draw: st.DrawFn, rec: dict[str, Any]) -> bool:
    rec["item_id"] = draw(st.sampled_from(["../etc/passwd", "a/b", "a\\b", "x..y", "\x00", "a" * 257]))
    return True


MUTATIONS: list[Mutation] = [
    wrong_type, booleans_for_numbers("probabilities"), booleans_for_numbers("embedding"),
    numeric_strings("probabilities"), numeric_strings("embedding"), huge_embedding, mismatched_embedding,
    beyond_float32, hostile_uri, ancient_time, future_time, missing_field, extra_field, not_finite, unsafe_id]


@st.composite
def bodies(draw: st.DrawFn, root: str, forced: Mutation | None = None) -> tuple[bytes, int, bool]:
    """(JSON body, number of records, whether a mutation surely made it invalid). A quarter of the
    bodies are left valid; ``forced`` is applied to one record of every body."""
    records = draw(st.lists(valid_record(root), min_size=1, max_size=5))
    broken = False
    chosen = [draw(st.sampled_from(MUTATIONS)) for _ in range(draw(st.sampled_from([0, 1, 1, 2])))]
    # One mutation per record: a second one on the same record can undo the first (a valid embedding
    # over numeric strings), and the body would be called broken while it is valid.
    order = draw(st.permutations(range(len(records))))
    for mutate, i in zip([forced] if forced is not None else chosen, order, strict=False):
        broken |= mutate(draw, records[i])
    payload: object = {"records": records} if draw(st.booleans()) else records
    return json.dumps(payload).encode(), len(records), broken


# --- the contract ----------------------------------------------------------------------------------

@pytest.fixture
def collector(tmp_path, monkeypatch):
    monkeypatch.setenv("AL_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    wiring.collector.cache_clear()
    col = wiring.collector()
    col.catalog.upsert_model_version(ModelVersion("m", "1", REGISTERED, status=ModelStatus.SERVING))
    yield col
    wiring.collector.cache_clear()
    get_settings.cache_clear()


def stored(col: wiring.Collector) -> tuple[int, frozenset[str]]:
    """Rows in the DuckDB store and every file in the object store."""
    root = Path(col.settings.data_dir) / "blobs"
    files = frozenset(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    return col.catalog.count_predictions(), files


def items_in_store(col: wiring.Collector, item_ids: list[str]) -> set[str]:
    with col.catalog._cursor() as con:
        rows = con.execute("SELECT DISTINCT item_id FROM predictions WHERE list_contains($ids, item_id)",
                           {"ids": item_ids}).fetchall()
    return {r[0] for r in rows}


@pytest.fixture(scope="module")
def post_predictions():
    """The indexed app's function (a fresh app object: get_functions() once per app)."""
    app = build_app(load_settings(stages="scoring_collector"))
    return next(f.get_user_function() for f in app.get_functions() if f.get_function_name() == "post_predictions")


def check_contract(collector: wiring.Collector, post: Callable[[func.HttpRequest], func.HttpResponse],
                   strategy: st.SearchStrategy[tuple[bytes, int, bool]], examples: int) -> dict[int, int]:
    """Post ``examples`` bodies and hold each answer to the contract; the count of answers per class."""
    seen: dict[int, int] = {}

    @settings(max_examples=examples, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(strategy)
    def contract(case: tuple[bytes, int, bool]) -> None:
        body, n, broken = case
        before = stored(collector)
        req = func.HttpRequest(method="POST", url="http://localhost/api/predictions",
                               headers={"content-type": "application/json"}, body=body)
        resp = post(req)  # an exception here is what the host would answer with a 500
        status, answer = resp.status_code, json.loads(resp.get_body())
        seen[status // 100] = seen.get(status // 100, 0) + 1
        after = stored(collector)
        assert status in (202, 400, 413), (status, answer)
        if status == 202:
            assert not broken, f"a surely invalid body was accepted: {body[:500]!r}"
            assert answer["accepted"] + answer["duplicates"] == n and answer["ingested"] is True
            assert after[0] == before[0] + answer["accepted"]
            records = json.loads(body)
            records = records["records"] if isinstance(records, dict) else records
            ids = [r["item_id"] for r in records]
            assert items_in_store(collector, ids) == set(ids), "a 2xx must store every record"
        else:
            assert after == before, f"{status} but something was stored: {answer}"
            assert answer["error"] and (status != 400 or answer.get("problems") is not None
                                        or "malformed" in answer["error"])

    contract()
    return seen


def root_of(collector: wiring.Collector) -> str:
    return (Path(collector.settings.data_dir) / "blobs").resolve().as_uri() + "/"


def test_every_body_gets_a_2xx_with_all_stored_or_a_4xx_with_nothing_stored(collector, post_predictions):
    seen = check_contract(collector, post_predictions, bodies(root_of(collector)), examples=150)
    assert seen.get(2) and seen.get(4), f"the bodies should mix valid and invalid ones: {seen}"


@pytest.mark.parametrize("mutation", MUTATIONS, ids=lambda m: m.__name__)
def test_each_mutation_keeps_the_contract(collector, post_predictions, mutation):
    """Every mutation a few times on its own (the random mix above may draw one rarely)."""
    check_contract(collector, post_predictions, bodies(root_of(collector), forced=mutation), examples=8)


def test_the_generator_covers_every_property_of_the_schema():
    """A new field in the schema gets a strategy (from its node) before it can be forgotten here."""
    for name, node in PROPERTIES.items():
        assert from_schema(node) is not None, name
    assert set(REQUIRED) <= set(PROPERTIES)
