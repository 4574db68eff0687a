"""Locks that keep two selection runs (the timer and run-now, or two instances) from overlapping.

Two runs at once could both pick the same items before either records them. ``BlobLeaseLock`` (Azure)
holds a lease on one blob, renewed in the background while the run lasts, so a crashed holder frees
it when the lease expires; ``FileLock`` (embedded) holds ``flock`` on a file, which the OS frees when
the holder dies. Both are non-blocking: a busy lock raises :class:`LockBusyError` at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from azure.core.exceptions import HttpResponseError, ResourceExistsError

from shared.errors import ActiveLearningError

log = logging.getLogger(__name__)


class LockBusyError(ActiveLearningError):
    """Another selection run holds the lock; this one must not select."""


class SelectionLock(Protocol):
    def hold(self) -> contextlib.AbstractContextManager[None]:
        """Hold the lock for the ``with`` block; raise :class:`LockBusyError` if someone else has it."""
        ...


class FileLock:
    """``flock`` on ``path``: exclusive across processes and across open() calls in one process."""

    def __init__(self, path: str | Path) -> None:
        self._path = Path(path)

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise LockBusyError(f"another selection run holds {self._path}") from None
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


class BlobLeaseLock:
    """A lease on ``<container>/<name>`` (created empty if missing), renewed while held.

    ``lease_seconds`` is 15-60 (the Blob service's finite leases); renewal runs every third of it, so a
    holder that dies frees the lock within ``lease_seconds``.
    """

    def __init__(self, service: Any, *, container: str = "selection-lock", name: str = "selector.lock",
                 lease_seconds: int = 60) -> None:
        if not 15 <= lease_seconds <= 60:
            raise ValueError(f"lease_seconds must be 15..60, got {lease_seconds}")
        self._blob = service.get_blob_client(container, name)
        self._container = service.get_container_client(container)
        self._lease_seconds = lease_seconds

    def _ensure_blob(self) -> None:
        with contextlib.suppress(ResourceExistsError):
            self._container.create_container()
        with contextlib.suppress(ResourceExistsError, HttpResponseError):
            # An existing, leased blob refuses the upload (412): it exists, which is all we need.
            self._blob.upload_blob(b"", overwrite=False)

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        self._ensure_blob()
        try:
            lease = self._blob.acquire_lease(lease_duration=self._lease_seconds)
        except HttpResponseError as exc:
            if exc.status_code == 409:  # LeaseAlreadyPresent
                raise LockBusyError(f"another selection run holds the lease on {self._blob.url}") from None
            raise
        stop = threading.Event()
        renewer = threading.Thread(target=self._renew, args=(lease, stop), name="selection-lease", daemon=True)
        renewer.start()
        try:
            yield
        finally:
            stop.set()
            renewer.join()
            with contextlib.suppress(HttpResponseError):
                lease.release()

    def _renew(self, lease: Any, stop: threading.Event) -> None:
        while not stop.wait(self._lease_seconds / 3):
            try:
                lease.renew()
            except HttpResponseError as exc:  # the run goes on; the next renewal may succeed
                log.warning("selection lock: renewing the lease failed: %s", exc)
