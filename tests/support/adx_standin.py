"""A local Azure Data Explorer stand-in for tests: the real ``azure-kusto-data`` / ``azure-kusto-ingest``
clients talk to it over loopback HTTP; it runs KQL with duckdb-kql on an in-memory DuckDB.

One URL serves the engine (``/v2/rest/query``, ``/v1/rest/query``, ``/v1/rest/mgmt``, streaming ingest
``/v1/rest/ingest/<db>/<table>``) and the data-management endpoint (``.get ingestion resources`` hands out
an Azurite container and queue; a worker thread reads the real messages and blobs the queued client
writes). The schema comes from ``infra/adx/*.kql``. Test support only, never product code: the Kusto
language service stays the judge of KQL correctness, this is an executable cross-check.

Deviations from ADX a test author must know are listed in the class docstring.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import gzip
import io
import json
import logging
import math
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb_kql
from azure.storage.blob import BlobClient, BlobServiceClient, ContainerSasPermissions, generate_container_sas
from azure.storage.queue import QueueClient, QueueSasPermissions, generate_queue_sas
from duckdb_kql.params import parse_timespan
from duckdb_kql.stored_functions import parse_functions
from duckdb_kql.types import kusto_type
from werkzeug import Request, Response
from werkzeug.serving import WSGIRequestHandler, make_server

from tests.support.azurite import ACCOUNT, KEY

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_FILES = tuple(sorted((ROOT / "infra" / "adx").glob("*.kql")))
log = logging.getLogger(__name__)

# KQL column type -> DuckDB type. dynamic is JSON: it holds arrays, objects and scalars alike, and
# duckdb-kql's array functions (array_length, array_sort_desc, mv-expand) accept it.
DUCK_TYPES = {
    "string": "VARCHAR", "datetime": "TIMESTAMP", "date": "TIMESTAMP", "dynamic": "JSON", "real": "DOUBLE",
    "double": "DOUBLE", "long": "BIGINT", "int": "INTEGER", "bool": "BOOLEAN", "boolean": "BOOLEAN",
    "guid": "UUID", "timespan": "INTERVAL", "time": "INTERVAL",
}
JSON_FORMATS = {"json", "multijson", "singlejson"}
CSV_FORMATS = {"csv": ",", "tsv": "\t", "psv": "|", "scsv": ";"}
_IDENT = r"[A-Za-z_]\w*"
_WITH = r"with\s*\((?:\"[^\"]*\"|'[^']*'|[^()\"'])*\)\s*"
_TABLE_CMD = re.compile(rf"^\.(create|create-merge)\s+table\s+({_IDENT})\s*\((.*?)\)\s*(?:{_WITH})?$", re.S | re.I)
_MAPPING_CMD = re.compile(rf"^\.(?:create|create-or-alter|alter)\s+table\s+({_IDENT})\s+ingestion\s+(\w+)\s+mapping\s+",
                          re.S | re.I)
_FUNCTION_CMD = re.compile(rf"^\.(?:create|create-or-alter|alter)\s+function\s+(?:ifnotexists\s+)?(?:{_WITH})?"
                           rf"({_IDENT})\s*\(", re.S | re.I)
_VIEW_CMD = re.compile(rf"^\.create(?:-or-alter)?\s+(?:async\s+)?(?:ifnotexists\s+)?materialized-view\s+(?:{_WITH})?"
                       rf"({_IDENT})\s+on\s+table\s+({_IDENT})\s*\{{(.*)\}}\s*$", re.S | re.I)
_STREAMING_POLICY = re.compile(rf"^\.alter(?:-merge)?\s+(table|database)\s+({_IDENT})\s+policy\s+streamingingestion\s+"
                               r"(enable|disable|.*)$", re.S | re.I)
_POLICY_OR_META = re.compile(r"^\.(?:alter|alter-merge|delete)\s+(?:table|database|materialized-view)\s+\S+\s+"
                             r"(?:policy|docstring|folder)\b", re.S | re.I)
_CLEAR = re.compile(rf"^\.clear\s+table\s+({_IDENT})\s+data\s*$", re.I)
_TAKE_PARAM = re.compile(rf"(\|\s*(?:take|limit|top)\s+)({_IDENT})\b")
_INGESTION_TIME = re.compile(r"\bingestion_time\s*\(")
_FRACTION = re.compile(r"(\.\d{6})\d+")


class KustoFailure(Exception):
    """An error the stand-in answers in Kusto's error envelope (the client raises KustoApiError)."""

    def __init__(self, message: str, *, status: int = 400, code: str = "General_BadRequest",
                 permanent: bool = True) -> None:
        super().__init__(message)
        self.message, self.status, self.code, self.permanent = message, status, code, permanent

    def response(self) -> Response:
        body = {"error": {"code": self.code, "message": self.message, "@type": "AdxStandIn." + self.code,
                          "@message": self.message, "@permanent": self.permanent}}
        return Response(json.dumps(body), status=self.status, content_type="application/json")


@dataclass
class _Column:
    name: str
    kql: str


@dataclass
class _MapColumn:
    column: str
    path: str | None = None
    ordinal: int | None = None
    const: str | None = None


@dataclass
class _Table:
    name: str
    columns: list[_Column]
    mappings: dict[str, tuple[str, list[_MapColumn]]] = field(default_factory=dict)  # name -> (kind, columns)
    extent_tags: list[list[str]] = field(default_factory=list)  # one entry per ingestion (an "extent")
    streaming: bool | None = None  # streamingingestion policy; None = inherit the database's


@dataclass
class _View:
    name: str
    source: str
    query: str


class AdxStandIn:
    """The stand-in. ``url`` serves engine and data management; ``down = True`` answers 503 to everything
    and holds queued work in the queue.

    Deviations from ADX:

    * KQL runs on duckdb-kql: a subset. Unsupported constructs (``ingestion_time()``, ``mv-apply``,
      ``series_*``, ...) answer a Kusto error naming the construct, never an empty result.
      ``take``/``limit``/``top`` with a ``long``/``int`` query parameter is run with the value substituted.
      duckdb-kql sorts numbers inside ``array_sort_desc`` as JSON text (2.6e-07 sorts above 0.73).
    * Query parameters: ``string`` values are taken verbatim (no quotes expected); other types accept the
      KQL literal (``datetime(...)``, ``long(5)``, ``dynamic([...])`` with JSON inside) or the bare value.
    * Visibility: streaming ingestion is visible when its HTTP call returns; queued ingestion when
      :meth:`wait_for_queued` returns (the worker polls every ``poll_interval`` seconds). No batching delay.
    * Ingestion: json (one object per line), multijson (concatenated objects/arrays), singlejson, csv-family;
      named mappings (``$.a.b``, ``$['a']``, ``$.a[0]`` paths, ordinals, ConstValue) or, without a mapping,
      JSON keys by exact column name / CSV fields by column order. Unconvertible values become null.
      ``ingestIfNotExists`` is honoured against earlier ``ingest-by:`` tags of the same table; ``drop-by``
      and other tags are only recorded. Streaming requires the table's (or database's) streamingingestion
      policy, as ADX does. Temp blobs are retained after ingestion (``RetainBlobOnSuccess``); three temp
      containers are handed out, so the client's upload of a same-named blob falls over to the next one
      (a fourth upload of one name fails with ``KustoBlobError``). A failed queued ingestion is only logged
      (``ingestions[i]["error"]``); nothing is written to the failure/success queues.
    * Materialized views are recomputed in full after each ingestion into their source table.
      Update policies, retention and other policies are ignored.
    """

    TEMP_CONTAINERS = 3

    def __init__(self, azurite: Any, *, database: str = "activelearning",
                 schema_files: Any = SCHEMA_FILES, poll_interval: float = 0.2) -> None:
        self.azurite = azurite
        self.database = database
        self.schema_files = tuple(Path(p) for p in schema_files)
        self.poll_interval = poll_interval
        self.down = False
        self.url = ""
        self.ingestions: list[dict[str, Any]] = []
        self.commands: list[str] = []  # management commands received over HTTP, in order
        self._lock = threading.RLock()
        self._con: Any = None
        self._tables: dict[str, _Table] = {}
        self._views: dict[str, _View] = {}
        self._function_texts: dict[str, str] = {}
        self._functions: Any = None
        self._database_streaming = False
        self._server: Any = None
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._cond = threading.Condition()
        self._polls_started = 0
        self._drained_poll = 0
        suffix = uuid.uuid4().hex[:12]
        # Several temp containers, as the data-management service hands out: the client uploads to the
        # first and moves to the next when a blob of the same name already exists there.
        self.containers = [f"adxstandin-tmp{n}-{suffix}" for n in range(self.TEMP_CONTAINERS)]
        self.queue = f"adxstandin-ready-{suffix}"
        self._resources: list[list[str]] = []

    # lifecycle ---------------------------------------------------------------------------
    def start(self) -> AdxStandIn:
        self._con = duckdb_kql.connect()
        for path in self.schema_files:
            for command in split_commands(path.read_text(encoding="utf-8")):
                try:
                    self._apply_schema_command(command)
                except KustoFailure as exc:
                    raise ValueError(f"{path.name}: {exc.message}") from exc
        self._provision_storage()
        self._server = make_server("127.0.0.1", 0, self._wsgi, threaded=True, request_handler=_QuietHandler)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        serve = lambda: self._server.serve_forever(poll_interval=0.05)  # noqa: E731 - a quick stop()
        self._threads = [threading.Thread(target=serve, name="adx-standin-http", daemon=True),
                         threading.Thread(target=self._queue_worker, name="adx-standin-queue", daemon=True)]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        for thread in self._threads:
            thread.join(timeout=10)
        self._threads = []
        try:
            blobs = BlobServiceClient.from_connection_string(self.azurite.connection_string)
            for container in self.containers:
                blobs.delete_container(container)
            QueueClient.from_connection_string(self.azurite.connection_string, self.queue).delete_queue()
        except Exception:  # best-effort cleanup of emulator state
            log.debug("could not delete the stand-in's Azurite containers/queue", exc_info=True)
        with self._lock:
            if self._con is not None:
                self._con.close()
                self._con = None

    def __enter__(self) -> AdxStandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # assertions --------------------------------------------------------------------------
    def rows(self, table: str) -> list[dict[str, Any]]:
        """Current rows of a table or materialized view, typed as the Kusto client types them."""
        with self._lock:
            if table not in self._tables and table not in self._views:
                raise KeyError(f"no table or materialized view {table!r}")
            rel = self._con.sql(f'SELECT * FROM "{table}"')
            return _typed(rel.columns, [kusto_type(t) for t in rel.types], rel.fetchall())

    def query(self, kql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Run KQL directly (no HTTP). ``params``: Python values, or KQL literal text as a client sends."""
        names, kinds, rows = self._execute(kql, params or {})
        return _typed(names, kinds, rows)

    def wait_for_queued(self, timeout: float = 10) -> None:
        """Block until the worker has polled the ingestion queue, after this call, and found it empty."""
        if self.down:
            raise RuntimeError("the ADX stand-in is down: queued ingestion waits until down is False")
        with self._cond:
            target = self._polls_started
        self._wake.set()
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._drained_poll <= target:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.down:
                    raise TimeoutError(f"the stand-in's ingestion queue did not drain within {timeout}s"
                                       + (" (it is down)" if self.down else ""))
                self._cond.wait(min(remaining, 0.5))

    # HTTP --------------------------------------------------------------------------------
    def _wsgi(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        try:
            response = self._route(request)
        except KustoFailure as exc:
            response = exc.response()
        except Exception as exc:  # any failure is reported to the client, never swallowed
            log.exception("ADX stand-in failed on %s", request.path)
            response = KustoFailure(f"ADX stand-in internal error: {exc!r}", status=500,
                                    code="InternalServiceError").response()
        return response(environ, start_response)

    def _route(self, request: Request) -> Response:
        if self.down:
            raise KustoFailure("ADX stand-in is down (fault injection): service unavailable", status=503,
                               code="ServiceUnavailable", permanent=False)
        path = request.path.rstrip("/")
        if path == "/v1/rest/auth/metadata":
            return Response("", status=404)  # no cloud metadata: the client falls back to the public cloud
        if request.method != "POST":
            raise KustoFailure(f"no route for {request.method} {request.path}", status=404, code="NotFound")
        if path in ("/v2/rest/query", "/v1/rest/query"):
            body = _json_body(request)
            db = body.get("db") or self.database
            if db != self.database:
                raise KustoFailure(f"Semantic error: database '{db}' was not found (the stand-in serves "
                                   f"'{self.database}')", code="BadRequest_EntityNotFound")
            names, kinds, rows = self._execute(str(body.get("csl") or ""), _parameters(body))
            frames = v2_frames if path.startswith("/v2") else v1_frames
            return _json_response(frames(names, kinds, rows))
        if path == "/v1/rest/mgmt":
            body = _json_body(request)
            csl = str(body.get("csl") or "").strip()
            self.commands.append(csl)
            return _json_response(self._management(csl))
        match = re.fullmatch(r"/v1/rest/ingest/([^/]+)/([^/]+)", path)
        if match:
            return _json_response(self._streaming_ingest(match.group(1), match.group(2), request))
        raise KustoFailure(f"no route for POST {request.path}", status=404, code="NotFound")

    # queries -----------------------------------------------------------------------------
    def _execute(self, csl: str, raw: dict[str, Any]) -> tuple[list[str], list[str], list[tuple]]:
        if not csl.strip():
            raise KustoFailure("Syntax error: the request has no query text")
        if csl.lstrip().startswith("."):
            raise KustoFailure("a management command was sent to the query endpoint; use /v1/rest/mgmt")
        if _INGESTION_TIME.search(re.sub(r"//[^\n]*", "", csl)):  # not in a comment
            raise KustoFailure("ADX stand-in cannot execute this query: ingestion_time() is not supported "
                               "(duckdb-kql keeps no ingestion time)", code="BadRequest_NotSupported")
        with self._lock:
            try:
                return self._run_kql(csl, raw)
            except KustoFailure:
                raise
            except duckdb_kql.KqlUnsupportedError as exc:
                raise KustoFailure(f"ADX stand-in cannot execute this query (duckdb-kql): {exc}",
                                   code="BadRequest_NotSupported") from exc
            except duckdb_kql.KqlSyntaxError as exc:
                raise KustoFailure(f"Syntax error: {exc}", code="BadRequest_SyntaxError") from exc
            except Exception as exc:  # duckdb binder/catalog errors are KQL semantic errors
                message = str(exc).split("\nDid you mean", 1)[0]  # duckdb's suggestions name its own catalog
                raise KustoFailure(f"Semantic error: {message}", code="BadRequest_SemanticError") from exc

    def _run_kql(self, csl: str, raw: dict[str, Any]) -> tuple[list[str], list[str], list[tuple]]:
        declared = {p.name: p for p in duckdb_kql.query_parameters(csl)}
        values: dict[str, Any] = {}
        for name, decl in declared.items():
            if name in raw:
                values[name] = parse_literal(decl.type, raw[name], name)
        # duckdb-kql takes only a literal count in take/limit/top: substitute a declared integer parameter.
        def literal_count(m: re.Match[str]) -> str:
            decl = declared.get(m.group(2))
            if decl is None or decl.type not in ("long", "int"):
                return m.group(0)
            value = values.get(decl.name, decl.default)
            if isinstance(value, str):
                value = parse_literal(decl.type, value, decl.name)
            if not isinstance(value, int):
                raise KustoFailure(f"Semantic error: query parameter '{decl.name}' has no value")
            return f"{m.group(1)}{int(value)}"
        text = _TAKE_PARAM.sub(literal_count, csl)
        rel = duckdb_kql.query(self._con, text, values, functions=self._functions)
        return list(rel.columns), [kusto_type(t) for t in rel.types], rel.fetchall()

    # management --------------------------------------------------------------------------
    def _management(self, csl: str) -> dict[str, Any]:
        command = " ".join(csl.split()).lower()
        if command == ".get ingestion resources":
            return v1_table(["ResourceTypeName", "StorageRoot"], ["string", "string"], self._resources)
        if command == ".get kusto identity token":
            return v1_table(["AuthorizationContext"], ["string"], [["adx-standin-authorization-context"]])
        if command == ".show version":
            return v1_table(["BuildVersion", "BuildTime", "ServiceType", "ProductVersion", "ServiceOffering"],
                            ["string", "datetime", "string", "string", "string"],
                            [["1.0.0.0", "2026-01-01T00:00:00Z", "Engine", "adx-standin",
                              '{"Type":"Azure Data Explorer"}']])
        if command == ".show tables":
            with self._lock:
                rows = [[t, self.database, "", ""] for t in self._tables]
            return v1_table(["TableName", "DatabaseName", "Folder", "DocString"], ["string"] * 4, rows)
        if command == ".show materialized-views":
            with self._lock:
                rows = [[v.name, v.source, v.query] for v in self._views.values()]
            return v1_table(["Name", "SourceTable", "Query"], ["string"] * 3, rows)
        clear = _CLEAR.match(csl)
        if clear:
            with self._lock:
                table = self._table(clear.group(1))
                self._con.execute(f'DELETE FROM "{table.name}"')
                table.extent_tags.clear()
                self._refresh_views(table.name)
            return v1_table(["Status"], ["string"], [["Completed"]])
        self._apply_schema_command(csl)
        return v1_table(["Status"], ["string"], [["Completed"]])

    def _apply_schema_command(self, command: str) -> None:
        with self._lock:
            if m := _TABLE_CMD.match(command):
                self._create_table(m.group(2), m.group(3), merge=m.group(1).lower() == "create-merge")
            elif m := _MAPPING_CMD.match(command):
                self._create_mapping(m.group(1), m.group(2).lower(), command[m.end():])
            elif m := _FUNCTION_CMD.match(command):
                self._function_texts[m.group(1)] = command
                self._functions = parse_functions(list(self._function_texts.values()))
            elif m := _VIEW_CMD.match(command):
                self._table(m.group(2))
                self._views[m.group(1)] = _View(m.group(1), m.group(2), m.group(3).strip())
                self._refresh_views(m.group(2))
            elif m := _STREAMING_POLICY.match(command):
                enabled = _policy_enabled(m.group(3))
                if m.group(1).lower() == "database":
                    self._database_streaming = enabled
                else:
                    self._table(m.group(2)).streaming = enabled
            elif _POLICY_OR_META.match(command):
                pass  # retention, update, caching ... policies and metadata: not modelled
            else:
                raise KustoFailure(f"the ADX stand-in does not support the command: {command[:200]}",
                                   code="BadRequest_NotSupported")

    def _create_table(self, name: str, spec: str, *, merge: bool) -> None:
        columns: list[_Column] = []
        for part in filter(None, (p.strip() for p in spec.split(","))):
            column, _, kql = part.partition(":")
            kql = kql.strip().lower()
            if kql not in DUCK_TYPES:
                raise KustoFailure(f"column {name}.{column.strip()}: type {kql!r} is not supported by the stand-in")
            columns.append(_Column(column.strip(), kql))
        existing = self._tables.get(name)
        if existing is None:
            cols = ", ".join(f'"{c.name}" {DUCK_TYPES[c.kql]}' for c in columns)
            self._con.execute(f'CREATE TABLE "{name}" ({cols})')
            self._tables[name] = _Table(name, columns)
            return
        if not merge:
            raise KustoFailure(f"table '{name}' already exists", code="BadRequest_EntityAlreadyExists")
        known = {c.name: c for c in existing.columns}
        for col in columns:
            if col.name not in known:
                self._con.execute(f'ALTER TABLE "{name}" ADD COLUMN "{col.name}" {DUCK_TYPES[col.kql]}')
                existing.columns.append(col)
            elif known[col.name].kql != col.kql:
                raise KustoFailure(f"column {name}.{col.name} exists as {known[col.name].kql}, not {col.kql}")

    def _create_mapping(self, table: str, kind: str, rest: str) -> None:
        name, pos = read_string_literal(rest, 0)
        body, _ = read_string_literal(rest, _skip_space(rest, pos))
        self._table(table).mappings[name] = (kind, parse_mapping(body))

    def _table(self, name: str) -> _Table:
        table = self._tables.get(name)
        if table is None:
            raise KustoFailure(f"Semantic error: table '{name}' was not found in database '{self.database}'",
                               code="BadRequest_EntityNotFound")
        return table

    def _refresh_views(self, source: str) -> None:
        for view in self._views.values():
            if view.source != source:
                continue
            try:
                self._con.execute(f'DROP TABLE IF EXISTS "{view.name}"')
                duckdb_kql.query(self._con, view.query, functions=self._functions).create(view.name)
            except duckdb_kql.KqlError as exc:
                raise KustoFailure(f"materialized view {view.name}: duckdb-kql cannot run its query: {exc}",
                                   code="BadRequest_NotSupported") from exc

    # ingestion ---------------------------------------------------------------------------
    def _streaming_ingest(self, database: str, table_name: str, request: Request) -> dict[str, Any]:
        if database != self.database:
            raise KustoFailure(f"database '{database}' was not found", code="BadRequest_EntityNotFound")
        fmt = (request.args.get("streamFormat") or "csv").lower()
        mapping = request.args.get("mappingName")
        data = request.get_data()
        if request.headers.get("Content-Encoding", "").lower() == "gzip" or data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
        if request.args.get("sourceKind") == "uri":
            data = _download(json.loads(data)["sourceUri"])
        with self._lock:
            table = self._table(table_name)
            enabled = table.streaming if table.streaming is not None else self._database_streaming
            if not enabled:
                raise KustoFailure(f"Streaming ingestion policy is not enabled for table '{table_name}' "
                                   f"(nor database '{database}')",
                                   code="BadRequest_StreamingIngestionPolicyNotEnabled")
            n = self._insert(table, parse_records(data, fmt), fmt, mapping)
            self.ingestions.append({"kind": "streaming", "database": database, "table": table_name, "rows": n,
                                    "tags": [], "skipped": False, "format": fmt, "mapping": mapping})
        return v1_table(["ConsumedRecordsCount", "UpdatePolicyStatus"], ["long", "string"], [[n, "Inactive"]])

    def _insert(self, table: _Table, records: list[Any], fmt: str, mapping_name: str | None,
                inline: list[_MapColumn] | None = None) -> int:
        columns = table.columns
        if inline is not None:
            mapping: list[_MapColumn] | None = inline
        elif mapping_name:
            if mapping_name not in table.mappings:
                raise KustoFailure(f"ingestion mapping '{mapping_name}' was not found on table '{table.name}'",
                                   code="BadRequest_MappingReferenceNotFound")
            kind, mapping = table.mappings[mapping_name]
            family = "json" if fmt in JSON_FORMATS else "csv" if fmt in CSV_FORMATS else fmt
            if kind != family:
                raise KustoFailure(f"mapping '{mapping_name}' is a {kind} mapping; the data is {fmt}")
        else:
            mapping = None
        kinds = {c.name: c.kql for c in columns}
        rows = []
        for record in records:
            if mapping is not None:
                values = {m.column: _mapped(record, m) for m in mapping}
            elif isinstance(record, dict):
                values = {c.name: record.get(c.name) for c in columns}
            else:
                values = {c.name: record[i] if i < len(record) else None for i, c in enumerate(columns)}
            unknown = sorted(set(values) - set(kinds))
            if unknown:
                raise KustoFailure(f"mapping names columns table '{table.name}' does not have: {unknown}")
            rows.append([convert(kinds[c.name], values.get(c.name), from_text=not isinstance(record, dict))
                         for c in columns])
        if rows:
            marks = ", ".join("?" for _ in columns)
            names = ", ".join(f'"{c.name}"' for c in columns)
            self._con.executemany(f'INSERT INTO "{table.name}" ({names}) VALUES ({marks})', rows)
        self._refresh_views(table.name)
        return len(rows)

    def _provision_storage(self) -> None:
        az = self.azurite
        expiry = datetime.now(UTC) + timedelta(hours=12)
        blobs = BlobServiceClient.from_connection_string(az.connection_string)
        permission = ContainerSasPermissions(read=True, write=True, create=True, list=True)
        temp = []
        for container in self.containers:
            blobs.create_container(container)
            sas = generate_container_sas(ACCOUNT, container, account_key=KEY, expiry=expiry, permission=permission)
            temp.append(["TempStorage", f"{az.blob_url}/{container}?{sas}"])
        QueueClient.from_connection_string(az.connection_string, self.queue).create_queue()
        qsas = generate_queue_sas(ACCOUNT, self.queue, account_key=KEY, expiry=expiry,
                                  permission=QueueSasPermissions(add=True, read=True, process=True))
        self._resources = [
            *temp,
            ["SecuredReadyForAggregationQueue", f"{az.queue_url}/{self.queue}?{qsas}"],
            ["FailedIngestionsQueue", f"{az.queue_url}/{self.queue}-failed?{qsas}"],
            ["SuccessfulIngestionsQueue", f"{az.queue_url}/{self.queue}-ok?{qsas}"],
            ["IngestionsStatusTable", f"{az.blob_url}/{self.containers[0]}-status?{temp[0][1].split('?')[1]}"],
        ]

    def _queue_worker(self) -> None:
        queue = QueueClient.from_connection_string(self.azurite.connection_string, self.queue)
        while not self._stopping.is_set():
            self._wake.wait(self.poll_interval)
            self._wake.clear()
            if self._stopping.is_set() or self.down:
                continue
            with self._cond:
                self._polls_started += 1
                seq = self._polls_started
            try:
                messages = list(queue.receive_messages(messages_per_page=32, max_messages=32,
                                                       visibility_timeout=60))
            except Exception:  # the emulator may be going away at teardown
                log.warning("ADX stand-in could not read its ingestion queue", exc_info=True)
                continue
            for message in messages:
                try:
                    if self.down:  # not consumed: visible again at once, for when the stand-in is back
                        queue.update_message(message, pop_receipt=message.pop_receipt, visibility_timeout=0)
                        continue
                    self._queued_ingest(message.content)
                    queue.delete_message(message)
                except Exception:  # the worker must outlive one bad message or an emulator hiccup
                    log.warning("ADX stand-in could not handle queue message %s", message.id, exc_info=True)
            if not messages:
                with self._cond:
                    self._drained_poll = seq
                    self._cond.notify_all()
            else:
                self._wake.set()  # poll again at once: more may be waiting

    def _queued_ingest(self, content: str) -> None:
        entry: dict[str, Any] = {"kind": "queued", "table": None, "rows": 0, "tags": [], "skipped": False}
        try:
            try:
                info = json.loads(base64.b64decode(content, validate=True))
            except ValueError:
                info = json.loads(content)
            props = info.get("AdditionalProperties") or {}
            fmt = str(props.get("format") or "csv").lower()
            tags = json.loads(props.get("tags") or "[]")
            if_not_exists = json.loads(props.get("ingestIfNotExists") or "[]")
            inline = props.get("ingestionMapping")
            entry.update(database=info.get("DatabaseName"), table=info.get("TableName"), tags=tags, format=fmt,
                         mapping=props.get("ingestionMappingReference"),
                         blob=str(info.get("BlobPath", "")).split("?")[0])
            if info.get("DatabaseName") != self.database:
                raise KustoFailure(f"database '{info.get('DatabaseName')}' was not found")
            data = _download(info["BlobPath"])
            with self._lock:
                table = self._table(str(info.get("TableName")))
                existing = {t for extent in table.extent_tags for t in extent}
                if any(f"ingest-by:{t}" in existing for t in if_not_exists):
                    entry["skipped"] = True
                else:
                    entry["rows"] = self._insert(table, parse_records(data, fmt), fmt, entry["mapping"],
                                                 parse_mapping(inline) if inline else None)
                    table.extent_tags.append(list(tags))
        except Exception as exc:  # ADX reports a failed ingestion; so does this log
            entry["error"] = exc.message if isinstance(exc, KustoFailure) else repr(exc)
            log.warning("ADX stand-in: queued ingestion failed: %s", entry["error"])
        self.ingestions.append(entry)


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, *args: Any, **kwargs: Any) -> None:
        pass


# --- the Kusto script and literal syntax -------------------------------------------------------
def split_commands(text: str) -> list[str]:
    """The control commands of a Kusto script: each starts with '.' at brace depth 0; // comments dropped."""
    commands: list[str] = []
    current: list[str] = []
    depth = 0
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or (stripped.startswith("//") and depth == 0):
            continue
        if stripped.startswith(".") and depth == 0 and current:
            commands.append("\n".join(current).strip())
            current = []
        current.append(line)
        depth += _brace_delta(line)
    if current:
        commands.append("\n".join(current).strip())
    return commands


def _brace_delta(line: str) -> int:
    delta, quote, i = 0, "", 0
    while i < len(line):
        ch = line[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif line.startswith("//", i):
            break
        elif ch == "{":
            delta += 1
        elif ch == "}":
            delta -= 1
        i += 1
    return delta


def read_string_literal(text: str, pos: int) -> tuple[str, int]:
    """A KQL string literal at ``pos`` ('..', "..", @'..' verbatim, h-prefixed) -> (value, end)."""
    i = pos
    if i < len(text) and text[i] in "hH" and i + 1 < len(text) and text[i + 1] in "@'\"":
        i += 1
    verbatim = text.startswith("@", i)
    i += 1 if verbatim else 0
    if i >= len(text) or text[i] not in "'\"":
        raise KustoFailure(f"expected a string literal at: {text[pos:pos + 40]!r}")
    quote, out, i = text[i], [], i + 1
    escapes = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", "'": "'", '"': '"', "/": "/"}
    while i < len(text):
        ch = text[i]
        if verbatim and ch == quote:
            if text.startswith(quote * 2, i):
                out.append(quote)
                i += 2
                continue
            return "".join(out), i + 1
        if not verbatim and ch == "\\" and i + 1 < len(text):
            nxt = text[i + 1]
            if nxt == "u":
                out.append(chr(int(text[i + 2:i + 6], 16)))
                i += 6
            else:
                out.append(escapes.get(nxt, nxt))
                i += 2
            continue
        if ch == quote:
            return "".join(out), i + 1
        out.append(ch)
        i += 1
    raise KustoFailure(f"unterminated string literal at: {text[pos:pos + 40]!r}")


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos].isspace():
        pos += 1
    return pos


def _policy_enabled(arg: str) -> bool:
    arg = arg.strip()
    if arg.lower() in ("enable", "disable"):
        return arg.lower() == "enable"
    value, _ = read_string_literal(arg, 0)
    return bool(json.loads(value).get("IsEnabled", False))


def parse_mapping(body: str | list[Any]) -> list[_MapColumn]:
    """An ingestion mapping (the legacy column/path/datatype form or Column/Properties{Path,Ordinal,...})."""
    items = json.loads(body) if isinstance(body, str) else body
    out = []
    for item in items:
        lower = {k.lower(): v for k, v in item.items()}
        props = {k.lower(): v for k, v in (lower.get("properties") or {}).items()}
        if props.get("transform") or lower.get("transform"):
            raise KustoFailure(f"mapping transformations are not supported by the stand-in: {item}")
        ordinal = props.get("ordinal", lower.get("ordinal"))
        out.append(_MapColumn(column=str(lower["column"]), path=props.get("path", lower.get("path")),
                              ordinal=int(ordinal) if ordinal not in (None, "") else None,
                              const=props.get("constvalue", lower.get("constvalue"))))
    return out


_PATH_STEP = re.compile(r"\.([^.\[\]]+)|\['((?:[^'\\]|\\.)*)'\]|\[\"((?:[^\"\\]|\\.)*)\"\]|\[(\d+)\]")


def _mapped(record: Any, m: _MapColumn) -> Any:
    if m.const is not None:
        return m.const
    if isinstance(record, list):
        if m.ordinal is None:
            raise KustoFailure(f"mapping column {m.column}: a CSV mapping needs an Ordinal")
        return record[m.ordinal] if m.ordinal < len(record) else None
    if m.path is None:
        raise KustoFailure(f"mapping column {m.column}: a JSON mapping needs a Path")
    if not m.path.startswith("$"):
        raise KustoFailure(f"mapping column {m.column}: unsupported path {m.path!r}")
    value: Any = record
    pos = 1
    while pos < len(m.path):
        step = _PATH_STEP.match(m.path, pos)
        if step is None:
            raise KustoFailure(f"mapping column {m.column}: unsupported path {m.path!r}")
        pos = step.end()
        key: Any = next(g for g in step.groups() if g is not None)
        if step.group(4) is not None:
            value = value[int(key)] if isinstance(value, list) and int(key) < len(value) else None
        else:
            value = value.get(key) if isinstance(value, dict) else None
        if value is None:
            return None
    return value


def parse_records(data: bytes, fmt: str) -> list[Any]:
    """The records of an ingested payload: dicts for the JSON formats, lists of text fields for CSV."""
    text = data.decode("utf-8-sig")
    try:
        if fmt == "json":
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        if fmt in ("multijson", "singlejson"):
            decoder, out, pos = json.JSONDecoder(), [], _skip_space(text, 0)
            while pos < len(text):
                value, pos = decoder.raw_decode(text, pos)
                out.extend(value if isinstance(value, list) else [value])
                pos = _skip_space(text, pos)
            return out
    except ValueError as exc:
        raise KustoFailure(f"{fmt} data is not valid: {exc}", code="BadRequest_InvalidData") from exc
    if fmt in CSV_FORMATS:
        return [row for row in csv.reader(io.StringIO(text), delimiter=CSV_FORMATS[fmt]) if row]
    raise KustoFailure(f"ingestion format {fmt!r} is not supported by the stand-in", code="BadRequest_NotSupported")


def convert(kql: str, value: Any, *, from_text: bool = False) -> Any:
    """An ingested value as the DuckDB value of a ``kql`` column; unconvertible -> None (as ADX nulls it)."""
    if value is None:
        return None
    if kql == "string":
        return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    if from_text and value == "":
        return None
    try:
        if kql == "dynamic":
            if from_text:
                with contextlib.suppress(ValueError):
                    value = json.loads(value)
            return json.dumps(value, ensure_ascii=False)
        if kql in ("datetime", "date"):
            return _datetime(value) if isinstance(value, str) else None
        if kql in ("long", "int"):
            if isinstance(value, bool | int):
                return int(value)
            if isinstance(value, str):
                try:
                    return int(value.strip())
                except ValueError:
                    pass
            number = float(value)
            return int(number) if number.is_integer() else None
        if kql in ("real", "double"):
            return float(value)
        if kql in ("bool", "boolean"):
            if isinstance(value, str):
                return {"true": True, "false": False, "1": True, "0": False}.get(value.strip().lower())
            return bool(value)
        if kql == "guid":
            return uuid.UUID(str(value))
        if kql in ("timespan", "time"):
            return parse_timespan(str(value))
    except (TypeError, ValueError, OverflowError):
        return None
    return None


def _datetime(text: str) -> datetime:
    text = _FRACTION.sub(r"\1", text.strip())
    parsed = datetime.fromisoformat(text.replace("z", "Z"))
    return parsed.astimezone(UTC).replace(tzinfo=None) if parsed.tzinfo else parsed


def parse_literal(kql: str, raw: Any, name: str) -> Any:
    """A request parameter (KQL literal text, as ClientRequestProperties carries it) as a Python value."""
    if not isinstance(raw, str):
        return raw
    text = raw.strip()
    if kql == "string":
        return raw
    inner = text
    m = re.fullmatch(r"(\w+)\((.*)\)", text, re.S)
    if m:
        inner = m.group(2).strip()
    try:
        if inner.lower() == "null":
            return None
        if kql == "datetime":
            return _datetime(inner)
        if kql in ("long", "int"):
            return int(inner)
        if kql == "real":
            return float(inner)
        if kql == "bool":
            return {"true": True, "false": False}[inner.lower()]
        if kql == "dynamic":
            return json.loads(inner)
        if kql == "timespan":
            span = parse_timespan(inner)
            if span is None:
                raise ValueError(inner)
            return span
        if kql == "guid":
            return uuid.UUID(inner)
    except (ValueError, KeyError) as exc:
        raise KustoFailure(f"Semantic error: query parameter '{name}' of type {kql}: cannot parse {raw!r}",
                           code="BadRequest_SemanticError") from exc
    return text


# --- wire formats -----------------------------------------------------------------------------
def _wire(value: Any, kql: str) -> Any:
    if value is None:
        return None
    if kql == "datetime":
        if isinstance(value, datetime):
            value = value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value
            return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        if isinstance(value, date):
            return f"{value.isoformat()}T00:00:00Z"
        return str(value)
    if kql == "dynamic":
        if isinstance(value, str):
            try:
                return json.loads(value)
            except ValueError:
                return value
        return json.loads(json.dumps(value, default=str))
    if kql == "real" and isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else "Infinity" if value > 0 else "-Infinity"
    if kql == "timespan" and isinstance(value, timedelta):
        total = round(value.total_seconds() * 10_000_000)
        sign, total = ("-" if total < 0 else ""), abs(total)
        days, rem = divmod(total, 864_000_000_000)
        hours, rem = divmod(rem, 36_000_000_000)
        minutes, rem = divmod(rem, 600_000_000)
        seconds, ticks = divmod(rem, 10_000_000)
        return f"{sign}{days}.{hours:02d}:{minutes:02d}:{seconds:02d}.{ticks:07d}"
    if kql in ("guid", "decimal", "string") and not isinstance(value, str):
        return str(value)
    return value


def _typed(names: list[str], kinds: list[str], rows: list[tuple]) -> list[dict[str, Any]]:
    """Rows as the Kusto client returns them: aware UTC datetimes, parsed dynamic values."""
    out = []
    for row in rows:
        item = {}
        for name, kind, value in zip(names, kinds, row, strict=True):
            wired = _wire(value, kind)
            if kind == "datetime" and isinstance(wired, str):
                wired = datetime.fromisoformat(wired.replace("Z", "+00:00"))
            item[name] = wired
        out.append(item)
    return out


def v1_table(columns: list[str], kinds: list[str], rows: list[list[Any]]) -> dict[str, Any]:
    cols = [{"ColumnName": c, "DataType": _NET.get(k, "String"), "ColumnType": k} for c, k in zip(columns, kinds,
                                                                                                  strict=True)]
    return {"Tables": [{"TableName": "Table_0", "Columns": cols, "Rows": rows}]}


_NET = {"string": "String", "datetime": "DateTime", "long": "Int64", "int": "Int32", "real": "Double",
        "bool": "Boolean", "dynamic": "Object", "guid": "Guid", "timespan": "TimeSpan", "decimal": "Decimal"}


def v1_frames(names: list[str], kinds: list[str], rows: list[tuple]) -> dict[str, Any]:
    return v1_table(names, kinds, [[_wire(v, k) for v, k in zip(row, kinds, strict=True)] for row in rows])


def v2_frames(names: list[str], kinds: list[str], rows: list[tuple]) -> list[dict[str, Any]]:
    """Kusto v2: DataSetHeader, the PrimaryResult table, QueryCompletionInformation, DataSetCompletion."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return [
        {"FrameType": "DataSetHeader", "IsProgressive": False, "Version": "v2.0"},
        {"FrameType": "DataTable", "TableId": 0, "TableKind": "PrimaryResult", "TableName": "PrimaryResult",
         "Columns": [{"ColumnName": n, "ColumnType": k} for n, k in zip(names, kinds, strict=True)],
         "Rows": [[_wire(v, k) for v, k in zip(row, kinds, strict=True)] for row in rows]},
        {"FrameType": "DataTable", "TableId": 1, "TableKind": "QueryCompletionInformation",
         "TableName": "QueryCompletionInformation",
         "Columns": [{"ColumnName": "Timestamp", "ColumnType": "datetime"},
                     {"ColumnName": "ClientRequestId", "ColumnType": "string"},
                     {"ColumnName": "Level", "ColumnType": "int"},
                     {"ColumnName": "LevelName", "ColumnType": "string"},
                     {"ColumnName": "Payload", "ColumnType": "string"}],
         "Rows": [[now, "", 4, "Info", json.dumps({"Count": 1, "Text": "Query completed successfully"})]]},
        {"FrameType": "DataSetCompletion", "HasErrors": False, "Cancelled": False},
    ]


def _json_response(payload: Any) -> Response:
    return Response(json.dumps(payload), content_type="application/json; charset=utf-8")


def _json_body(request: Request) -> dict[str, Any]:
    data = request.get_data()
    if request.headers.get("Content-Encoding", "").lower() == "gzip":
        data = gzip.decompress(data)
    try:
        body = json.loads(data or b"{}")
    except ValueError as exc:
        raise KustoFailure(f"malformed request body: {exc}") from exc
    if not isinstance(body, dict):
        raise KustoFailure("the request body must be a JSON object")
    return body


def _parameters(body: dict[str, Any]) -> dict[str, Any]:
    props = body.get("properties") or {}
    if isinstance(props, str):
        props = json.loads(props) if props.strip() else {}
    params = props.get("Parameters") or {}
    return dict(params) if isinstance(params, dict) else {}


def _download(url: str) -> bytes:
    data = BlobClient.from_blob_url(url).download_blob().readall()
    return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
