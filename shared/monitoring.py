"""The monitoring client the scoring service logs its results through.

Why it looks like this: scoring must never wait for, or fail because of, the collector.
``log()`` only appends to an in-memory buffer and returns; a background thread batches records
(by count and by age), posts them to ``POST /api/predictions`` with retries and backoff (429 with
or without ``Retry-After``, 5xx, timeouts, connection errors, via tenacity), and keeps at most
``max_buffer`` records plus one batch in flight: when the collector is down the oldest are dropped
and counted. ``close()`` (registered with ``atexit``) flushes what is left within a deadline.
Nothing here raises into the caller; failures show in :attr:`MonitoringClient.stats` and the log.

Standard library HTTP only, so the scoring image needs no extra dependency.
"""

from __future__ import annotations

import atexit
import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, stop_any
from tenacity.stop import stop_base

from shared.core.retry_after import retry_after_seconds

log = logging.getLogger(__name__)


class _Retryable(Exception):
    """A post that may succeed later (429, 5xx, timeout, connection refused)."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class _Rejected(Exception):
    """The collector refused the batch for good (4xx other than 408/429): retrying cannot help."""


@dataclass
class ClientStats:
    logged: int = 0
    sent: int = 0
    dropped: int = 0  # oldest records evicted from a full buffer
    rejected: int = 0  # records in batches the collector refused (4xx)
    failed_posts: int = 0  # attempts that failed (each retry counts)
    retries: int = 0
    last_backoff: float = 0.0  # seconds the last retry waited (Retry-After or exponential)


Transport = Callable[[bytes], None]
"""Posts one JSON body; raises :class:`_Retryable` or :class:`_Rejected` (tests may substitute)."""


def http_transport(url: str, *, key: str | None = None, timeout: float = 10.0) -> Transport:
    """A stdlib transport for the collector at ``url`` (function key in ``x-functions-key``)."""
    headers = {"Content-Type": "application/json"}
    if key:
        headers["x-functions-key"] = key

    def post(body: bytes) -> None:
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:500].decode("utf-8", "replace")
            if exc.code in (408, 429) or exc.code >= 500:
                raise _Retryable(f"HTTP {exc.code}", _retry_after(exc.headers.get("Retry-After"))) from None
            raise _Rejected(f"HTTP {exc.code}: {detail}") from None
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
            raise _Retryable(f"{type(exc).__name__}: {exc}") from None

    return post


def _retry_after(value: str | None) -> float | None:
    return retry_after_seconds(value, time.time())


class _PastDeadline(stop_base):
    """Stop retrying once close() has started and its deadline has passed."""

    def __init__(self, client: MonitoringClient) -> None:
        self._client = client

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self._client.past_deadline()


class MonitoringClient:
    """Non-blocking, batched, bounded logging of scoring results to the collector."""

    def __init__(
        self, transport: Transport, *, max_batch: int = 500, max_interval: float = 2.0, max_buffer: int = 50_000,
        max_attempts: int = 5, backoff: float = 0.5, max_backoff: float = 30.0, close_timeout: float = 10.0,
        register_atexit: bool = True,
    ) -> None:
        if max_batch < 1 or max_buffer < max_batch:
            raise ValueError("need 1 <= max_batch <= max_buffer")
        self._transport = transport
        self._max_batch = max_batch
        self._max_interval = max_interval
        self._max_buffer = max_buffer
        self._max_attempts = max_attempts
        self._backoff = backoff
        self._max_backoff = max_backoff
        self._close_timeout = close_timeout
        self._buffer: deque[Mapping[str, Any]] = deque()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._idle = threading.Condition(self._lock)
        self._in_flight = 0
        self._deadline = float("inf")
        self.stats = ClientStats()
        self._worker = threading.Thread(target=self._run, name="monitoring-client", daemon=True)
        self._worker.start()
        if register_atexit:
            atexit.register(self.close)

    @classmethod
    def for_collector(cls, url: str, *, key: str | None = None, timeout: float = 10.0, **options: Any
                      ) -> MonitoringClient:
        return cls(http_transport(url, key=key, timeout=timeout), **options)

    # the caller's side: never blocks on I/O, never raises ------------------------------------
    def log(self, record: Mapping[str, Any]) -> None:
        """Queue one scoring result (a mapping in the collector's schema) and return at once."""
        try:
            with self._lock:
                if self._closing.is_set():
                    self.stats.dropped += 1
                    return
                self._buffer.append(record)
                self.stats.logged += 1
                if len(self._buffer) > self._max_buffer:
                    self._buffer.popleft()
                    self.stats.dropped += 1
                full = len(self._buffer) >= self._max_batch
            if full:
                self._wake.set()
        except Exception:  # pragma: no cover - logging must never break scoring
            log.debug("monitoring log() failed", exc_info=True)

    def log_many(self, records: list[Mapping[str, Any]]) -> None:
        for record in records:
            self.log(record)

    def pending(self) -> int:
        with self._lock:
            return len(self._buffer) + self._in_flight

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything logged so far was posted (or given up on); True if drained in time."""
        self._wake.set()
        end = time.monotonic() + timeout
        with self._idle:
            while self._buffer or self._in_flight:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._wake.set()
                self._idle.wait(min(left, 0.05))
        return True

    def close(self, timeout: float | None = None) -> None:
        """Flush within ``timeout`` (default ``close_timeout``), then stop the worker. Idempotent."""
        if self._closing.is_set():
            return
        timeout = self._close_timeout if timeout is None else timeout
        self._deadline = time.monotonic() + timeout
        self._closing.set()
        self._wake.set()
        self._worker.join(timeout + 1.0)
        with self._lock:
            left = len(self._buffer)
            self._buffer.clear()
        if left:
            self.stats.dropped += left
            log.warning("monitoring client closed with %d unsent records", left)
        atexit.unregister(self.close)

    # the worker's side -------------------------------------------------------------------------
    def _run(self) -> None:
        """Every ``max_interval`` (or at once when a batch fills, on flush and on close) post what is
        buffered in batches of at most ``max_batch``; stop once closed and drained (or past the deadline)."""
        while True:
            self._wake.wait(self._max_interval)
            self._wake.clear()
            while not (self._closing.is_set() and time.monotonic() >= self._deadline):
                with self._lock:
                    if not self._buffer:
                        break
                    batch = [self._buffer.popleft() for _ in range(min(self._max_batch, len(self._buffer)))]
                    self._in_flight = len(batch)
                delivered = False
                try:
                    delivered = self._send(batch)
                except Exception:  # the worker must survive anything
                    log.warning("monitoring client: unexpected error posting a batch", exc_info=True)
                finally:
                    with self._idle:
                        self._in_flight = 0
                        self._idle.notify_all()
                if not delivered:
                    break  # the collector is struggling: wait for the next tick
            if self._closing.is_set() and (not self._buffer or time.monotonic() >= self._deadline):
                return

    def _send(self, batch: list[Mapping[str, Any]]) -> bool:
        """Post one batch with retries; False when it went back to the buffer for a later try."""
        try:
            body = json.dumps(batch, separators=(",", ":"), default=str, allow_nan=True).encode()
        except (TypeError, ValueError):
            self.stats.rejected += len(batch)
            log.warning("monitoring client: %d records are not JSON-serialisable; dropped", len(batch))
            return True
        try:
            for attempt in Retrying(
                stop=stop_any(stop_after_attempt(self._max_attempts), _PastDeadline(self)),
                wait=self._wait, retry=retry_if_exception(lambda e: isinstance(e, _Retryable)),
                sleep=self._sleep, before_sleep=self._count_retry, reraise=True,
            ):
                with attempt:
                    self._post(body)
        except _Rejected as exc:
            self.stats.rejected += len(batch)
            log.warning("monitoring client: the collector refused %d records: %s", len(batch), exc)
        except _Retryable as exc:
            self._requeue(batch)
            log.warning("monitoring client: posting failed (%s); %d records kept for later", exc, len(batch))
            return False
        else:
            self.stats.sent += len(batch)
        return True

    def _post(self, body: bytes) -> None:
        try:
            self._transport(body)
        except (_Retryable, _Rejected):
            self.stats.failed_posts += 1
            raise

    def _requeue(self, batch: list[Mapping[str, Any]]) -> None:
        """Put a failed batch back at the front (it is the oldest); evict oldest beyond the bound."""
        if self._closing.is_set() and time.monotonic() >= self._deadline:
            self.stats.dropped += len(batch)
            return
        with self._lock:
            self._buffer.extendleft(reversed(batch))
            while len(self._buffer) > self._max_buffer:
                self._buffer.popleft()
                self.stats.dropped += 1

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, _Retryable) and exc.retry_after is not None:
            return min(exc.retry_after, self._max_backoff)
        return min(self._max_backoff, self._backoff * 2 ** (state.attempt_number - 1))

    def past_deadline(self) -> bool:
        return self._closing.is_set() and time.monotonic() >= self._deadline

    def _sleep(self, seconds: float) -> None:
        """Back off, but wake when close() starts and never sleep past its deadline."""
        end = time.monotonic() + seconds
        while True:
            now = time.monotonic()
            closing = self._closing.is_set()
            left = min(end, self._deadline) - now if closing else end - now
            if left <= 0:
                return
            if closing:
                time.sleep(left)
            else:
                self._closing.wait(left)

    def _count_retry(self, state: RetryCallState) -> None:
        self.stats.retries += 1
        self.stats.last_backoff = state.next_action.sleep if state.next_action else 0.0
