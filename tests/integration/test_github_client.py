"""The GitHub client against a real HTTP server on loopback (pytest-httpserver); sleeps are recorded."""

from __future__ import annotations

import json
import logging
import socket
import threading

import pytest
from werkzeug import Request, Response

from shared.adapters.github import (
    GitHubClient,
    GitHubError,
    GitHubNotFoundError,
    GitHubRateLimitedError,
    GitHubValidationError,
)

TOKEN = "ghs_secret-token-value"
DISPATCH = "/repos/o/r/actions/workflows/train.yml/dispatches"
RUNS = "/repos/o/r/actions/workflows/train.yml/runs"
NOW = 1_770_000_000.0
CID = "c0ffee"
INPUTS = {"correlation_id": CID, "model_name": "m"}


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def client(httpserver, sleeps) -> GitHubClient:
    return GitHubClient(token=TOKEN, repository="o/r", api_url=httpserver.url_for(""), sleep=sleeps.append,
                        clock=lambda: NOW, timeout_s=2, max_attempts=4, backoff_s=1, max_wait_s=120)


def run_json(run_id: int, title: str, **extra) -> dict:
    return {"id": run_id, "url": f"http://api/runs/{run_id}", "html_url": f"http://web/runs/{run_id}",
            "display_title": title, "status": "queued", "conclusion": None, **extra}


def test_dispatch_200_returns_the_run_details(httpserver, client):
    httpserver.expect_ordered_request(DISPATCH, method="POST").respond_with_json(
        {"workflow_run_id": 99, "run_url": "http://api/runs/99", "html_url": "http://web/runs/99"})
    run = client.dispatch_workflow("train.yml", ref="main", inputs=INPUTS, correlation_id=CID)
    assert run.run_id == 99 and run.html_url == "http://web/runs/99"
    (req, _), = httpserver.log
    assert json.loads(req.data) == {"ref": "main", "inputs": INPUTS, "return_run_details": True}
    assert req.headers["Authorization"] == f"Bearer {TOKEN}"
    assert req.headers["X-GitHub-Api-Version"] == "2022-11-28"


def test_dispatch_204_finds_the_run_by_correlation_id_in_its_run_name(httpserver, client, sleeps):
    httpserver.expect_ordered_request(DISPATCH, method="POST").respond_with_data("", status=204)
    httpserver.expect_ordered_request(RUNS, method="GET").respond_with_json({"workflow_runs": []})
    httpserver.expect_ordered_request(RUNS, method="GET").respond_with_json({"workflow_runs": [
        run_json(8, "train m [other]"), run_json(7, f"train m [{CID}]")]})
    run = client.dispatch_workflow("train.yml", ref="main", inputs=INPUTS, correlation_id=CID)
    assert run.run_id == 7
    assert sleeps == [1]  # one look too early, then found
    list_req = httpserver.log[1][0]
    assert list_req.args["event"] == "workflow_dispatch" and list_req.args["created"].startswith(">=")


def test_dispatch_204_and_no_run_ever_listed_is_an_error(httpserver, sleeps):
    httpserver.expect_request(DISPATCH, method="POST").respond_with_data("", status=204)
    httpserver.expect_request(RUNS).respond_with_json({"workflow_runs": [run_json(1, "train m [else]")]})
    client = GitHubClient(token=TOKEN, repository="o/r", api_url=httpserver.url_for(""), sleep=sleeps.append,
                          clock=lambda: NOW, find_attempts=3, backoff_s=1)
    with pytest.raises(GitHubError, match="found no run named with correlation id c0ffee"):
        client.dispatch_workflow("train.yml", ref="main", inputs=INPUTS, correlation_id=CID)


def test_422_is_not_retried_and_surfaces_githubs_message(httpserver, client, sleeps):
    httpserver.expect_ordered_request(DISPATCH, method="POST").respond_with_json(
        {"message": "Unexpected inputs provided: [\"bogus\"]", "errors": [{"field": "inputs", "code": "invalid"}]},
        status=422)
    with pytest.raises(GitHubValidationError, match=r"Unexpected inputs provided") as info:
        client.dispatch_workflow("train.yml", ref="main", inputs=INPUTS, correlation_id=CID)
    assert len(httpserver.log) == 1 and sleeps == []
    assert info.value.status == 422 and info.value.problems[0].field == "inputs"


@pytest.mark.parametrize("status", [403, 429])
def test_rate_limit_with_retry_after_waits_that_long(httpserver, client, sleeps, status):
    httpserver.expect_ordered_request("/repos/o/r/actions/runs/5").respond_with_json(
        {"message": "You have exceeded a secondary rate limit"}, status=status, headers={"Retry-After": "7"})
    httpserver.expect_ordered_request("/repos/o/r/actions/runs/5").respond_with_json(
        run_json(5, "t", status="completed", conclusion="success"))
    run = client.get_run(5)
    assert (run.status, run.conclusion) == ("completed", "success")
    assert sleeps == [7.0]


def test_primary_rate_limit_waits_until_x_ratelimit_reset(httpserver, client, sleeps):
    httpserver.expect_ordered_request("/repos/o/r/actions/runs/5").respond_with_json(
        {"message": "API rate limit exceeded"}, status=403,
        headers={"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(NOW) + 30)})
    httpserver.expect_ordered_request("/repos/o/r/actions/runs/5").respond_with_json(run_json(5, "t"))
    client.get_run(5)
    assert sleeps == [31.0]


@pytest.mark.parametrize("status", [403, 429])
def test_secondary_limit_without_headers_waits_at_least_a_minute(httpserver, client, sleeps, status):
    for _ in range(2):
        httpserver.expect_ordered_request("/repos/o/r/actions/runs/5").respond_with_json(
            {"message": "You have exceeded a secondary rate limit. Please wait a few minutes"}, status=status)
    httpserver.expect_ordered_request("/repos/o/r/actions/runs/5").respond_with_json(run_json(5, "t"))
    client.get_run(5)
    assert sleeps == [60.0, 120.0]  # at least a minute, then growing


def test_a_wait_longer_than_the_limit_is_handed_back_to_the_caller(httpserver, client, sleeps):
    httpserver.expect_request("/repos/o/r/actions/runs/5").respond_with_json(
        {"message": "API rate limit exceeded"}, status=429, headers={"Retry-After": "3600"})
    with pytest.raises(GitHubRateLimitedError) as info:
        client.get_run(5)
    assert info.value.retry_after_s == 3600 and sleeps == []


def test_a_plain_403_is_a_permission_error_not_retried(httpserver, client, sleeps):
    httpserver.expect_request("/repos/o/r/actions/runs/5").respond_with_json(
        {"message": "Resource not accessible by integration"}, status=403)
    with pytest.raises(GitHubError, match="Resource not accessible") as info:
        client.get_run(5)
    assert info.value.status == 403 and sleeps == [] and len(httpserver.log) == 1


def test_5xx_is_retried_with_backoff_then_gives_up(httpserver, client, sleeps):
    httpserver.expect_request("/repos/o/r/actions/runs/5").respond_with_data("bad gateway", status=502)
    with pytest.raises(GitHubError, match="502") as info:
        client.get_run(5)
    assert info.value.status == 502 and sleeps == [1, 2, 4] and len(httpserver.log) == 4


def test_5xx_then_success(httpserver, client, sleeps):
    httpserver.expect_ordered_request("/repos/o/r/actions/runs/5").respond_with_data("", status=503)
    httpserver.expect_ordered_request("/repos/o/r/actions/runs/5").respond_with_json(run_json(5, "t"))
    assert client.get_run(5).run_id == 5 and sleeps == [1]


def test_a_5xx_on_dispatch_looks_for_the_run_before_dispatching_again(httpserver, client, sleeps):
    httpserver.expect_ordered_request(DISPATCH, method="POST").respond_with_data("", status=502)
    httpserver.expect_ordered_request(RUNS).respond_with_json({"workflow_runs": [run_json(3, f"train [{CID}]")]})
    run = client.dispatch_workflow("train.yml", ref="main", inputs=INPUTS, correlation_id=CID)
    assert run.run_id == 3
    assert [r.method for r, _ in httpserver.log] == ["POST", "GET"]  # not dispatched twice


def test_404_names_what_to_check(httpserver, client):
    httpserver.expect_request("/repos/o/r/actions/runs/5").respond_with_json({"message": "Not Found"}, status=404)
    with pytest.raises(GitHubNotFoundError, match="check the repository"):
        client.get_run(5)


def test_cancel_accepts_202_and_ignores_409(httpserver, client):
    httpserver.expect_ordered_request("/repos/o/r/actions/runs/5/cancel", method="POST").respond_with_data(
        "", status=202)
    httpserver.expect_ordered_request("/repos/o/r/actions/runs/6/cancel", method="POST").respond_with_json(
        {"message": "Cannot cancel a workflow run that is completed."}, status=409)
    client.cancel_run(5)
    client.cancel_run(6)


def test_the_token_is_never_logged_or_shown(httpserver, client, caplog):
    httpserver.expect_request("/repos/o/r/actions/runs/5").respond_with_data("", status=500)
    with caplog.at_level(logging.DEBUG), pytest.raises(GitHubError) as info:
        client.get_run(5)
    assert TOKEN not in caplog.text and TOKEN not in str(info.value) and TOKEN not in repr(client)


class _DroppingServer:
    """A loopback server that accepts a connection and closes it without answering ``drops`` times,
    then answers like GitHub; stopped by the test."""

    def __init__(self, drops: int, answer: bytes) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.05)  # so that close() stops the loop promptly
        self.stopped = threading.Event()
        self.drops, self.answer, self.requests = drops, answer, []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def _serve(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(2)
            with conn:
                data = conn.recv(65536)
                self.requests.append(data.split(b"\r\n", 1)[0].decode())
                if self.drops > 0:
                    self.drops -= 1
                    continue  # close without a response
                conn.sendall(self.answer)

    def close(self) -> None:
        self.stopped.set()
        self.thread.join(timeout=5)
        self.sock.close()


def _http(status: str, body: dict) -> bytes:
    raw = json.dumps(body).encode()
    return (f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(raw)}\r\n"
            "Connection: close\r\n\r\n").encode() + raw


def test_a_dropped_connection_is_retried(sleeps):
    server = _DroppingServer(drops=1, answer=_http("200 OK", run_json(5, "t")))
    try:
        client = GitHubClient(token=TOKEN, repository="o/r", api_url=server.url, sleep=sleeps.append,
                              clock=lambda: NOW, backoff_s=1, timeout_s=2)
        assert client.get_run(5).run_id == 5
    finally:
        server.close()
    assert sleeps == [1] and len(server.requests) == 2


def test_a_dropped_dispatch_looks_for_the_run_first(sleeps):
    listing = {"workflow_runs": [run_json(11, f"train [{CID}]")]}
    server = _DroppingServer(drops=1, answer=_http("200 OK", listing))
    try:
        client = GitHubClient(token=TOKEN, repository="o/r", api_url=server.url, sleep=sleeps.append,
                              clock=lambda: NOW, backoff_s=1, timeout_s=2)
        run = client.dispatch_workflow("train.yml", ref="main", inputs=INPUTS, correlation_id=CID)
    finally:
        server.close()
    assert run.run_id == 11
    assert server.requests[0].startswith("POST ") and server.requests[1].startswith("GET ")


def test_constructor_refuses_bad_arguments():
    with pytest.raises(ValueError, match="owner/name"):
        GitHubClient(token="t", repository="nope")
    with pytest.raises(ValueError, match="token"):
        GitHubClient(token="", repository="o/r")


def test_a_timeout_is_retried_then_reported(httpserver, sleeps):
    gate = threading.Event()

    def slow(request: Request) -> Response:
        gate.wait(0.5)  # longer than the client's timeout
        return Response("{}", status=200, content_type="application/json")

    httpserver.expect_request("/repos/o/r/actions/runs/5").respond_with_handler(slow)
    client = GitHubClient(token=TOKEN, repository="o/r", api_url=httpserver.url_for(""), sleep=sleeps.append,
                          clock=lambda: NOW, timeout_s=0.1, max_attempts=2, backoff_s=1)
    try:
        with pytest.raises(GitHubError, match="no answer from GitHub"):
            client.get_run(5)
    finally:
        gate.set()
    assert sleeps == [1]
