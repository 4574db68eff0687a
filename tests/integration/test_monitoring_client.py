"""The monitoring client against a real local HTTP server (pytest-httpserver) and a dead port."""

from __future__ import annotations

import json
import socket
import threading
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from shared.monitoring import MonitoringClient, _retry_after


def rec(i: int) -> dict[str, object]:
    return {"item_id": f"i{i}", "n": i}


class Collector:
    """Answers scripted statuses first, then 202; records every accepted batch."""

    def __init__(self, script: list[Response] | None = None) -> None:
        self.script = list(script or [])
        self.batches: list[list[dict]] = []
        self.attempts: list[float] = []
        self.keys: list[str | None] = []
        self.lock = threading.Lock()

    def __call__(self, request: Request) -> Response:
        with self.lock:
            self.attempts.append(time.monotonic())
            self.keys.append(request.headers.get("x-functions-key"))
            if self.script:
                return self.script.pop(0)
            self.batches.append(json.loads(request.data))
        return Response('{"accepted":1}', status=202, content_type="application/json")

    def received(self) -> list[dict]:
        return [r for b in self.batches for r in b]


@pytest.fixture(scope="module")
def _http():
    with HTTPServer(host="127.0.0.1") as http:
        yield http


@pytest.fixture
def server(_http):
    """One local server for the module (stopping one takes half a second); handlers reset per test."""
    _http.clear()
    yield _http
    _http.clear()


def client_for(server: HTTPServer, collector: Collector, **kw) -> MonitoringClient:
    server.expect_request("/api/predictions", method="POST").respond_with_handler(collector)
    kw.setdefault("register_atexit", False)
    return MonitoringClient.for_collector(server.url_for("/api/predictions"), key="k1", timeout=2.0, **kw)


def dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/api/predictions"  # nothing listens: connection refused


def test_batches_by_size_and_sends_everything(server):
    col = Collector()
    client = client_for(server, col, max_batch=10, max_interval=30.0)
    for i in range(25):
        client.log(rec(i))
    assert client.flush(timeout=10)
    client.close()
    assert [r["n"] for r in col.received()] == list(range(25))
    assert all(len(b) <= 10 for b in col.batches)
    assert set(col.keys) == {"k1"}
    assert client.stats.sent == 25 and client.stats.dropped == 0


def test_a_partial_batch_goes_out_after_max_interval(server):
    col = Collector()
    client = client_for(server, col, max_batch=1000, max_interval=0.05)
    client.log(rec(1))
    deadline = time.monotonic() + 10
    while not col.batches and time.monotonic() < deadline:
        time.sleep(0.01)
    client.close()
    assert col.received() == [rec(1)]


def test_retries_429_with_retry_after_seconds(server):
    col = Collector([Response("slow down", status=429, headers={"Retry-After": "0.2"})])
    client = client_for(server, col, max_batch=5, backoff=5.0)  # without the header it would wait 5 s
    client.log_many([rec(i) for i in range(5)])
    assert client.flush(timeout=10)
    client.close()
    assert len(col.received()) == 5
    assert client.stats.retries == 1 and client.stats.failed_posts == 1
    assert client.stats.last_backoff == pytest.approx(0.2)  # the header, not the 5 s exponential step


def test_retries_429_without_retry_after_and_5xx_with_backoff(server):
    col = Collector([Response("busy", status=429), Response("oops", status=503), Response("gw", status=502)])
    client = client_for(server, col, max_batch=3, backoff=0.01, max_attempts=5)
    client.log_many([rec(i) for i in range(3)])
    assert client.flush(timeout=10)
    client.close()
    assert [r["n"] for r in col.received()] == [0, 1, 2]
    assert client.stats.retries == 3
    assert client.stats.last_backoff == pytest.approx(0.04)  # 0.01 * 2 ** 2: exponential, third retry


def test_http_date_retry_after_is_understood():
    later = datetime.now(UTC) + timedelta(seconds=30)
    assert 25 <= _retry_after(format_datetime(later, usegmt=True)) <= 31
    assert _retry_after("7") == 7.0
    assert _retry_after("soon") is None


def test_a_refused_batch_is_counted_not_retried(server):
    col = Collector([Response('{"error":"bad"}', status=400)])
    client = client_for(server, col, max_batch=2)
    client.log_many([rec(1), rec(2)])
    assert client.flush(timeout=10)
    client.close()
    assert client.stats.rejected == 2 and client.stats.retries == 0 and len(col.attempts) == 1


def test_timeouts_are_retried(server):
    slow = threading.Event()

    def handler(request: Request) -> Response:
        if not slow.is_set():
            slow.set()
            time.sleep(0.6)  # longer than the client's timeout
        return Response("{}", status=202)

    server.expect_request("/api/predictions").respond_with_handler(handler)
    client = MonitoringClient.for_collector(server.url_for("/api/predictions"), timeout=0.2, backoff=0.01,
                                            max_batch=1, register_atexit=False)
    client.log(rec(1))
    assert client.flush(timeout=10)
    client.close()
    assert client.stats.sent == 1 and client.stats.retries >= 1


def test_dead_collector_log_does_not_block_and_memory_is_bounded():
    client = MonitoringClient.for_collector(dead_url(), timeout=0.2, max_batch=50, max_buffer=200,
                                            max_interval=0.01, backoff=0.001, max_backoff=0.01,
                                            register_atexit=False)
    for i in range(5_000):
        client.log(rec(i))
    assert client.pending() <= 200 + 50  # the buffer plus one batch in flight
    client.close(timeout=0.5)
    assert client.stats.sent == 0
    assert client.stats.dropped >= 5_000 - 200  # evicted oldest, counted; the rest dropped at close
    assert client.stats.logged == 5_000


def test_log_returns_while_the_worker_is_stuck_in_a_post():
    entered, release = threading.Event(), threading.Event()

    def transport(body: bytes) -> None:
        entered.set()
        release.wait(30)  # a collector that never answers

    client = MonitoringClient(transport, max_batch=1, max_buffer=10, max_interval=0.01, register_atexit=False)
    client.log(rec(0))
    assert entered.wait(10)
    for i in range(1, 1000):  # would hang here if log() waited for the worker
        client.log(rec(i))
    assert client.stats.logged == 1000 and client.pending() <= 11
    release.set()
    client.close(timeout=2)


def test_oldest_are_dropped_when_full():
    sent: list[list[dict]] = []
    gate = threading.Event()

    def transport(body: bytes) -> None:
        gate.wait(10)
        sent.append(json.loads(body))

    client = MonitoringClient(transport, max_batch=2, max_buffer=4, max_interval=0.01, register_atexit=False)
    client.log_many([rec(0), rec(1)])
    time.sleep(0.1)  # the worker takes [0, 1] and blocks in the transport
    client.log_many([rec(i) for i in range(2, 9)])  # buffer keeps the newest 4: 5..8
    gate.set()
    assert client.flush(timeout=10)
    client.close()
    got = [r["n"] for b in sent for r in b]
    assert got == [0, 1, 5, 6, 7, 8]
    assert client.stats.dropped == 3


def test_close_flushes_what_is_left(server):
    col = Collector()
    client = client_for(server, col, max_batch=1000, max_interval=60.0)
    client.log_many([rec(i) for i in range(7)])
    client.close(timeout=5)
    assert [r["n"] for r in col.received()] == list(range(7))
    client.log(rec(99))  # after close: dropped, counted, no exception
    assert client.stats.dropped == 1


def test_flush_on_interpreter_exit(server, tmp_path):
    """A real process that logs and exits without calling close(): atexit flushes."""
    import subprocess
    import sys

    col = Collector()
    server.expect_request("/api/predictions", method="POST").respond_with_handler(col)
    code = (
        "from shared.monitoring import MonitoringClient\n"
        f"c = MonitoringClient.for_collector({server.url_for('/api/predictions')!r}, max_interval=60)\n"
        "for i in range(3): c.log({'n': i})\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60, cwd=str(__import__("pathlib").Path(
        __file__).resolve().parents[2]))
    assert [r["n"] for r in col.received()] == [0, 1, 2]


def test_log_never_raises_on_unserialisable_records(server):
    col = Collector()
    client = client_for(server, col, max_batch=1)
    client.log({"bad": object()})  # default=str makes it a string; still no exception
    client.log(rec(1))
    assert client.flush(timeout=10)
    client.close()
    assert len(col.received()) == 2
