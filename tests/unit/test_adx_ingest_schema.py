"""infra/adx is the schema's single source: every command and query analyses cleanly with the Kusto
language service, the JSON mapping matches the landing lines, and the DuckDB schema mirrors it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import duckdb

from shared.adapters import adx_ingest
from shared.core import kql, sql
from shared.core.payload import LANDING_FIELDS

ROOT = Path(__file__).resolve().parents[2]
ADX = ROOT / "infra" / "adx"
TABLE = re.compile(r"^\.create-merge table (\w+) \((.*)\)\s*$")


def commands(path: Path) -> list[str]:
    """The control commands of a .kql file: each starts with '.' at a line start; // lines are comments."""
    out: list[list[str]] = []
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("//") or not line.strip():
            continue
        if line.startswith("."):
            out.append([line])
        else:
            out[-1].append(line)
    return ["\n".join(c) for c in out]


def adx_tables() -> dict[str, list[tuple[str, str]]]:
    tables = {}
    for cmd in commands(ADX / "01-tables.kql"):
        m = TABLE.match(cmd)
        assert m, cmd
        cols = [tuple(part.strip() for part in c.split(":")) for c in m.group(2).split(",")]
        tables[m.group(1)] = cols
    return tables


def all_kql() -> list[str]:
    return [c for f in sorted(ADX.glob("*.kql")) for c in commands(f)]  # shared/kql: test_kql_queries


# The language service parses an unknown control command without a diagnostic: check the verbs here.
KNOWN_COMMANDS = (".create-merge table ", ".create-or-alter table ", ".alter-merge table ", ".alter table ",
                  ".create-or-alter function ", ".create-or-alter materialized-view ",
                  ".alter-merge materialized-view ")


def test_every_command_and_query_analyses_with_zero_diagnostics(kusto):
    texts = all_kql()
    assert len(texts) >= 10
    bad = {t: [str(d) for d in kusto.analyze(t)] for t in texts}
    assert not {t: d for t, d in bad.items() if d}, json.dumps(bad, indent=1)
    unknown = [t for t in texts if t.startswith(".") and not t.startswith(KNOWN_COMMANDS)]
    assert not unknown


def test_the_analyser_does_report_mistakes(kusto):
    for text in ("Predictions | project NoSuchColumn", ".alter table Nope policy streamingingestion enable",
                 "Predictions | where ScoredAt > 3 and",
                 kql.load("prediction_counts").replace("IngestedAt", "Ingested")):
        assert kusto.analyze(text), text


def test_the_json_mapping_matches_the_table_and_the_landing_lines():
    (cmd,) = commands(ADX / "02-ingestion.kql")
    assert f'"{adx_ingest.PREDICTIONS_MAPPING}"' in cmd
    mapping = json.loads(cmd.split("'", 1)[1].rsplit("'", 1)[0])
    table = adx_tables()["Predictions"]
    assert [(m["column"], m["datatype"]) for m in mapping] == table
    assert [m["path"] for m in mapping] == [f"$.{f}" for f in LANDING_FIELDS]


def snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


# Columns the DuckDB store keeps beyond the ADX tables, and why (none today: the scores and the random
# key are Predictions columns in both).
DUCKDB_ONLY: dict[str, set[str]] = {}
# Tables the DuckDB store keeps beyond the ADX tables: latest_predictions plays the LatestPredictions
# view's role and labeled_embeddings caches the labeled items' embeddings (both maintained at
# ingestion); predictions is a view over one table per margin band.
DUCKDB_ONLY_TABLES = {"latest_predictions", "labeled_embeddings", *(sql.band_table(b) for b in range(sql.BANDS))}
# Columns ADX keeps beyond DuckDB, and why: ADX tables are append-only, so a model version's current
# row is its newest by RecordedAt; DuckDB updates the row in place.
ADX_ONLY = {"ModelVersions": {"RecordedAt"}}
TYPES = {"string": {"VARCHAR"}, "datetime": {"TIMESTAMP"}, "real": {"DOUBLE"}, "int": {"INTEGER"},
         "long": {"BIGINT"}, "bool": {"BOOLEAN"}, "dynamic": {"FLOAT[]", "VARCHAR[]", "VARCHAR"}}


def duckdb_tables() -> dict[str, list[tuple[str, str]]]:
    con = duckdb.connect()
    con.execute(sql.SCHEMA)
    rows = con.execute("SELECT table_name, column_name, data_type FROM information_schema.columns "
                       "ORDER BY table_name, ordinal_position").fetchall()
    out: dict[str, list[tuple[str, str]]] = {}
    for table, column, kind in rows:
        out.setdefault(table, []).append((column, kind))
    return out


def test_duckdb_schema_mirrors_the_adx_tables():
    duck = duckdb_tables()
    adx = adx_tables()
    assert set(duck) - DUCKDB_ONLY_TABLES == {snake(t) for t in adx}
    for table, cols in adx.items():
        name = snake(table)
        expected = [(snake(c), t) for c, t in cols if c not in ADX_ONLY.get(table, set())]
        got = [(c, t) for c, t in duck[name] if c not in DUCKDB_ONLY.get(name, set())]
        assert [c for c, _ in got] == [c for c, _ in expected], table
        for (col, duck_type), (_, adx_type) in zip(got, expected, strict=True):
            assert duck_type in TYPES[adx_type], f"{table}.{col}: {duck_type} vs {adx_type}"


def test_duckdb_latest_predictions_mirrors_the_adx_view(kusto):
    """Same columns as LatestPredictions (as the language service infers them from the view's query),
    bar the view's tie-break key; the random key is held as the number its MD5 hex spells."""
    view = [(snake(c), t) for c, t in kusto.views["LatestPredictions"] if c != "LatestKey"]
    duck = duckdb_tables()["latest_predictions"]
    assert [c for c, _ in duck] == [c for c, _ in view]
    for (col, duck_type), (_, adx_type) in zip(duck, view, strict=True):
        assert duck_type in TYPES[adx_type] | ({"UHUGEINT"} if col == "random_key" else set()), col


def test_snake_case_naming():
    assert [snake(n) for n in ("PredictionId", "ExportSha256", "TrainedOnLabels")] == [
        "prediction_id", "export_sha256", "trained_on_labels"]


def test_the_store_reads_a_versions_embedding_length_with_query_parameters():
    from shared.adapters.adx_store import AdxStore

    calls = []

    class Client:
        def __init__(self, rows):
            self.rows = rows

        def execute_query(self, database, query, props):
            calls.append((database, query, json.loads(props.to_json())["Parameters"]))
            return type("Response", (), {"primary_results": [self.rows]})()

    assert AdxStore(Client([{"Dim": 64}]), database="db").embedding_dim("m", "1") == 64
    assert AdxStore(Client([]), database="db").embedding_dim("m", "2") is None
    assert calls[0] == ("db", kql.load("embedding_dim"), {"model_name": "m", "model_version": "1"})
