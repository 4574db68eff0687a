"""Parse (and, for the simulation's oracle, write) Azure ML Data Labeling exports.

CSV, as the labeling project's "Export -> CSV" writes for image classification: one row per
image with the image URL and its label; headers are matched case-insensitively and extra columns
are ignored. URLs come as ``AmlDatastore://<datastore>/<path>`` or
``azureml://subscriptions/.../datastores/<datastore>/paths/<path>``. Single-label only: a row
carrying several labels is reported, not guessed.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable
from dataclasses import dataclass

from shared.errors import ExportFormatError, Problem

URL_HEADERS = ("url", "image_url", "image url", "imageurl")
LABEL_HEADERS = ("label", "labels")
LABELED_AT_HEADERS = ("labeled time", "labeled_time", "labeled date", "labeledtime")
_LIST = re.compile(r"^\s*\[(.*)\]\s*$", re.S)


@dataclass(frozen=True, slots=True)
class ExportRow:
    row: int  # 1-based data row number (the header is row 0)
    url: str
    label: str
    labeled_at: str | None = None


@dataclass(frozen=True, slots=True)
class ParsedExport:
    rows: tuple[ExportRow, ...]
    problems: tuple[Problem, ...]


def _single_label(raw: str) -> tuple[str | None, str | None]:
    """(label, problem): unwraps ``['x']``; several labels are a problem."""
    value = raw.strip()
    m = _LIST.match(value)
    if m:
        parts = [p.strip().strip("'\"").strip() for p in m.group(1).split(",") if p.strip()]
        if len(parts) > 1:
            return None, f"multi-label rows are not supported (got {len(parts)} labels)"
        value = parts[0] if parts else ""
    if not value:
        return None, "empty label"
    return value, None


def parse_csv_export(data: bytes) -> ParsedExport:
    """Rows and per-row problems; :class:`ExportFormatError` if the file is not such an export."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ExportFormatError("export is not UTF-8 text", [Problem(None, "file", str(exc))]) from exc
    if "\x00" in text:
        raise ExportFormatError("export is not a CSV file", [Problem(None, "file", "contains NUL bytes")])
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader, None)
        if header is None:
            raise ExportFormatError("export is empty", [Problem(None, "file", "no header row")])
        names = [h.strip().lower() for h in header]
        url_col = _find(names, URL_HEADERS)
        label_col = _find(names, LABEL_HEADERS)
        if url_col is None or label_col is None:
            missing = [w for w, c in (("Url", url_col), ("Label", label_col)) if c is None]
            raise ExportFormatError(
                "export lacks required columns",
                [Problem(None, "header", f"no {m!r} column (found {header!r})") for m in missing],
            )
        at_col = _find(names, LABELED_AT_HEADERS)
        rows: list[ExportRow] = []
        problems: list[Problem] = []
        for n, record in enumerate(reader, start=1):
            if not any(cell.strip() for cell in record):
                continue
            if len(record) <= max(url_col, label_col):
                problems.append(Problem(n, "row", f"{len(record)} cells, fewer than the header's"))
                continue
            url = record[url_col].strip()
            label, why = _single_label(record[label_col])
            if not url:
                problems.append(Problem(n, "Url", "empty image URL"))
            elif why is not None or label is None:
                problems.append(Problem(n, "Label", why or "empty label"))
            else:
                at = record[at_col].strip() if at_col is not None and at_col < len(record) else None
                rows.append(ExportRow(n, url, label, at or None))
    except csv.Error as exc:
        raise ExportFormatError("export is not valid CSV", [Problem(reader.line_num, "file", str(exc))]) from exc
    return ParsedExport(tuple(rows), tuple(problems))


def _find(names: list[str], wanted: Iterable[str]) -> int | None:
    for w in wanted:
        if w in names:
            return names.index(w)
    return None


def write_csv_export(rows: Iterable[tuple[str, str]]) -> bytes:
    """A CSV export with ``Url`` and ``Label`` columns (what the simulation's oracle writes)."""
    buf = io.StringIO(newline="")
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(["Url", "Label"])
    for url, label in rows:
        writer.writerow([url, label])
    return buf.getvalue().encode("utf-8")


def datastore_url(datastore: str, path: str) -> str:
    """The ``AmlDatastore://`` form of a file in a datastore."""
    return f"AmlDatastore://{datastore}/{path.lstrip('/')}"
