"""The embedded object store: containers are folders, objects are files, URIs are ``file://``."""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path
from urllib.parse import unquote, urlparse

from shared.errors import NotFoundError


def _check_segment(value: str, what: str) -> None:
    parts = value.split("/")
    if not value or value.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\\" in value:
        raise ValueError(f"{what} {value!r} must be a relative name without '.', '..' or '\\\\'")


class LocalFolderObjectStore:
    """:class:`shared.ports.ObjectStore` on a local folder; writes are atomic (temp file + rename)."""

    def __init__(self, root: str | Path, *, read_roots: tuple[Path, ...] = ()) -> None:
        """``read_roots``: further folders whose ``file://`` URIs may be read and copied from
        (e.g. one items folder shared by many simulated loops)."""
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self._readable = (self.root, *(Path(r).resolve() for r in read_roots))

    def _path(self, container: str, name: str) -> Path:
        _check_segment(container, "container")
        _check_segment(name, "object name")
        return self.root / container / name

    def uri(self, container: str, name: str) -> str:
        return self._path(container, name).as_uri()

    def uri_roots(self) -> tuple[str, ...]:
        return tuple(r.as_uri().rstrip("/") + "/" for r in self._readable)

    def put(self, container: str, name: str, data: bytes, *, overwrite: bool = False) -> str:
        path = self._path(container, name)
        if path.exists() and not overwrite:
            return path.as_uri()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".tmp-{os.getpid()}-{threading.get_ident()}-{path.name}")
        try:
            tmp.write_bytes(data)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return path.as_uri()

    def get(self, container: str, name: str) -> bytes:
        path = self._path(container, name)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise NotFoundError(f"no object {container}/{name}") from None

    def read(self, uri: str) -> bytes:
        path = self._from_uri(uri)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise NotFoundError(f"no object at {uri}") from None

    def exists(self, container: str, name: str) -> bool:
        return self._path(container, name).is_file()

    def copy(self, src_uri: str, container: str, name: str) -> str:
        src = self._from_uri(src_uri)
        if not src.is_file():
            raise NotFoundError(f"no object at {src_uri}")
        dst = self._path(container, name)
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(f".tmp-{dst.name}")
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
        return dst.as_uri()

    def list(self, container: str, prefix: str = "") -> list[str]:
        _check_segment(container, "container")
        base = self.root / container
        if not base.is_dir():
            return []
        names = (
            p.relative_to(base).as_posix()
            for p in base.rglob("*")
            if p.is_file() and not p.name.startswith(".tmp-")
        )
        return sorted(n for n in names if n.startswith(prefix))

    def delete(self, container: str, name: str) -> None:
        self._path(container, name).unlink(missing_ok=True)

    def _from_uri(self, uri: str) -> Path:
        parsed = urlparse(uri)
        if parsed.scheme != "file":
            raise ValueError(f"the local object store reads file:// URIs, got {uri!r}")
        path = Path(os.path.normpath(unquote(parsed.path)))
        if not any(path.is_relative_to(r) for r in self._readable):
            raise ValueError(f"{uri!r} is outside the object store at {self.root}")
        return path
