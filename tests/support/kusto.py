"""Microsoft's Kusto language service (npm ``@kusto/language-service-next``) from Python.

``KustoAnalyzer`` runs one Node process (``kusto_analyze.js``) for many queries and returns the
diagnostics of ``Kusto.Language.KustoCode.ParseAndAnalyze`` against a database built from the
project's ADX tables and materialized views (``infra/adx/*.kql``; a view's columns are what the
language service infers for its own query): syntax errors, unknown names, type errors. Any test can
use it: ``with KustoAnalyzer() as k: k.analyze(query)``, or the session fixture ``kusto``.
:func:`materialized_views` gives each view's source table and query, for executing them elsewhere.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).with_name("kusto_analyze.js")
NODE_MODULES = ROOT / "node_modules"
SCHEMA_FILES = tuple(sorted((ROOT / "infra" / "adx").glob("*.kql")))


@dataclass(frozen=True, slots=True)
class Diagnostic:
    severity: str
    code: str
    message: str
    start: int
    length: int

    def where(self, query: str) -> str:
        """Line:column and the offending text, for a readable assertion message."""
        line = query.count("\n", 0, self.start) + 1
        column = self.start - (query.rfind("\n", 0, self.start) + 1) + 1
        return f"{line}:{column} {query[self.start:self.start + max(self.length, 1)]!r}"

    def __str__(self) -> str:
        return f"{self.severity} {self.code}: {self.message}"


class KustoAnalyzer:
    """One Node process answering ``analyze(query)`` requests (JSON lines over stdin/stdout)."""

    def __init__(self, schema_files: tuple[Path, ...] = SCHEMA_FILES) -> None:
        node = shutil.which("node")
        if node is None:
            raise RuntimeError("node (20+) is required for the Kusto language service check")
        if not (NODE_MODULES / "@kusto" / "language-service-next").is_dir():
            raise RuntimeError("@kusto/language-service-next is not installed: run `npm ci` (make test does it)")
        if not schema_files:
            raise RuntimeError("no table definitions under infra/adx")
        self._proc = subprocess.Popen(
            [node, str(SCRIPT), str(NODE_MODULES), *map(str, schema_files)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1,
        )
        self._lock = threading.Lock()
        self._next = 0
        hello = self._read()
        self.tables: tuple[str, ...] = tuple(hello["tables"])
        # name -> ((column, type), ...) as the language service infers them from the view's query
        self.views: dict[str, tuple[tuple[str, str], ...]] = {
            v["name"]: tuple((c, t) for c, t in v["columns"]) for v in hello["views"]}

    def _read(self) -> dict:
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            err = self._proc.stderr.read() if self._proc.stderr else ""
            raise RuntimeError(f"the Kusto analyzer exited: {err.strip()}")
        return json.loads(line)

    def analyze(self, query: str) -> list[Diagnostic]:
        """Every diagnostic the language service reports for ``query`` (empty when it is clean)."""
        with self._lock:
            self._next += 1
            assert self._proc.stdin is not None
            self._proc.stdin.write(json.dumps({"id": self._next, "query": query}) + "\n")
            self._proc.stdin.flush()
            reply = self._read()
        if reply.get("id") != self._next:
            raise RuntimeError(f"the Kusto analyzer answered request {reply.get('id')}, not {self._next}")
        if "error" in reply:
            raise RuntimeError(f"the Kusto analyzer failed: {reply['error']}")
        return [Diagnostic(**d) for d in reply["diagnostics"]]

    def close(self) -> None:
        if self._proc.poll() is None:
            assert self._proc.stdin is not None
            self._proc.stdin.close()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=5)
        for stream in (self._proc.stdout, self._proc.stderr):
            if stream is not None:
                stream.close()

    def __enter__(self) -> KustoAnalyzer:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


_VIEW = re.compile(
    r"^\s*\.create(?:-or-alter)?(?:\s+async)?(?:\s+ifnotexists)?\s+materialized-view\s+"
    r'(?:with\s*\((?:[^()"]|"[^"]*")*\)\s*)?(\w+)\s+on\s+table\s+(\w+)\s*\{', re.MULTILINE)


@dataclass(frozen=True, slots=True)
class MaterializedView:
    name: str
    source: str
    query: str


def materialized_views(schema_files: tuple[Path, ...] = SCHEMA_FILES) -> list[MaterializedView]:
    """Every ``.create[-or-alter] materialized-view`` of the schema files, in file order, with the
    text of its query (the body between the braces), as ``kusto_analyze.js`` reads them."""
    found = []
    for path in schema_files:
        text = path.read_text(encoding="utf-8")
        for m in _VIEW.finditer(text):
            depth, i = 1, m.end()
            while i < len(text) and depth:
                depth += {"{": 1, "}": -1}.get(text[i], 0)
                i += 1
            found.append(MaterializedView(m.group(1), m.group(2), text[m.end():i - 1].strip()))
    return found


def analyze(query: str) -> list[Diagnostic]:
    """One-off analysis (starts a Node process; prefer the ``kusto`` fixture for many queries)."""
    with KustoAnalyzer() as analyzer:
        return analyzer.analyze(query)
