"""Parse (and, for the simulation's oracle, write) Azure ML Data Labeling exports.

Formats, for image classification (single-label; a multi-label row is reported, not guessed):

* **CSV** ("Export -> CSV", written under ``Labeling/export/csv``): one row per image with its URL
  and label. Headers are matched case-insensitively (``Url``/``Image URL``/``image_url``,
  ``Label``/``Labels``; ``Label Confidence`` and ``Labeled Time`` are optional) and other columns
  are ignored. A multi-label cell looks like ``['a', 'b']``.
* **COCO** (``Labeling/export/coco``, a ``.json`` file): ``images`` (``id`` and ``coco_url``,
  else ``absolute_url``, else ``file_name``), ``annotations`` (``image_id``, ``category_id``) and
  ``categories`` (``id``, ``name``). An image with two categories is multi-label.
* **JSON Lines / MLTable** (the dataset export; an ``MLTable`` file names ``.jsonl`` files): one
  object per line with ``image_url`` and ``label`` (a string, or a one-element list).

Image URLs come as ``AmlDatastore://<datastore>/<path>`` or
``azureml://[subscriptions/…/resourcegroups/…/workspaces/…/]datastores/<datastore>/paths/<path>``
(also ``https://`` blob URLs and ``file://`` in the embedded loop). :func:`item_id_for_url` maps a
URL back to the item id the selector named the file after. Pure: no I/O.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from shared.core.naming import MAX_ITEM_ID, item_id_from_path, item_id_problem
from shared.errors import ExportFormatError, Problem

URL_HEADERS = ("url", "image_url", "image url", "imageurl")
LABEL_HEADERS = ("label", "labels")
LABELED_AT_HEADERS = ("labeled time", "labeled_time", "labeledtime", "labeled date")
FORMATS = ("csv", "coco", "jsonl")
REPORT_SUFFIX = ".report.json"
_LIST = re.compile(r"^\s*\[(.*)\]\s*$", re.S)
_AZUREML = re.compile(
    r"^azureml://(?:subscriptions/[^/]+/resource_?groups/[^/]+/workspaces/[^/]+/)?"
    r"datastores/(?P<datastore>[^/]+)/paths/(?P<path>.+)$", re.I)
_SUSPECT_ID = re.compile(r"[\x00-\x1f\x7f/\\]|\.\.")  # a quick pre-check of naming.item_id_problem
_OTHER_SCHEME = re.compile(r"^(?P<scheme>[a-z][a-z0-9+.-]*)://(?P<rest>.*)$", re.I | re.S)


@dataclass(frozen=True, slots=True)
class ExportRow:
    row: int  # 1-based data row (CSV: the header is row 0; JSON Lines: the line; COCO: the image's index)
    url: str
    label: str
    labeled_at: str | None = None


@dataclass(frozen=True, slots=True)
class ParsedExport:
    rows: tuple[ExportRow, ...]
    problems: tuple[Problem, ...]
    format: str = "csv"
    url_field: str = "Url"  # how the format names its fields, so a report speaks the export's language
    label_field: str = "Label"


# --- URLs ---------------------------------------------------------------------------------------
def image_path(url: str) -> tuple[str | None, str | None]:
    """(path of the image inside its datastore or container, problem). Accepts the two Azure ML URL
    forms, ``http(s)://account/container/path``, ``file://`` and scheme-less relative paths."""
    value = url.strip()
    head = value[:15].lower()
    if head == "amldatastore://":  # string operations first: this runs once per exported row
        datastore, _, path = value[15:].partition("/")
        return (path, None) if datastore and path else (None, "AmlDatastore:// URL without a datastore and a path")
    if head.startswith("azureml://"):
        m = _AZUREML.match(value)
        if m is None:
            return None, "azureml:// URL without the datastores/<name>/paths/<path> part"
        return m.group("path"), None
    m = _OTHER_SCHEME.match(value)
    if m is None:
        return (value, None) if value else (None, "empty image URL")
    scheme = m.group("scheme").lower()
    if scheme in ("http", "https"):
        parts = m.group("rest").split("/", 1)
        return (parts[1], None) if len(parts) == 2 and parts[1] else (None, "blob URL without a path")
    if scheme == "file":
        return m.group("rest"), None
    return None, f"unsupported URL scheme {scheme!r} (expected azureml://, AmlDatastore://, https://)"


def item_id_for_url(url: str) -> tuple[str | None, str | None]:
    """(item id, problem): the id the selector encoded in the labeling file's name, or why not."""
    path, why = image_path(url)
    if path is None:
        return None, why
    if path.endswith("/"):
        return None, "URL names a folder, not an image"
    item_id = item_id_from_path(path)
    if not item_id or len(item_id) > MAX_ITEM_ID or _SUSPECT_ID.search(item_id):
        bad = item_id_problem(item_id)
        if bad is not None:
            return None, f"file name does not encode an item id (the id {bad})"
    return item_id, None


def handed_out_name(url: str, *, container: str, hosts: Iterable[str] = ()) -> tuple[str | None, str | None]:
    """(``<batch>/<file>``, None): the labeling file a row's URL names, in the one form the selector
    wrote it (``labeling_name``), or (None, why not). The one normalisation: an ``azureml://`` or
    ``AmlDatastore://`` path, or an ``https://`` path on one of ``hosts`` (the loop's storage), with the
    labeling ``container`` in front or not. Anything else is refused, never guessed at: another host,
    a query or fragment, empty, ``.`` or ``..`` segments, backslashes, a spreadsheet formula, more or
    fewer than two segments. The caller compares the result exactly with the names it handed out."""
    value = url.strip()
    if not value:
        return None, "empty image URL"
    if value[0] in "=+-@":
        return None, "a spreadsheet formula, not a URL"
    if "?" in value or "#" in value:
        return None, "a URL with a query or fragment does not name a labeling file"
    if "\\" in value or any(ord(c) < 32 or ord(c) == 127 for c in value):
        return None, "backslashes or control characters in the URL"
    head = value[:15].lower()
    if head == "amldatastore://" or head.startswith("azureml://"):
        path, why = image_path(value)
    else:
        m = _OTHER_SCHEME.match(value)
        if m is None or m.group("scheme").lower() != "https":
            return None, "not an azureml://, AmlDatastore:// or https:// URL of the loop's storage"
        host, _, path = m.group("rest").partition("/")
        allowed = {h.lower() for h in hosts}
        if host.lower() not in allowed:
            return None, f"host {host[:100]!r} is not one the loop hands items out from"
        why = None if path else "blob URL without a path"
    if path is None or why:
        return None, why or "no path"
    parts = path.split("/")
    if any(p in ("", ".", "..") for p in parts):
        return None, "empty, . or .. path segments"
    if parts[0] == container and len(parts) == 3:
        parts = parts[1:]
    if len(parts) != 2:
        return None, f"not <{container}>/<batch>/<file>"
    return "/".join(parts), None


def datastore_url(datastore: str, path: str) -> str:
    """The ``AmlDatastore://`` form of a file in a datastore."""
    return f"AmlDatastore://{datastore}/{path.lstrip('/')}"


def azureml_url(datastore: str, path: str, *, subscription: str = "", resource_group: str = "",
                workspace: str = "") -> str:
    """The ``azureml://`` form (long when the workspace is given, else the short datastore form)."""
    head = (f"subscriptions/{subscription}/resourcegroups/{resource_group}/workspaces/{workspace}/"
            if subscription else "")
    return f"azureml://{head}datastores/{datastore}/paths/{path.lstrip('/')}"


# --- labels -------------------------------------------------------------------------------------
def _single_label(raw: str) -> tuple[str | None, str | None]:
    """(label, problem): unwraps ``['x']``; several labels are a problem."""
    value = raw.strip()
    if value and value[0] != "[":
        return value, None  # the common case, without the regex
    m = _LIST.match(value)
    if m:
        parts = [p.strip().strip("'\"").strip() for p in m.group(1).split(",") if p.strip()]
        if len(parts) > 1:
            return None, f"multi-label rows are not supported (got {len(parts)} labels)"
        value = parts[0] if parts else ""
    if not value:
        return None, "empty label"
    return value, None


def _json_label(raw: object) -> tuple[str | None, str | None]:
    if isinstance(raw, list):
        if len(raw) > 1:
            return None, f"multi-label rows are not supported (got {len(raw)} labels)"
        raw = raw[0] if raw else ""
    if raw is None:
        return None, "empty label"
    if not isinstance(raw, str):
        return None, f"label must be text, got {type(raw).__name__}"
    return _single_label(raw) if raw.strip() else (None, "empty label")


def _text(data: bytes) -> str:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ExportFormatError("export is not UTF-8 text", [Problem(None, "file", str(exc))]) from exc
    if "\x00" in text:
        raise ExportFormatError("export is not a text file", [Problem(None, "file", "contains NUL bytes")])
    return text


# --- CSV ----------------------------------------------------------------------------------------
MAX_URL_CHARS = 4096
MAX_LABEL_CHARS = 512
MAX_TIME_CHARS = 64
# csv's default limit (128 KiB a field) fails the whole file on one long cell: lift it (exports are
# bounded by AL_MAX_EXPORT_BYTES) and judge long cells per row instead.
csv.field_size_limit(2**31 - 1)


def _too_long(url: str, label: str | None, at: str | None) -> tuple[str, str] | None:
    """(field kind, reason) when one of a row's values is longer than any real one."""
    if len(url) > MAX_URL_CHARS:
        return "url", f"URL of {len(url)} characters (at most {MAX_URL_CHARS})"
    if label is not None and len(label) > MAX_LABEL_CHARS:
        return "label", f"label of {len(label)} characters (at most {MAX_LABEL_CHARS})"
    if at is not None and len(at) > MAX_TIME_CHARS:
        return "time", f"labeling time of {len(at)} characters"
    return None


def parse_csv_export(data: bytes) -> ParsedExport:
    """Rows and per-row problems; :class:`ExportFormatError` if the file is not such an export."""
    text = _text(data)
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
        url_name, label_name = header[url_col].strip(), header[label_col].strip()
        at_col = _find(names, LABELED_AT_HEADERS)
        rows: list[ExportRow] = []
        problems: list[Problem] = []
        for n, record in enumerate(reader, start=1):
            if not "".join(record).strip():  # a blank row (one C call: this runs once per row)
                continue
            if len(record) <= max(url_col, label_col):
                problems.append(Problem(n, "row", f"{len(record)} cells, fewer than the header's"))
                continue
            url = record[url_col].strip()
            at = record[at_col].strip() if at_col is not None and at_col < len(record) else None
            long = _too_long(url, record[label_col], at)
            if long is not None:
                problems.append(Problem(n, {"url": url_name, "label": label_name}.get(long[0], "time"), long[1]))
                continue
            label, why = _single_label(record[label_col])
            if not url:
                problems.append(Problem(n, url_name, "empty image URL"))
            elif why is not None or label is None:
                problems.append(Problem(n, label_name, why or "empty label"))
            else:
                rows.append(ExportRow(n, url, label, at or None))
    except csv.Error as exc:
        raise ExportFormatError("export is not valid CSV", [Problem(reader.line_num, "file", str(exc))]) from exc
    return ParsedExport(tuple(rows), tuple(problems), "csv", url_name, label_name)


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


# --- JSON Lines / MLTable -----------------------------------------------------------------------
def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        twice = sorted({k for k in keys if keys.count(k) > 1})
        raise ValueError(f"key {twice[0][:100]!r} appears more than once (ambiguous)")
    return dict(pairs)


def _loads(text: str) -> Any:
    """json.loads that turns every way a document can be unreadable into ValueError, a repeated key
    (which JSON leaves undefined and Python resolves to the last) included."""
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates)
    except RecursionError as exc:
        raise ValueError("nested too deeply") from exc


def parse_jsonl_export(data: bytes) -> ParsedExport:
    """One JSON object per line with ``image_url`` and ``label``. A bad line is a row problem; a
    file where no line is such an object is :class:`ExportFormatError`."""
    text = _text(data)
    rows: list[ExportRow] = []
    problems: list[Problem] = []
    objects = 0
    with_url = 0
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = _loads(line)
        except ValueError as exc:
            problems.append(Problem(n, "line", f"not JSON: {exc}"))
            continue
        if not isinstance(obj, dict):
            problems.append(Problem(n, "line", f"expected a JSON object, got {type(obj).__name__}"))
            continue
        objects += 1
        url = obj.get("image_url")
        if not isinstance(url, str) or not url.strip():
            problems.append(Problem(n, "image_url", "missing or empty image URL"))
            continue
        with_url += 1
        label, why = _json_label(obj.get("label"))
        if label is None:
            problems.append(Problem(n, "label", why or "empty label"))
            continue
        at = obj.get("labeled_time") or obj.get("labeledTime")
        long = _too_long(url.strip(), label, at if isinstance(at, str) else None)
        if long is not None:
            problems.append(Problem(n, {"url": "image_url", "label": "label"}.get(long[0], "labeled_time"), long[1]))
            continue
        rows.append(ExportRow(n, url.strip(), label, at if isinstance(at, str) and at.strip() else None))
    if objects == 0:
        detail = problems[:1] or [Problem(None, "file", "no lines")]
        raise ExportFormatError("export is not JSON Lines (no line is a JSON object)", detail)
    if with_url == 0:
        raise ExportFormatError("export lacks required fields",
                                [Problem(None, "image_url", "no line has an image_url")])
    return ParsedExport(tuple(rows), tuple(problems), "jsonl", "image_url", "label")


def write_jsonl_export(rows: Iterable[tuple[str, str]]) -> bytes:
    """JSON Lines as the labeling project's dataset export writes them (``label_confidence`` too)."""
    return "".join(
        json.dumps({"image_url": url, "label": label, "label_confidence": [1.0]}) + "\n" for url, label in rows
    ).encode("utf-8")


# --- COCO ---------------------------------------------------------------------------------------
def parse_coco_export(data: bytes) -> ParsedExport:
    """Images joined with their annotations' categories; :class:`ExportFormatError` if the document
    is not a COCO file."""
    try:
        doc = _loads(_text(data))
    except ValueError as exc:
        raise ExportFormatError("export is not valid JSON", [Problem(None, "file", str(exc))]) from exc
    if not isinstance(doc, dict):
        raise ExportFormatError("export is not a COCO file",
                                [Problem(None, "file", f"expected a JSON object, got {type(doc).__name__}")])
    missing = [k for k in ("images", "annotations", "categories") if not isinstance(doc.get(k), list)]
    if missing:
        raise ExportFormatError("export is not a COCO file",
                                [Problem(None, k, "missing or not a list") for k in missing])
    problems: list[Problem] = []
    categories: dict[object, str] = {}
    ambiguous: set[object] = set()  # category ids defined twice: whichever is meant cannot be told
    for i, cat in enumerate(doc["categories"]):
        cid = cat.get("id") if isinstance(cat, dict) else None
        name = cat.get("name") if isinstance(cat, dict) else None
        if not _is_id(cid) or not isinstance(name, str) or not name.strip():
            problems.append(Problem(None, f"categories[{i}]", "needs an integer or text id and a name"))
        elif cid in categories or cid in ambiguous:
            problems.append(Problem(None, f"categories[{i}]", f"id {str(cid)[:100]!r} is used twice: its "
                                    "annotations are refused"))
            categories.pop(cid, None)
            ambiguous.add(cid)
        else:
            categories[cid] = name.strip()
    images: dict[object, tuple[int, str | None, str | None]] = {}
    twice: set[object] = set()
    for i, img in enumerate(doc["images"], start=1):
        if not isinstance(img, Mapping) or not _is_id(img.get("id")):
            problems.append(Problem(i, "images", "an image needs an integer or text id"))
            continue
        url = next((img[k] for k in ("coco_url", "absolute_url", "file_name")
                    if isinstance(img.get(k), str) and img[k].strip()), None)
        if img["id"] in images or img["id"] in twice:
            problems.append(Problem(i, "id", f"image id {str(img['id'])[:100]!r} is used twice: refused"))
            if img["id"] in images:
                problems.append(Problem(images.pop(img["id"])[0], "id",
                                        f"image id {str(img['id'])[:100]!r} is used twice: refused"))
            twice.add(img["id"])
            continue
        at = img.get("date_captured")
        images[img["id"]] = (i, url.strip() if url else None, at if isinstance(at, str) and at else None)
    labels: dict[object, set[str]] = {}
    refused_images: set[object] = set()
    for i, ann in enumerate(doc["annotations"]):
        image_id = ann.get("image_id") if isinstance(ann, dict) else None
        cid = ann.get("category_id") if isinstance(ann, dict) else None
        if _is_id(image_id) and image_id in twice:
            continue  # reported with the image
        if not _is_id(image_id) or image_id not in images:
            problems.append(Problem(None, f"annotations[{i}].image_id", f"no image with id {image_id!r}"[:150]))
        elif _is_id(cid) and cid in ambiguous:
            problems.append(Problem(images[image_id][0], "category_id",
                                    f"category id {str(cid)[:100]!r} is defined twice (ambiguous)"))
            refused_images.add(image_id)
        elif not _is_id(cid) or cid not in categories:
            problems.append(Problem(images[image_id][0], "category_id", f"no category with id {cid!r}"))
        else:
            labels.setdefault(image_id, set()).add(categories[cid])
    rows: list[ExportRow] = []
    for image_id, (n, url, at) in images.items():
        names = labels.get(image_id, set())
        if image_id in refused_images:
            continue
        long = _too_long(url, next(iter(names)), at) if url and len(names) == 1 else None
        if long is not None:
            problems.append(Problem(n, {"url": "coco_url", "label": "category_id"}.get(long[0], "date_captured"),
                                    long[1]))
        elif url is None:
            problems.append(Problem(n, "coco_url", "image has no coco_url, absolute_url or file_name"))
        elif not names:
            problems.append(Problem(n, "category_id", "empty label (the image has no annotation)"))
        elif len(names) > 1:
            problems.append(Problem(n, "category_id",
                                    f"multi-label rows are not supported (got {len(names)} labels)"))
        else:
            rows.append(ExportRow(n, url, next(iter(names)), at))
    problems.sort(key=lambda p: (p.where is None, p.where or 0))
    return ParsedExport(tuple(rows), tuple(problems), "coco", "coco_url", "category_id")


def _is_id(value: object) -> bool:
    return (isinstance(value, int) and not isinstance(value, bool)) or (isinstance(value, str) and bool(value))


def write_coco_export(rows: Iterable[tuple[str, str]]) -> bytes:
    """A COCO classification export as Azure ML writes it (one annotation per image)."""
    images, annotations, categories = [], [], {}  # type: ignore[var-annotated]
    for n, (url, label) in enumerate(rows, start=1):
        cid = categories.setdefault(label, len(categories) + 1)
        images.append({"id": n, "width": 0, "height": 0, "file_name": url.split("/", 3)[-1],
                       "coco_url": url, "absolute_url": url, "date_captured": ""})
        annotations.append({"id": n, "category_id": cid, "image_id": n, "area": 0.0})
    doc = {"images": images, "annotations": annotations,
           "categories": [{"id": cid, "name": name} for name, cid in categories.items()]}
    return json.dumps(doc).encode("utf-8")


# --- which format -------------------------------------------------------------------------------
EXPORT_EXTENSIONS = (".csv", ".json", ".jsonl")


def is_export_name(name: str) -> bool:
    """Whether a blob is a labeling export by its name: a ``.csv``, ``.json`` or ``.jsonl`` file (the
    formats Azure ML wrote), not one of our reports, not hidden. Anything else beside the exports
    (images, MLTable manifests, a user's files) is never read, moved or deleted."""
    last = name.rsplit("/", 1)[-1]
    return (bool(last) and not name.endswith(REPORT_SUFFIX) and not last.startswith(".")
            and last.lower().endswith(EXPORT_EXTENSIONS))


def export_format(name: str, data: bytes) -> str:
    """``csv``, ``coco`` or ``jsonl``: by extension, else by content (a JSON object with
    ``images`` is COCO, other leading ``{`` is JSON Lines, anything else CSV)."""
    lower = name.lower()
    if lower.endswith(".csv"):
        return "csv"
    if lower.endswith(".jsonl"):
        return "jsonl"
    if lower.endswith(".json"):
        return "coco"
    head = data[:4096].lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith(b"{"):
        return "coco" if b'"images"' in data[:1_000_000] and b'"categories"' in data else "jsonl"
    return "csv"


PARSERS = {"csv": parse_csv_export, "coco": parse_coco_export, "jsonl": parse_jsonl_export}
WRITERS = {"csv": write_csv_export, "coco": write_coco_export, "jsonl": write_jsonl_export}


def parse_export(data: bytes, name: str = "") -> ParsedExport:
    """Parse an export in whichever of :data:`FORMATS` its name or content says it is."""
    return PARSERS[export_format(name, data)](data)
