"""A Label Studio of the person's own, on 127.0.0.1, from its venv (``make label-studio``).

It runs ``label-studio start`` with a clean environment (Label Studio also reads a bare ``HOST``,
``PORT`` or ``USERNAME``), SQLite under ``<data dir>/label-studio``, reporting off, the legacy token
on, and Label Studio's local-files route serving the loop's object store (``LOCAL_FILES_DOCUMENT_ROOT``),
which is where the selector copies the items it hands off. The user, password, token and Django
secret are made once and kept beside the database (``credentials.json``, owner-only), so a restart
logs in the same person and resumes in a few seconds; a first start migrates a new database (30-40 s).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Self

import requests

from shared.errors import ActiveLearningError

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".venv-label-studio"
DB_FILE = "label_studio.sqlite3"
LOG_FILE = "label-studio.log"
PID_FILE = "label-studio.pid"
CREDENTIALS_FILE = "credentials.json"


@dataclass(frozen=True, slots=True)
class Credentials:
    username: str
    password: str
    token: str  # the legacy API token of that user (LABEL_STUDIO_USER_TOKEN)
    secret_key: str  # Django's: it signs sessions and tokens, so it must outlive a restart

    @classmethod
    def new(cls) -> Credentials:
        return cls("labeler@localhost", secrets.token_urlsafe(12), secrets.token_hex(20), secrets.token_urlsafe(48))

    @classmethod
    def load_or_create(cls, folder: Path) -> Credentials:
        path = folder / CREDENTIALS_FILE
        if path.exists():
            doc = json.loads(path.read_text())
            return cls(**{k: str(doc[k]) for k in ("username", "password", "token", "secret_key")})
        made = cls.new()
        made.save(folder)
        return made

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / CREDENTIALS_FILE
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(asdict(self), f, indent=1)


def port_problem(port: int) -> str | None:
    """Why Label Studio could not listen on 127.0.0.1:``port`` now, or None."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Django's server does
        try:
            s.bind(("127.0.0.1", port))
        except OSError as exc:
            return f"port {port} is busy ({exc.strerror}): give another with --port"
    return None


def _is_label_studio(pid: int) -> bool:
    """Whether process ``pid`` lives and is a Label Studio (its command line, where /proc shows it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        return b"label-studio" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # no /proc (macOS): a live process with that pid is taken to be it


class LocalLabelStudio:
    """Start with :meth:`start` (or ``with``), stop with :meth:`stop`; the data dir stays."""

    def __init__(self, data_dir: Path, *, port: int, document_root: Path, venv: Path = VENV,
                 start_timeout: float = 180.0) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.port = port
        self.document_root = Path(document_root).resolve()
        self.exe = Path(venv) / "bin" / "label-studio"
        self.start_timeout = start_timeout
        self.credentials = Credentials.load_or_create(self.data_dir)
        self._proc: subprocess.Popen[bytes] | None = None
        self._http = requests.Session()
        self._http.trust_env = False  # loopback: never through a proxy from the environment

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / LOG_FILE

    @property
    def first_start(self) -> bool:
        """No database yet: this start migrates one (30-40 s)."""
        return not (self.data_dir / DB_FILE).exists()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def environment(self) -> dict[str, str]:
        c = self.credentials
        return {
            "PATH": f"{self.exe.parent}:/usr/local/bin:/usr/bin:/bin",
            "HOME": os.environ.get("HOME", str(self.data_dir)),
            "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "PYTHONUNBUFFERED": "1",
            "LABEL_STUDIO_USERNAME": c.username, "LABEL_STUDIO_PASSWORD": c.password,
            "LABEL_STUDIO_USER_TOKEN": c.token, "SECRET_KEY": c.secret_key,
            "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
            "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
            "LABEL_STUDIO_HOST": self.url,
            "LOCAL_FILES_SERVING_ENABLED": "true",
            "LOCAL_FILES_DOCUMENT_ROOT": str(self.document_root),
            "SENTRY_DSN": "", "FRONTEND_SENTRY_DSN": "",
            "COLLECT_ANALYTICS": "false", "LATEST_VERSION_CHECK": "false",
        }

    def check_can_start(self) -> None:
        """Raise saying why :meth:`start` cannot work now: not installed, still running, port busy."""
        if not self.exe.exists():
            raise ActiveLearningError(f"Label Studio is not installed ({self.exe} is missing): run `make label-studio`")
        pid_file = self.data_dir / PID_FILE
        if pid_file.exists():
            with contextlib.suppress(ValueError):
                pid = int(pid_file.read_text().strip())
                if _is_label_studio(pid):
                    raise ActiveLearningError(
                        f"a Label Studio (pid {pid}) of an earlier `al label` still runs on {self.data_dir}: "
                        f"stop it (kill {pid}) or use another --data-dir")
            pid_file.unlink(missing_ok=True)
        why = port_problem(self.port)
        if why:
            raise ActiveLearningError(why)

    def start(self, on_wait: Callable[[float], None] = lambda s: None) -> Self:
        """Start and wait until ``/health`` answers (``on_wait(seconds so far)`` while waiting)."""
        if self.running:
            return self
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.check_can_start()
        cmd = [str(self.exe), "start", "--no-browser", "--internal-host", "127.0.0.1", "--port", str(self.port),
               "--data-dir", str(self.data_dir)]
        with open(self.log_path, "ab") as log:
            log.write(f"\n=== al label: start {time.strftime('%Y-%m-%dT%H:%M:%S')} port {self.port}\n".encode())
            log.flush()
            # Its own session: the terminal's Ctrl-C reaches `al label`, which then stops it in order.
            self._proc = subprocess.Popen(cmd, env=self.environment(), cwd=self.data_dir, stdin=subprocess.DEVNULL,
                                          stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        (self.data_dir / PID_FILE).write_text(str(self._proc.pid))
        atexit.register(self.stop)
        try:
            self._wait_healthy(on_wait)
        except BaseException:
            self.stop()
            raise
        return self

    def log_tail(self, lines: int = 25) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def _wait_healthy(self, on_wait: Callable[[float], None]) -> None:
        started = time.monotonic()
        while (waited := time.monotonic() - started) < self.start_timeout:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise ActiveLearningError(f"Label Studio exited (code {self._proc.returncode}) while starting; "
                                          f"its log {self.log_path} ends:\n{self.log_tail()}")
            with contextlib.suppress(requests.RequestException):
                if self._http.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            on_wait(waited)
            time.sleep(0.3)
        raise ActiveLearningError(f"Label Studio did not answer {self.url}/health within {self.start_timeout:.0f} s; "
                                  f"its log {self.log_path} ends:\n{self.log_tail()}")

    def stop(self) -> None:
        """SIGTERM to its process group, SIGKILL after 15 s (or at a second Ctrl-C); idempotent."""
        proc, self._proc = self._proc, None
        atexit.unregister(self.stop)
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except (subprocess.TimeoutExpired, KeyboardInterrupt):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        (self.data_dir / PID_FILE).unlink(missing_ok=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
