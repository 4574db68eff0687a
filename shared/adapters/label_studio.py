"""Label Studio over its REST API: the loop's :class:`shared.ports.LabelingTool`.

What the loop asks of it (checked against Label Studio 1.23.2's source and a running server;
docs/labeling.md has the references):

* **Hand-off**: ``POST /api/projects/{id}/import?return_task_ids=true`` with tasks whose ``data`` hold
  the image reference, ``item_id``, ``batch_id`` and the strategy's ``uncertainty``, and a
  ``predictions`` entry (the serving model's version, top class and its probability) that the
  labeling UI shows as a pre-annotation. Import does not deduplicate, so before it the tasks of the
  batch already in the project are listed (Data Manager filter on ``data.batch_id``) and only the
  missing items are sent: a hand-off that died half-way and runs again creates no task twice.
* **Queue order**: the project uses ``"Uncertainty sampling"``: the next task is the one whose
  prediction (of the project's ``model_version``, set to the serving version at each hand-off) has
  the lowest score — the least confident guess first.
* **Answers back**: the webhook (sent once, never retried) and the catch-up, which pages through
  the project's tasks with their annotations (``GET /api/tasks?project=&fields=all``), newest
  ``updated_at`` first, down to its watermark.

The HTTP client is ``requests`` with tenacity retries on connection errors, timeouts, 429 and 5xx
(honouring ``Retry-After``); every request has a timeout. The token is a secret: it lives only in the
session's ``Authorization`` header. A personal access token (a JWT refresh token) is exchanged at
``/api/token/refresh/`` for a 5-minute access token, renewed before it expires or on a 401; any other
value is sent as a legacy ``Token``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import requests
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from shared.core import label_studio as ls
from shared.core.records import LabelingTask
from shared.core.retry_after import retry_after_seconds
from shared.errors import ActiveLearningError, UnavailableError

log = logging.getLogger(__name__)
ACCESS_TOKEN_SECONDS = 240  # Label Studio's access tokens live 300 s
PAGE_SIZE = 100
IMPORT_CHUNK = 500


class LabelStudioError(ActiveLearningError):
    """Label Studio refused a request (a 4xx other than 401/429): retrying cannot help."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


class _Retryable(Exception):
    def __init__(self, message: str, wait: float | None = None) -> None:
        self.wait = wait
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class ProjectSetup:
    """What :meth:`LabelStudioClient.ensure_project` made sure of."""

    project_id: int
    created: bool
    storage_id: int | None
    webhook_id: int | None


class LabelStudioClient:
    """The calls the loop makes to one Label Studio server. Build once per process; thread-safe."""

    def __init__(self, url: str, token: str, *, timeout: float = 10.0, attempts: int = 4,
                 backoff_seconds: float = 0.5, session: requests.Session | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if not url:
            raise ValueError("Label Studio URL is empty")
        if not token:
            raise ValueError("Label Studio token is empty")
        self.url = url.rstrip("/")
        self._token = token
        self._timeout = timeout
        self._attempts = attempts
        self._backoff = backoff_seconds
        self._sleep = sleep
        self._session = session or requests.Session()
        self._session.headers["User-Agent"] = "azure-active-learning"
        self._lock = threading.Lock()
        self._access: tuple[str, float] | None = None  # (access token, monotonic expiry)

    @property
    def attempts(self) -> int:
        return self._attempts

    def pause(self, attempt: int) -> None:
        """The back-off before try ``attempt + 1`` of a request retried by the caller."""
        self._sleep(min(30.0, self._backoff * 2 ** (attempt - 1)))

    def __repr__(self) -> str:  # never the token
        return f"LabelStudioClient({self.url!r})"

    # --- auth ----------------------------------------------------------------------------------
    @property
    def _is_pat(self) -> bool:
        return self._token.count(".") == 2  # a JWT: header.payload.signature

    def _authorization(self, *, renew: bool = False) -> str:
        if not self._is_pat:
            return f"Token {self._token}"
        with self._lock:
            if renew or self._access is None or time.monotonic() >= self._access[1]:
                resp = self._session.post(f"{self.url}/api/token/refresh/", json={"refresh": self._token},
                                          timeout=self._timeout)
                if resp.status_code == 429 or resp.status_code >= 500:  # overloaded or restarting: retried
                    raise _Retryable(f"POST /api/token/refresh/: Label Studio answered {resp.status_code}",
                                     retry_after_seconds(resp.headers.get("Retry-After"), time.time()))
                if resp.status_code != 200:
                    raise LabelStudioError(f"Label Studio refused the personal access token "
                                           f"(POST /api/token/refresh/ answered {resp.status_code})",
                                           status=resp.status_code)
                self._access = (str(resp.json()["access"]), time.monotonic() + ACCESS_TOKEN_SECONDS)
            return f"Bearer {self._access[0]}"

    # --- one request, retried ------------------------------------------------------------------
    def request(self, method: str, path: str, *, params: dict[str, Any] | None = None,
                body: Any = None, retry: bool = True) -> Any:
        """``method path`` with retries; the decoded JSON answer (None when empty). Raises
        :class:`UnavailableError` when Label Studio stays unreachable or overloaded, and
        :class:`LabelStudioError` when it refuses the request. ``retry=False``: one try, for a request
        that is not idempotent (an import that timed out may have been saved: the caller checks)."""
        attempt = 0

        def once() -> Any:
            nonlocal attempt
            attempt += 1
            try:
                resp = self._session.request(method, f"{self.url}{path}", params=params, json=body,
                                             timeout=self._timeout,
                                             headers={"Authorization": self._authorization()})
                if resp.status_code == 401 and self._is_pat:  # the access token expired early
                    resp = self._session.request(method, f"{self.url}{path}", params=params, json=body,
                                                 timeout=self._timeout,
                                                 headers={"Authorization": self._authorization(renew=True)})
            except (requests.ConnectionError, requests.Timeout) as exc:
                raise _Retryable(f"{method} {path}: {type(exc).__name__}") from exc
            if resp.status_code == 429 or resp.status_code >= 500:
                wait = retry_after_seconds(resp.headers.get("Retry-After"), time.time())
                raise _Retryable(f"{method} {path}: Label Studio answered {resp.status_code}", wait)
            if resp.status_code >= 400:
                raise LabelStudioError(f"{method} {path}: Label Studio answered {resp.status_code}: "
                                       f"{resp.text[:500]}", status=resp.status_code)
            return resp.json() if resp.content else None

        def wait(state: Any) -> float:
            exc = state.outcome.exception() if state.outcome else None
            hinted = getattr(exc, "wait", None)
            backoff = float(wait_exponential(multiplier=self._backoff, max=30)(state))
            return min(hinted, 60.0) if hinted is not None else backoff

        retrying = Retrying(stop=stop_after_attempt(self._attempts if retry else 1), retry=retry_if_exception(
            lambda e: isinstance(e, _Retryable)), wait=wait, sleep=self._sleep, reraise=True,
            before_sleep=lambda s: log.warning("Label Studio: %s; retrying",
                                               s.outcome.exception() if s.outcome else ""))
        try:
            return retrying(once)
        except _Retryable as exc:
            raise UnavailableError(f"Label Studio at {self.url} is unavailable ({exc}, {attempt} tries)") from exc

    # --- reads ---------------------------------------------------------------------------------
    def version(self) -> str:
        doc = self.request("GET", "/api/version/") or {}
        release = doc.get("release") or (doc.get("label-studio-os-package") or {}).get("version")
        return str(release or "unknown")

    def project(self, project_id: int) -> dict[str, Any]:
        return dict(self.request("GET", f"/api/projects/{project_id}/"))

    def tasks(self, project_id: int, *, filters: Sequence[dict[str, Any]] = (),
              ordering: Sequence[str] = ("tasks:id",), fields: str = "all") -> Iterator[dict[str, Any]]:
        """The project's tasks matching every Data Manager filter, page by page, in ``ordering``."""
        query = {"filters": {"conjunction": "and", "items": list(filters)}, "ordering": list(ordering)}
        page = 1
        while True:
            doc = self.request("GET", "/api/tasks/", params={
                "project": project_id, "page": page, "page_size": PAGE_SIZE, "fields": fields,
                "resolve_uri": "false", "query": json.dumps(query)})
            tasks = doc.get("tasks", []) if isinstance(doc, dict) else list(doc or [])
            yield from tasks
            total = doc.get("total") if isinstance(doc, dict) else None
            if not tasks or len(tasks) < PAGE_SIZE or (total is not None and page * PAGE_SIZE >= int(total)):
                return
            page += 1

    def task(self, task_id: int) -> dict[str, Any]:
        return dict(self.request("GET", f"/api/tasks/{task_id}/"))

    # --- writes --------------------------------------------------------------------------------
    def import_tasks(self, project_id: int, tasks: Sequence[dict[str, Any]]) -> list[int]:
        """One import request (not retried: Label Studio does not deduplicate, and a request that timed
        out may have been saved)."""
        doc = self.request("POST", f"/api/projects/{project_id}/import", params={"return_task_ids": "true"},
                           body=list(tasks), retry=False)
        return [int(i) for i in (doc or {}).get("task_ids", [])]

    def set_model_version(self, project_id: int, model_version: str) -> None:
        self.request("PATCH", f"/api/projects/{project_id}/", body={"model_version": model_version})

    def ensure_project(self, *, title: str, class_names: Sequence[str], project_id: int | None = None,
                       description: str = "", storage: dict[str, Any] | None = None,
                       webhook_url: str | None = None, webhook_headers: dict[str, str] | None = None,
                       ) -> ProjectSetup:
        """Create or update the model's project: its label config from ``class_names``, uncertainty
        sampling, a source storage (``storage``: ``{"type": "azure", ...}`` or ``{"type": "localfiles",
        ...}``) and the webhook to the label app. Idempotent: run it again after a model gains classes."""
        settings = {"title": title, "description": description, "label_config": ls.label_config(class_names),
                    "sampling": ls.UNCERTAINTY_SAMPLING, "show_skip_button": True, "maximum_annotations": 1,
                    "show_collab_predictions": True}
        created = False
        if project_id is None:
            found = [p for p in self._list("/api/projects/", {"title": title}) if p.get("title") == title]
            project_id = int(found[0]["id"]) if found else None
        if project_id is None:
            project_id = int(self.request("POST", "/api/projects/", body=settings)["id"])
            created = True
        else:
            self.request("PATCH", f"/api/projects/{project_id}/", body=settings)
        storage_id = self._ensure_storage(project_id, storage) if storage else None
        webhook_id = None
        if webhook_url:
            hook = {"project": project_id, "url": webhook_url, "send_payload": True, "send_for_all_actions": False,
                    "actions": list(ls.WEBHOOK_ACTIONS), "headers": dict(webhook_headers or {}), "is_active": True}
            existing = [w for w in self._list("/api/webhooks/", {"project": project_id}) if w.get("url") == webhook_url]
            if existing:
                webhook_id = int(existing[0]["id"])
                self.request("PATCH", f"/api/webhooks/{webhook_id}/", body=hook)
            else:
                webhook_id = int(self.request("POST", "/api/webhooks/", body=hook)["id"])
        return ProjectSetup(project_id, created, storage_id, webhook_id)

    def _ensure_storage(self, project_id: int, storage: dict[str, Any]) -> int:
        kind = storage["type"]
        body = {k: v for k, v in storage.items() if k != "type"} | {"project": project_id}
        path = f"/api/storages/{kind}/"
        same = "container" if kind == "azure" else "path"
        existing = [s for s in self._list(path, {"project": project_id}) if s.get(same) == body.get(same)]
        if existing:
            sid = int(existing[0]["id"])
            self.request("PATCH", f"{path}{sid}", body=body)
            return sid
        return int(self.request("POST", path, body=body)["id"])

    def _list(self, path: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        """Every item of a list endpoint: a plain list, or DRF pages (``results`` + ``next``; the
        project list is 30 a page and its ``title`` filter matches substrings)."""
        out: list[dict[str, Any]] = []
        page = 1
        while True:
            doc = self.request("GET", path, params={**params, "page": page, "page_size": PAGE_SIZE})
            if not isinstance(doc, dict):
                return out + list(doc or [])
            out += list(doc.get("results", []))
            if not doc.get("next"):
                return out
            page += 1


def image_ref_for(store: object) -> Callable[[str, str], str]:
    """How the labeler's browser gets an item of ``store`` through Label Studio (same origin, so the
    editor's XHR needs no CORS): a blob store's items by ``azure-blob://`` URIs, resolved by the
    project's Azure source storage in proxy mode (no SAS, no public container); a local folder's by
    Label Studio's local-files route (``LOCAL_FILES_SERVING_ENABLED``, the folder as
    ``LOCAL_FILES_DOCUMENT_ROOT``)."""
    from shared.adapters.local_objects import LocalFolderObjectStore

    if isinstance(store, LocalFolderObjectStore):
        return lambda container, name: f"/data/local-files/?d={container}/{name}"
    return lambda container, name: f"azure-blob://{container}/{name}"


class LabelStudioTool:
    """:class:`shared.ports.LabelingTool` on one Label Studio project.

    ``image_ref(container, name)`` turns where the selector copied an item into what the labeler's
    browser loads through Label Studio: ``azure-blob://container/name`` (the project's Azure source
    storage on the labeling account, proxy mode) or a ``/data/local-files/?d=`` path (embedded)."""

    def __init__(self, client: LabelStudioClient, *, project_id: int,
                 image_ref: Callable[[str, str], str]) -> None:
        self.client = client
        self.project_id = project_id
        self._image_ref = image_ref

    def version(self) -> str:
        return self.client.version()

    def _handed(self, batch_id: str) -> set[str]:
        return {str((t.get("data") or {}).get("item_id")) for t in self.client.tasks(
            self.project_id, filters=[ls.data_filter("batch_id", batch_id)], fields="task_only")}

    def create_tasks(self, batch_id: str, tasks: Sequence[LabelingTask]) -> int:
        """One task per item of the batch that has none in the project yet; how many were created.

        Each chunk is imported once; after a failed import (a timeout may still have saved it) the
        batch's tasks are listed again and only what is still missing is sent, so no retry creates a
        task twice."""
        have = self._handed(batch_id)
        missing = [t for t in tasks if t.item_id not in have]
        if not missing:
            return 0
        for start in range(0, len(missing), IMPORT_CHUNK):
            chunk = missing[start:start + IMPORT_CHUNK]
            for attempt in range(1, self.client.attempts + 1):
                try:
                    self.client.import_tasks(self.project_id, [
                        ls.task_json(t, self._image_ref(t.container, t.name)) for t in chunk])
                    break
                except UnavailableError:
                    if attempt == self.client.attempts:
                        raise
                    self.client.pause(attempt)
                    saved = self._handed(batch_id)
                    chunk = [t for t in chunk if t.item_id not in saved]
                    if not chunk:
                        break
        versions = {t.model_version for t in missing if t.predicted_label is not None}
        if len(versions) == 1:
            # The queue serves the lowest-scored predictions of the project's model_version first; import
            # sets it only while empty, and Label Studio accepts a version only once predictions carry it.
            self.client.set_model_version(self.project_id, versions.pop())
        log.info("label studio: %d tasks of batch %s created in project %d (%d there already)",
                 len(missing), batch_id, self.project_id, len(have))
        return len(missing)

    def changed_tasks(self, since: datetime | None) -> Iterator[dict[str, Any]]:
        """Tasks of the project with their annotations, most recently updated first, whose
        ``updated_at`` is at or after ``since`` (all labeled or once-labeled tasks when None)."""
        filters = [ls.updated_since_filter(since)] if since is not None else []
        yield from self.client.tasks(self.project_id, filters=filters, ordering=("-tasks:updated_at",))
