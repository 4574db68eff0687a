"""Start and drive the stand-in Functions host (tests/support/funchost.py) from tests.

    with start_host({"AzureWebJobsStorage": az.connection_string, "AL_STAGES": "..."}) as host:
        host.post("/api/predictions", json=[...])
        host.invoke("selection_timer")
        host.blob_created("exports", "e1.csv", f"{az.blob_url}/exports/e1.csv")

The process gets the caller's environment without its ``AL_*`` and ``AzureWebJobs*`` variables, plus
``env``. It is killed if the test process exits without stopping it (atexit, and the parent-death
signal on Linux).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests

ROOT = Path(__file__).resolve().parents[2]
_LIVE: set[Host] = set()


class Host:
    """A running host process: ``url``, ``pid``, HTTP helpers, ``kill()``/``stop()``."""

    def __init__(self, proc: subprocess.Popen[bytes], ready: dict[str, Any], logdir: Path) -> None:
        self.proc = proc
        self.ready = ready
        self.pid: int = proc.pid
        self.port: int = int(ready["port"])
        self.url: str = ready["url"]
        self.task_hub: str = ready["taskHub"]
        self.logdir = logdir
        self.session = requests.Session()

    # -- HTTP --------------------------------------------------------------------------------------------

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", 60)
        return self.session.request(method, self.url + path, **kwargs)

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, json: Any = None, **kwargs: Any) -> requests.Response:
        return self.request("POST", path, json=json, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("DELETE", path, **kwargs)

    def invoke(self, name: str, input: str = "", **kwargs: Any) -> requests.Response:
        """Run a timer, queue or blob function now (``POST /admin/functions/<name>``; 200 or 500)."""
        return self.post(f"/admin/functions/{name}", json={"input": input}, **kwargs)

    def blob_created(self, container: str, name: str, blob_url: str | None = None, *,
                     function: str | None = None, **kwargs: Any) -> requests.Response:
        """Deliver an Event Grid ``Microsoft.Storage.BlobCreated`` event to the blobs extension webhook
        of ``function`` (default: the app's only blob trigger)."""
        event = {
            "id": str(uuid.uuid4()),
            "topic": "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg/providers/"
                     "Microsoft.Storage/storageAccounts/devstoreaccount1",
            "subject": f"/blobServices/default/containers/{container}/blobs/{name}",
            "eventType": "Microsoft.Storage.BlobCreated",
            "eventTime": datetime.now(UTC).isoformat(),
            "dataVersion": "", "metadataVersion": "1",
            "data": {"api": "PutBlob", "clientRequestId": str(uuid.uuid4()), "requestId": str(uuid.uuid4()),
                     "eTag": "", "contentType": "application/octet-stream", "contentLength": 0,
                     "blobType": "BlockBlob",
                     "url": blob_url or f"https://devstoreaccount1.blob.core.windows.net/{container}/{quote(name)}",
                     "sequencer": "0", "storageDiagnostics": {"batchId": str(uuid.uuid4())}},
        }
        return self.event_grid([event], "Notification", function=function, **kwargs)

    def event_grid(self, events: list[dict[str, Any]], kind: str, *, function: str | None = None,
                   **kwargs: Any) -> requests.Response:
        """POST events to ``/runtime/webhooks/blobs?functionName=Host.Functions.<function>``."""
        if function is None:
            blobs = [n for n, t in self.ready["triggers"].items() if t == "blobTrigger"]
            if len(blobs) != 1:
                raise ValueError(f"name the blob trigger function: the app has {blobs}")
            function = blobs[0]
        headers = {"aeg-event-type": kind, **kwargs.pop("headers", {})}
        return self.post(f"/runtime/webhooks/blobs?functionName=Host.Functions.{function}", json=events,
                         headers=headers, **kwargs)

    def logs(self) -> str:
        """What the host wrote on stderr so far."""
        return (self.logdir / "stderr.log").read_text(errors="replace")

    # -- lifecycle ----------------------------------------------------------------------------------------

    def kill(self) -> None:
        """SIGKILL: the host gets no chance to finish anything."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        _LIVE.discard(self)

    def stop(self, timeout: float = 15) -> int:
        """SIGTERM, then wait (SIGKILL after ``timeout``). Returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        _LIVE.discard(self)
        self.session.close()
        return int(self.proc.returncode)

    def __enter__(self) -> Host:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


try:  # loaded here: the child between fork and exec must not import anything
    _PRCTL: Any = ctypes.CDLL("libc.so.6", use_errno=True).prctl
except OSError:  # not Linux: atexit alone
    _PRCTL = None


def _parent_death_signal() -> None:
    """Runs in the child before exec: the host dies with the test process (PR_SET_PDEATHSIG)."""
    if _PRCTL is not None:
        _PRCTL(1, signal.SIGKILL)


def start_host(env: dict[str, str], *, port: int | None = None, task_hub: str = "hub", cwd: Path = ROOT,
               app: str | None = None, args: list[str] | tuple[str, ...] = (), timeout: float = 60) -> Host:
    """Spawn ``python -m tests.support.funchost`` and wait for its ready line (``port=None``: any free
    port). Raises with the host's stderr if it exits or is not ready within ``timeout`` seconds."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AL_", "AzureWebJobs"))}
    logdir = Path(tempfile.mkdtemp(prefix="funchost-"))
    cmd = [sys.executable, "-m", "tests.support.funchost", "--port", str(port or 0), "--task-hub", task_hub,
           *(["--app", app] if app else []), *args]
    with open(logdir / "stdout.log", "wb") as out, open(logdir / "stderr.log", "wb") as err:
        proc = subprocess.Popen(cmd, cwd=cwd, env={**base, **env}, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=err, preexec_fn=_parent_death_signal if _PRCTL else None)
    deadline = time.monotonic() + timeout
    while True:
        for line in (logdir / "stdout.log").read_text(errors="replace").splitlines():
            if line.startswith("{") and '"ready"' in line:
                host = Host(proc, json.loads(line), logdir)
                _LIVE.add(host)
                return host
        if proc.poll() is not None or time.monotonic() > deadline:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
            stderr = (logdir / "stderr.log").read_text(errors="replace")
            why = f"exited with code {proc.returncode}" if proc.returncode is not None else "was not ready"
            raise RuntimeError(f"the stand-in Functions host {why} within {timeout:.0f}s; stderr:\n{stderr[-8000:]}")
        time.sleep(0.05)


@atexit.register
def _kill_leftovers() -> None:
    for host in list(_LIVE):
        with contextlib.suppress(Exception):
            host.kill()
