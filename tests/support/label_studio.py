"""The real Label Studio (open-source, from its own venv `.venv-label-studio`) on loopback, for tests.

`LabelStudioServer(data_dir)` runs `label-studio start` on 127.0.0.1 with SQLite in `data_dir`, a
pre-created admin user and a fixed legacy API token, and a clean environment (Label Studio reads a bare
`HOST`, `PORT` or `USERNAME` too). Use it as a context manager or call start()/stop(); restart() stops
it and starts it again on the same data dir and port (Label Studio "down", then back).

Cold start on a new SQLite database spends ~30-40 s in Django migrations. Pass `template_dir`: the
first cold start saves its freshly migrated database there (at no extra cost), and later servers on a
new data dir start from a copy of it in a few seconds. The template is keyed by the installed Label
Studio version and the credentials, so a stale one is never reused.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Self

import requests

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".venv-label-studio"
EXE = VENV / "bin" / "label-studio"

# Test-only credentials (loopback server, throwaway database).
USERNAME = "admin@example.com"
PASSWORD = "labelstudio-test-pass"
TOKEN = "lstesttoken0123456789abcdef"
SECRET_KEY = "tests-only-label-studio-secret-key-0123456789abcdefghijklmnop"

# Where the session fixture keeps its migrated template databases (outside the repo, kept between runs).
TEMPLATE_DIR = Path(tempfile.gettempdir()) / "label-studio-template"

DB_FILE = "label_studio.sqlite3"
LOG_FILE = "label-studio.log"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _installed_version() -> str:
    """The label-studio distribution's version in its venv, without running it (for the template key)."""
    for meta in VENV.glob("lib/python*/site-packages/label_studio-*.dist-info/METADATA"):
        for line in meta.read_text(errors="replace").splitlines():
            if line.startswith("Version:"):
                return line.split(":", 1)[1].strip()
    return "unknown"


class LabelStudioServer:
    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        port: int | None = None,
        username: str = USERNAME,
        password: str = PASSWORD,
        token: str = TOKEN,
        secret_key: str = SECRET_KEY,
        extra_env: dict[str, str] | None = None,
        template_dir: str | os.PathLike[str] | None = None,
        start_timeout: float = 120.0,
    ) -> None:
        if not EXE.exists():
            raise RuntimeError(
                f"Label Studio is not installed at {EXE}: run `make label-studio` "
                "(it installs label-studio into its own venv, .venv-label-studio)"
            )
        if len(token) < 6:
            raise ValueError("Label Studio ignores a user token shorter than 6 characters")
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.username = username
        self.password = password
        self.token = token
        self.secret_key = secret_key
        self.extra_env = dict(extra_env or {})
        self.template_dir = Path(template_dir) if template_dir is not None else None
        self.start_timeout = start_timeout
        self.version: str | None = None
        self.version_info: dict[str, Any] = {}
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None
        self._pat: str | None = None
        self.seeded_from_template = False
        self._http = self.session(auth=False)

    # --- properties -------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def log_path(self) -> Path:
        return self.data_dir / LOG_FILE

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def headers(self) -> dict[str, str]:
        """The legacy-token Authorization header (enabled by LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN)."""
        return {"Authorization": f"Token {self.token}"}

    def session(self, *, auth: bool = True) -> requests.Session:
        """A requests session for this server (legacy-token auth unless auth=False)."""
        s = requests.Session()
        if auth:
            s.headers.update(self.headers())
        s.trust_env = False  # never route loopback calls through a proxy from the environment
        return s

    # --- environment ------------------------------------------------------------------------------
    def environment(self) -> dict[str, str]:
        env = {
            "PATH": f"{VENV / 'bin'}:/usr/local/bin:/usr/bin:/bin",
            "HOME": os.environ.get("HOME", str(self.data_dir)),
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "PYTHONUNBUFFERED": "1",
            "LABEL_STUDIO_USERNAME": self.username,
            "LABEL_STUDIO_PASSWORD": self.password,
            "LABEL_STUDIO_USER_TOKEN": self.token,
            "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
            "LABEL_STUDIO_HOST": self.url,
            "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
            "SECRET_KEY": self.secret_key,
            "SENTRY_DSN": "",
            "FRONTEND_SENTRY_DSN": "",
            "COLLECT_ANALYTICS": "false",
            "LATEST_VERSION_CHECK": "false",
            "SSRF_PROTECTION_ENABLED": "false",  # webhooks to loopback receivers
        }
        env.update(self.extra_env)
        return env

    # --- template database ------------------------------------------------------------------------
    def _template_key(self) -> str:
        raw = json.dumps([_installed_version(), self.username, self.password, self.token, self.secret_key])
        return hashlib.sha256(raw.encode()).hexdigest()[:16]

    def _template_db(self) -> Path | None:
        return None if self.template_dir is None else self.template_dir / self._template_key() / DB_FILE

    def _seed_from_template(self) -> None:
        """Copy a migrated database (user, organisation and token already made) into a new data dir."""
        tpl = self._template_db()
        if tpl is None or not tpl.exists() or (self.data_dir / DB_FILE).exists():
            return
        shutil.copy2(tpl, self.data_dir / DB_FILE)
        self.seeded_from_template = True

    def _save_template(self) -> None:
        """Right after a cold start, before any test writes to it, keep an online copy of the database
        (SQLite's backup API: consistent while the server runs) as the template for later starts."""
        tpl = self._template_db()
        if tpl is None or tpl.exists():
            return
        tpl.parent.mkdir(parents=True, exist_ok=True)
        tmp = tpl.with_name(f"{tpl.name}.{os.getpid()}.tmp")
        src = sqlite3.connect(self.data_dir / DB_FILE)
        dst = sqlite3.connect(tmp)
        try:
            src.backup(dst)
        finally:
            dst.close()
            src.close()
        os.replace(tmp, tpl)

    # --- lifecycle --------------------------------------------------------------------------------
    def start(self) -> Self:
        if self.running:
            return self
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cold = not (self.data_dir / DB_FILE).exists()
        self._seed_from_template()
        cmd = [str(EXE), "start", "--no-browser", "--internal-host", "127.0.0.1",
               "--port", str(self.port), "--data-dir", str(self.data_dir)]
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - kept open while the server runs
        self._log.write(f"\n=== start {time.strftime('%Y-%m-%dT%H:%M:%S')} port {self.port}\n".encode())
        self._log.flush()
        self._proc = subprocess.Popen(
            cmd, env=self.environment(), cwd=self.data_dir, stdin=subprocess.DEVNULL,
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        atexit.register(self.stop)  # never leave a server behind a crashed script
        try:
            self._wait_healthy()
            self._read_version()
            if cold and not self.seeded_from_template:
                self._save_template()
        except BaseException:
            self.stop()
            raise
        return self

    def _log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"label-studio exited with code {self._proc.returncode} before it answered /health; "
                    f"log {self.log_path}:\n{self._log_tail()}"
                )
            try:
                r = self._http.get(f"{self.url}/health", timeout=2)
                if r.status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.3)
        raise TimeoutError(
            f"label-studio did not answer {self.url}/health within {self.start_timeout:.0f}s; "
            f"log {self.log_path}:\n{self._log_tail()}"
        )

    def _read_version(self) -> None:
        r = self._http.get(f"{self.url}/api/version/", headers=self.headers(), timeout=10)
        r.raise_for_status()
        self.version_info = r.json()
        # /api/version/ answers {"release": "1.23.2", "label-studio-os-package": {"version": ...}, ...}
        self.version = self.version_info.get("release") or (
            self.version_info.get("label-studio-os-package") or {}).get("version")

    def stop(self) -> None:
        """Terminate the server's process group (SIGTERM, then SIGKILL after 15 s) and wait for it."""
        proc, self._proc = self._proc, None
        atexit.unregister(self.stop)
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        if self._log is not None:
            self._log.close()
            self._log = None

    def restart(self) -> Self:
        self.stop()
        return self.start()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- tokens -----------------------------------------------------------------------------------
    def personal_access_token(self) -> str:
        """A personal access token (a JWT refresh token) for the admin user.

        Verified on 1.23.2: `POST /api/token/` (no body, authenticated with the legacy token) answers 201
        {"token": PAT}; `POST /api/token/refresh/` {"refresh": PAT} answers {"access": JWT} for
        `Authorization: Bearer`. A user holds one unexpired PAT at a time: a second POST answers 409
        ("You already have a valid token"), and `GET /api/token/` lists it only truncated (no signature),
        so the PAT made first is cached on this instance (it survives restart(): same SECRET_KEY)."""
        if self._pat:
            return self._pat
        r = self._http.post(f"{self.url}/api/token/", headers=self.headers(), timeout=10)
        if r.status_code != 201:
            raise RuntimeError(f"POST /api/token/ answered {r.status_code} (409: this user already has a PAT "
                               f"that this instance did not create): {r.text[:300]}")
        pat = str(r.json()["token"])
        self._pat = pat
        return pat

    def access_token(self, pat: str | None = None) -> str:
        """Exchange a PAT for a short-lived (300 s) Bearer access token: POST /api/token/refresh/."""
        r = self._http.post(f"{self.url}/api/token/refresh/", json={"refresh": pat or self.personal_access_token()},
                          timeout=10)
        r.raise_for_status()
        return str(r.json()["access"])
