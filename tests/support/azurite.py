"""Azurite (the Azure Storage emulator, from npm) on loopback, started and stopped by the tests."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Azurite's documented, public development account (not a secret).
ACCOUNT = "devstoreaccount1"
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


@dataclass(frozen=True)
class Azurite:
    blob_port: int
    queue_port: int

    @property
    def blob_url(self) -> str:
        return f"http://127.0.0.1:{self.blob_port}/{ACCOUNT}"

    @property
    def queue_url(self) -> str:
        return f"http://127.0.0.1:{self.queue_port}/{ACCOUNT}"

    @property
    def connection_string(self) -> str:
        # The explicit form: the Python SDKs reject UseDevelopmentStorage=true.
        return (f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={KEY};"
                f"BlobEndpoint={self.blob_url};QueueEndpoint={self.queue_url};")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(port: int, proc: subprocess.Popen, timeout: float = 30.0) -> None:  # type: ignore[type-arg]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"azurite exited with code {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"azurite did not listen on 127.0.0.1:{port} within {timeout}s")


@contextmanager
def running_azurite() -> Iterator[Azurite]:
    exe = ROOT / "node_modules" / ".bin" / "azurite"
    if not exe.exists():
        raise RuntimeError("Azurite is not installed: run `npm ci` (make test does it)")
    workdir = Path(tempfile.mkdtemp(prefix="azurite-"))
    az = Azurite(_free_port(), _free_port())
    cmd = [str(exe), "--silent", "--disableTelemetry", "--skipApiVersionCheck", "--loose",
           "--location", str(workdir), "--blobHost", "127.0.0.1", "--blobPort", str(az.blob_port),
           "--queueHost", "127.0.0.1", "--queuePort", str(az.queue_port),
           "--tableHost", "127.0.0.1", "--tablePort", str(_free_port())]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait(az.blob_port, proc)
        _wait(az.queue_port, proc)
        yield az
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        shutil.rmtree(workdir, ignore_errors=True)
