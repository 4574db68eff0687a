"""GitHub Actions over the REST API: dispatch the training workflow, find and watch its run.

Why a small hand-written client: three endpoints, and the retry rules GitHub documents are specific
(primary limit: wait for ``x-ratelimit-reset``; secondary limit: honour ``Retry-After``, else wait at
least a minute, growing). A 422 is a mistake in what we sent (an unknown input, a missing ref):
retrying cannot fix it, so it surfaces at once with GitHub's own message.

The token is a secret (a Key Vault reference in the app settings): it lives only in the session's
``Authorization`` header and never appears in a message, a log line or ``repr``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import requests

from shared.core.retry_after import retry_after_seconds
from shared.errors import ActiveLearningError, InvalidInputError, NotFoundError, Problem

log = logging.getLogger(__name__)

API_VERSION = "2022-11-28"
_RETRY_STATUS = frozenset({500, 502, 503, 504})
_SECONDARY_MIN_WAIT_S = 60.0  # GitHub: "wait for at least one minute before retrying"


class GitHubError(ActiveLearningError):
    """GitHub answered with an error (or not at all) after the retries that could help."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


class GitHubRateLimitedError(GitHubError):
    """Rate limited for longer than this client waits in-process; retry after ``retry_after_s``."""

    def __init__(self, message: str, *, status: int, retry_after_s: float) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(message, status=status)


class GitHubValidationError(GitHubError, InvalidInputError):
    """422: GitHub refused the request as invalid (e.g. an input the workflow does not declare)."""

    def __init__(self, message: str, problems: list[Problem]) -> None:
        GitHubError.__init__(self, message, status=422)
        InvalidInputError.__init__(self, message, problems)


@dataclass(frozen=True, slots=True)
class WorkflowRun:
    run_id: int
    api_url: str
    html_url: str
    status: str | None = None
    conclusion: str | None = None
    display_title: str = ""

    @classmethod
    def from_api(cls, data: Mapping[str, Any]) -> WorkflowRun:
        return cls(int(data["id"]), data.get("url", ""), data.get("html_url", ""), data.get("status"),
                   data.get("conclusion"), data.get("display_title") or data.get("name") or "")


class GitHubClient:
    """The three calls the orchestrator needs, with GitHub's retry rules. Build once per process."""

    def __init__(
        self,
        *,
        token: str,
        repository: str,
        api_url: str = "https://api.github.com",
        timeout_s: float = 30.0,
        max_attempts: int = 4,
        backoff_s: float = 2.0,
        max_wait_s: float = 120.0,
        find_attempts: int = 6,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
        session: requests.Session | None = None,
    ) -> None:
        if repository.count("/") != 1 or not all(repository.split("/")):
            raise ValueError(f"repository must be 'owner/name', got {repository!r}")
        if not token:
            raise ValueError("a GitHub token is required")
        self._repo = repository
        self._api = api_url.rstrip("/")
        self._timeout = timeout_s
        self._max_attempts = max(1, max_attempts)
        self._backoff = backoff_s
        self._max_wait = max_wait_s
        self._find_attempts = find_attempts
        self._sleep = sleep
        self._clock = clock
        self._session = session or requests.Session()
        self._session.headers.update({
            "Authorization": f"Bearer {token}",
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": API_VERSION,
            "User-Agent": "azure-active-learning",
        })

    def __repr__(self) -> str:  # no token
        return f"GitHubClient(repository={self._repo!r}, api_url={self._api!r})"

    # -- the calls -------------------------------------------------------------------------------

    def dispatch_workflow(
        self, workflow: str, *, ref: str, inputs: Mapping[str, str], correlation_id: str
    ) -> WorkflowRun:
        """Start ``workflow`` and return its run.

        Asks for ``return_run_details`` (200 with the run id); a server that answers 204 (older
        GitHub Enterprise Server) is handled by finding the run whose run-name carries
        ``correlation_id``. A dropped connection is not retried blindly: dispatch is not idempotent,
        so after a dropped connection or a 5xx we first look for a run with our correlation id, and
        only dispatch again if there is none.
        """
        if correlation_id not in inputs.values():
            raise ValueError("the correlation id must be one of the workflow inputs (its run-name shows it)")
        body = {"ref": ref, "inputs": dict(inputs), "return_run_details": True}
        since = datetime.fromtimestamp(self._clock(), UTC) - timedelta(minutes=5)
        path = f"/repos/{self._repo}/actions/workflows/{workflow}/dispatches"
        for attempt in range(self._max_attempts):
            try:
                resp = self._request("POST", path, json=body, idempotent=False)
            except GitHubError as exc:
                unknown = exc.status is None or exc.status in _RETRY_STATUS  # did the dispatch happen?
                if not unknown or attempt == self._max_attempts - 1:
                    raise
                found = self._find_run(workflow, correlation_id, since, attempts=1)
                if found is not None:
                    return found
                log.warning("workflow dispatch: %s; dispatching again", exc)
                self._sleep(self._backoff * 2**attempt)
                continue
            if resp.status_code == 200 and resp.content:
                data = resp.json()
                if "workflow_run_id" in data:
                    return WorkflowRun(int(data["workflow_run_id"]), data.get("run_url", ""),
                                       data.get("html_url", ""))
            run = self._find_run(workflow, correlation_id, since, attempts=self._find_attempts)
            if run is None:
                raise GitHubError(f"dispatched {workflow} but found no run named with correlation id "
                                  f"{correlation_id} after {self._find_attempts} looks")
            return run
        raise AssertionError("unreachable")

    def find_run(self, workflow: str, correlation_id: str, *, since: datetime) -> WorkflowRun | None:
        """The newest run of ``workflow`` created since ``since`` whose run-name carries the id."""
        return self._find_run(workflow, correlation_id, since, attempts=1)

    def get_run(self, run_id: int | str) -> WorkflowRun:
        resp = self._request("GET", f"/repos/{self._repo}/actions/runs/{int(run_id)}")
        return WorkflowRun.from_api(resp.json())

    def cancel_run(self, run_id: int | str) -> None:
        """Ask GitHub to cancel a run (202). A run that already finished answers 409: nothing to do."""
        try:
            self._request("POST", f"/repos/{self._repo}/actions/runs/{int(run_id)}/cancel")
        except GitHubError as exc:
            if exc.status != 409:
                raise

    # -- internals ---------------------------------------------------------------------------------

    def _find_run(self, workflow: str, correlation_id: str, since: datetime, *, attempts: int) -> WorkflowRun | None:
        params = {"event": "workflow_dispatch", "per_page": "50",
                  "created": f">={since.strftime('%Y-%m-%dT%H:%M:%SZ')}"}
        path = f"/repos/{self._repo}/actions/workflows/{workflow}/runs"
        for attempt in range(attempts):
            runs = self._request("GET", path, params=params).json().get("workflow_runs", [])
            for data in runs:  # newest first
                title = data.get("display_title") or data.get("name") or ""
                if correlation_id in title:
                    return WorkflowRun.from_api(data)
            if attempt < attempts - 1:  # a new run takes a few seconds to be listed
                self._sleep(min(self._backoff * 2**attempt, self._max_wait))
        return None

    def _request(
        self, method: str, path: str, *, json: Any = None, params: Mapping[str, str] | None = None,
        idempotent: bool = True,
    ) -> requests.Response:
        url = f"{self._api}{path}"
        for attempt in range(self._max_attempts):
            last = attempt == self._max_attempts - 1
            try:
                resp = self._session.request(method, url, json=json, params=params, timeout=self._timeout)
            except (requests.ConnectionError, requests.Timeout) as exc:
                reason = f"{method} {path}: no answer from GitHub ({type(exc).__name__})"
                if not idempotent or last:
                    raise GitHubError(reason) from exc
                wait = self._backoff * 2**attempt
                log.warning("%s; retrying in %.1f s", reason, wait)
                self._sleep(wait)
                continue
            if resp.status_code < 400:
                return resp
            wait = self._retry_wait(resp, attempt)
            if not idempotent and resp.status_code in _RETRY_STATUS:
                wait = None  # the request may have taken effect: the caller checks before repeating it
            if wait is None or last:
                raise self._error(method, path, resp, wait)
            if wait > self._max_wait:
                raise GitHubRateLimitedError(
                    f"{method} {path}: GitHub asks to wait {wait:.0f} s ({_message(resp)})",
                    status=resp.status_code, retry_after_s=wait)
            log.warning("%s %s: GitHub answered %d; retrying in %.1f s", method, path, resp.status_code, wait)
            self._sleep(wait)
        raise AssertionError("unreachable")

    def _retry_wait(self, resp: requests.Response, attempt: int) -> float | None:
        """Seconds to wait before retrying, or None when retrying cannot help."""
        status = resp.status_code
        retry_after = retry_after_seconds(resp.headers.get("Retry-After"), self._clock())
        if status in _RETRY_STATUS:
            return retry_after if retry_after is not None else self._backoff * 2**attempt
        if status not in (403, 429):
            return None
        if retry_after is not None:
            return retry_after
        if resp.headers.get("x-ratelimit-remaining") == "0" and resp.headers.get("x-ratelimit-reset"):
            try:
                return max(0.0, float(resp.headers["x-ratelimit-reset"]) - self._clock()) + 1.0
            except ValueError:
                pass
        if status == 429 or "rate limit" in _message(resp).lower():
            return max(_SECONDARY_MIN_WAIT_S, _SECONDARY_MIN_WAIT_S * 2**attempt)
        return None  # a plain 403: the token lacks a permission

    def _error(self, method: str, path: str, resp: requests.Response, wait: float | None) -> GitHubError:
        message = _message(resp)
        where = f"{method} {path}"
        if resp.status_code == 422:
            return GitHubValidationError(f"GitHub refused {where}: {message}", _problems(resp))
        if wait is not None and resp.status_code in (403, 429):
            return GitHubRateLimitedError(f"{where}: still rate limited: {message}", status=resp.status_code,
                                          retry_after_s=wait)
        if resp.status_code == 404:
            return GitHubNotFoundError(f"{where}: not found ({message}); check the repository, workflow and "
                                       "that the token can see them", status=404)
        return GitHubError(f"{where}: GitHub answered {resp.status_code}: {message}", status=resp.status_code)


class GitHubNotFoundError(GitHubError, NotFoundError):
    """404: the repository, workflow or run does not exist (or the token cannot see it)."""


def _message(resp: requests.Response) -> str:
    try:
        data = resp.json()
    except ValueError:
        return resp.text[:200] or resp.reason or ""
    if isinstance(data, dict):
        return str(data.get("message", ""))[:500]
    return str(data)[:200]


def _problems(resp: requests.Response) -> list[Problem]:
    try:
        errors = resp.json().get("errors") or []
    except (ValueError, AttributeError):
        return []
    out = []
    for err in errors:
        if isinstance(err, dict):
            out.append(Problem(None, str(err.get("field") or err.get("resource") or "request"),
                               str(err.get("message") or err.get("code") or err)))
        else:
            out.append(Problem(None, "request", str(err)))
    return out


