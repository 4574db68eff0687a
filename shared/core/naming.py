"""Item ids and the names items get in the labeling project's input folder (lossless both ways)."""

from __future__ import annotations

import re
from urllib.parse import quote, unquote

MAX_ITEM_ID = 256
_EXT = re.compile(r"^\.[A-Za-z0-9]{1,8}$")


def item_id_problem(item_id: str) -> str | None:
    """Why ``item_id`` is not acceptable, or None. Ids become blob names, so they are strict."""
    if not item_id:
        return "must not be empty"
    if len(item_id) > MAX_ITEM_ID:
        return f"must be at most {MAX_ITEM_ID} characters, got {len(item_id)}"
    if "/" in item_id or "\\" in item_id:
        return "must not contain path separators"
    if ".." in item_id:
        return "must not contain '..'"
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in item_id):
        return "must not contain control characters"
    return None


def labeling_name(batch_id: str, item_id: str, extension: str) -> str:
    """``<batch>/<percent-encoded item id><ext>``: the file the labelers see for an item."""
    if not _EXT.match(extension):
        raise ValueError(f"extension must look like '.png', got {extension!r}")
    return f"{batch_id}/{quote(item_id, safe='')}{extension}"


def item_id_from_path(path: str) -> str:
    """The item id of a labeling file, from its path or URL (the inverse of :func:`labeling_name`)."""
    last = path.rstrip("/").rsplit("/", 1)[-1]
    stem = last.rsplit(".", 1)[0] if "." in last else last
    return unquote(stem) if "%" in stem else stem


def extension_of(uri: str) -> str:
    last = uri.rsplit("/", 1)[-1]
    ext = "." + last.rsplit(".", 1)[-1] if "." in last else ""
    return ext if _EXT.match(ext) else ".bin"
