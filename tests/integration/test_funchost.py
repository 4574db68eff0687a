"""The stand-in Functions host (tests/support/funchost.py) in its own process, against Azurite.

Most tests run a throwaway app (tests/support/sample_app.py) so that the host is tested apart from
the product; the last one starts the real ``function_app:app``.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueClient

from tests.support.funchost_client import Host, start_host

SAMPLE = "tests.support.sample_app:app"
MARKERS = "funchost-markers"
QUEUE = "funchost-work"


def wait_for(check: Callable[[], Any], what: str, timeout: float = 20, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def sample_env(azurite: Any) -> dict[str, str]:
    cs = azurite.connection_string
    return {"AzureWebJobsStorage": cs, "SAMPLE_STORAGE": cs, "SAMPLE_MARKERS": MARKERS, "SAMPLE_QUEUE": QUEUE,
            "SAMPLE_SCHEDULE": "0 0 * * * *"}


@pytest.fixture(scope="module")
def blobs(azurite) -> BlobServiceClient:
    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    for name in (MARKERS, "uploads"):
        if not service.get_container_client(name).exists():
            service.create_container(name)
    return service


@pytest.fixture(scope="module")
def host(azurite, blobs):
    with start_host(sample_env(azurite), app=SAMPLE, task_hub="samplehub",
                    args=["--queue-poll-interval", "0.2"]) as h:
        yield h


def markers(blobs: BlobServiceClient, prefix: str) -> list[dict[str, Any]]:
    container = blobs.get_container_client(MARKERS)
    return [json.loads(container.download_blob(b.name).readall())
            for b in container.list_blobs(name_starts_with=f"{prefix}/")]


# -- host, HTTP, admin invocation --------------------------------------------------------------------------


def test_the_host_reports_its_status_and_indexed_functions(host):
    resp = host.get("/admin/host/status")
    assert resp.status_code == 200 and resp.json()["state"] == "Running" and resp.json()["errors"] == {}
    assert {"hello", "tick", "work", "uploaded", "sample_orchestrator", "mark_step"} <= set(host.ready["functions"])
    assert host.ready["triggers"]["uploaded"] == "blobTrigger" and host.ready["pid"] == host.pid


def test_an_http_route_gets_a_real_request_with_its_route_parameter(host):
    resp = host.get("/api/hello/w%C3%B6rld?x=1&y=two", headers={"x-sample": "yes"})
    assert resp.status_code == 200 and resp.headers["x-answer"] == "42"
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert body["name"] == "wörld" and body["params"] == {"x": "1", "y": "two"} and body["header"] == "yes"
    assert body["url"] == f"{host.url}/api/hello/w%C3%B6rld?x=1&y=two" and body["method"] == "GET"
    resp = host.post("/api/hello/b", data=b"payload")
    assert resp.status_code == 201 and resp.json()["body"] == "payload"
    assert host.request("PUT", "/api/hello/b").status_code == 404  # not one of the binding's methods
    assert host.get("/api/nowhere").status_code == 404


def test_the_admin_api_runs_a_timer_with_a_real_timer_request(host, blobs):
    before = len(markers(blobs, "timer"))
    resp = host.invoke("tick")
    assert resp.status_code == 200
    new = markers(blobs, "timer")
    assert len(new) == before + 1
    assert {m["type"] for m in new} == {"azure.functions.timer.TimerRequest"} and not new[-1]["past_due"]


def test_the_admin_api_runs_a_queue_function_and_reports_its_failure(host, blobs):
    body = f"hello-{uuid.uuid4().hex[:8]}"
    assert host.invoke("work", body).status_code == 200
    (m,) = markers(blobs, f"queue/{body}")
    assert m["dequeue_count"] == 1 and m["type"] == "QueueMessage"
    resp = host.invoke("work", "fail-admin")
    assert resp.status_code == 500 and "fails on purpose" in resp.text
    assert host.invoke("hello").status_code == 400  # HTTP functions are called over HTTP
    assert host.invoke("nope").status_code == 404


def test_queue_messages_are_polled_deleted_on_success_and_poisoned_after_five_failures(host, azurite, blobs):
    queue = QueueClient.from_connection_string(azurite.connection_string, QUEUE)
    with contextlib.suppress(ResourceExistsError):
        queue.create_queue()
    ok, bad = f"ok-{uuid.uuid4().hex[:8]}", f"fail-{uuid.uuid4().hex[:8]}"
    for text in (ok, bad):
        queue.send_message(base64.b64encode(text.encode()).decode())  # the queue extension's default encoding
    poison = QueueClient.from_connection_string(azurite.connection_string, f"{QUEUE}-poison")

    def poisoned() -> list[str]:
        try:
            return [base64.b64decode(m.content).decode() for m in poison.peek_messages(max_messages=32)]
        except ResourceNotFoundError:
            return []

    wait_for(lambda: bad in poisoned(), "the failing message in the poison queue")
    assert [m["dequeue_count"] for m in markers(blobs, f"queue/{ok}")] == [1]
    assert sorted(m["dequeue_count"] for m in markers(blobs, f"queue/{bad}")) == [1, 2, 3, 4, 5]
    wait_for(lambda: queue.get_queue_properties().approximate_message_count == 0, "an empty work queue")


# -- blob trigger through the Event Grid webhook -----------------------------------------------------------


def test_the_event_grid_subscription_handshake(host):
    validation = [{"id": "1", "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent", "subject": "",
                   "eventTime": "2026-03-01T00:00:00Z", "dataVersion": "1", "metadataVersion": "1",
                   "data": {"validationCode": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6",
                            "validationUrl": "https://example.invalid/validate"}}]
    resp = host.event_grid(validation, "SubscriptionValidation")
    assert resp.status_code == 200 and resp.json() == {"validationResponse": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"}
    assert host.event_grid(validation, "SubscriptionValidation", function="hello").status_code == 404


def test_a_blob_created_event_runs_the_function_once_per_blob_version(host, azurite, blobs):
    name = f"in/{uuid.uuid4().hex[:8]}.bin"
    data = bytes(range(256)) * 4
    uploads = blobs.get_container_client("uploads")
    uploads.upload_blob(name, data)
    url = f"{azurite.blob_url}/uploads/{name}"
    before = len(markers(blobs, "blob"))

    resp = host.blob_created("uploads", name, url)
    assert resp.status_code == 200 and resp.json()["events"][0]["status"] == "succeeded"
    seen = [m for m in markers(blobs, "blob") if m["name"] == f"uploads/{name}"]
    assert len(seen) == 1 and seen[0]["sha256"] == hashlib.sha256(data).hexdigest() and seen[0]["length"] == 1024
    # redelivery of the same blob version is skipped (blob receipt); a new version runs again
    assert host.blob_created("uploads", name, url).json()["events"][0]["status"] == "skipped"
    uploads.upload_blob(name, b"v2", overwrite=True)
    assert host.blob_created("uploads", name, url).json()["events"][0]["status"] == "succeeded"
    # a blob outside the binding's path, a missing blob: the function does not run
    uploads.upload_blob("other/x.bin", b"x", overwrite=True)
    assert host.blob_created("uploads", "other/x.bin").json()["events"][0]["status"] == "ignored"
    assert host.blob_created("uploads", "in/missing.bin").json()["events"][0]["status"] == "skipped"
    assert len(markers(blobs, "blob")) == before + 2
    # a failing function is a 500, so that Event Grid delivers again
    uploads.upload_blob("in/bad.bin", b"fail", overwrite=True)
    resp = host.blob_created("uploads", "in/bad.bin")
    assert resp.status_code == 500 and "fails on purpose" in resp.json()["error"]


# -- Durable ----------------------------------------------------------------------------------------------


def start(host: Host, **orch_input: Any) -> str:
    iid = f"i-{uuid.uuid4().hex[:10]}"
    resp = host.post(f"/api/orchestrations/{iid}", json=orch_input)
    assert resp.status_code == 202 and resp.json() == {"id": iid}, resp.text
    return iid


def status(host: Host, iid: str) -> dict[str, Any]:
    return host.get(f"/api/orchestrations/{iid}").json()


def wait_status(host: Host, iid: str, *statuses: str, timeout: float = 20) -> dict[str, Any]:
    return wait_for(lambda: (s := status(host, iid)).get("runtime_status") in statuses and s,
                    f"{iid} to be {statuses}", timeout)


def wait_phase(host: Host, iid: str, phase: str) -> dict[str, Any]:
    return wait_for(lambda: ((s := status(host, iid)).get("custom_status") or {}).get("phase") == phase and s,
                    f"{iid} in phase {phase}")


def test_an_orchestration_runs_its_timer_and_retries_to_completion(host, blobs):
    iid = start(host, sleep_s=1, fail_times=1)
    done = wait_status(host, iid, "Completed", "Failed")
    assert done["runtime_status"] == "Completed", done
    assert done["output"] == {"first": {"step": "a0"}, "second": {"step": "b0", "attempt": 2}, "event": None,
                              "generation": 0}
    assert done["custom_status"] == {"phase": "done"} and done["input"] == {"sleep_s": 1, "fail_times": 1}
    attempts = sorted(m["at"] for m in markers(blobs, f"activity/{iid}/b0"))
    assert len(attempts) == 2 and attempts[1] - attempts[0] >= 1.0  # the retry's first interval (1 s)
    assert len(markers(blobs, f"activity/{iid}/a0")) == 1


def test_an_activity_failing_every_attempt_fails_the_orchestration(host):
    iid = start(host, fail_times=5, attempts=2)
    done = wait_status(host, iid, "Completed", "Failed")
    assert done["runtime_status"] == "Failed"
    assert "Orchestrator function 'sample_orchestrator' failed" in done["output"]
    assert "Activity function 'flaky_step' failed: RuntimeError: attempt 2 fails on purpose" in done["output"]


def test_an_orchestrator_that_raises_fails(host):
    done = wait_status(host, start(host, explode=True), "Completed", "Failed")
    assert done["runtime_status"] == "Failed" and "explodes on purpose" in done["output"]


def test_a_raised_event_is_delivered_and_a_finished_instance_is_gone(host):
    iid = start(host, wait_event=True)
    assert wait_phase(host, iid, "waiting")["runtime_status"] == "Running"
    assert host.post(f"/api/orchestrations/{iid}/events/go", json={"answer": 42}).status_code == 202
    done = wait_status(host, iid, "Completed", "Failed")
    assert done["output"]["event"] == {"answer": 42}
    resp = host.post(f"/api/orchestrations/{iid}/events/go", json={})
    assert resp.status_code == 409 and "is gone" in resp.json()["error"]  # the extension's 410
    resp = host.post("/api/orchestrations/nobody/events/go", json={})
    assert resp.status_code == 409 and "No instance with ID nobody found" in resp.json()["error"]


def test_terminate_then_purge(host):
    iid = start(host, sleep_s=60)
    wait_phase(host, iid, "sleeping")
    assert host.post(f"/api/orchestrations/{iid}/terminate?reason=enough").status_code == 202
    done = wait_status(host, iid, "Terminated")
    assert done["output"] == "enough" and done["custom_status"] == {"phase": "sleeping"}
    assert host.post(f"/api/orchestrations/{iid}/terminate").status_code == 202  # 410: the client lets it pass
    assert host.post("/api/orchestrations/nobody/terminate").status_code == 404
    assert host.delete(f"/api/orchestrations/{iid}").json() == {"deleted": 1}
    assert host.get(f"/api/orchestrations/{iid}").status_code == 404


def test_continue_as_new_runs_new_executions_of_the_same_instance(host, blobs):
    iid = start(host, generations=2)
    done = wait_status(host, iid, "Completed", "Failed")
    assert done["runtime_status"] == "Completed" and done["output"]["generation"] == 2
    assert done["input"]["generation"] == 2
    for step in ("a0", "b0", "a1", "b1", "a2", "b2"):
        assert len(markers(blobs, f"activity/{iid}/{step}")) == 1, step


def test_the_extension_api_answers_like_the_real_one(host):
    base = "/runtime/webhooks/durabletask"
    assert host.get(f"{base}/instances/nobody").status_code == 404
    resp = host.post(f"{base}/orchestrators/no_such_orchestrator", json=None)
    assert resp.status_code == 400 and "doesn't exist" in resp.json()["ExceptionMessage"]
    resp = host.post(f"{base}/orchestrators/sample_orchestrator/direct-1", json=json.dumps({"explode": True}))
    assert resp.status_code == 202 and resp.json()["id"] == "direct-1"
    assert resp.json()["statusQueryGetUri"].startswith(f"{host.url}{base}/instances/direct-1?")
    done = wait_for(lambda: (r := host.get(f"{base}/instances/direct-1")).json()["runtimeStatus"] == "Failed" and r,
                    "direct-1 to fail")
    assert done.status_code == 200 and done.json()["input"] == {"explode": True}
    assert done.json()["createdTime"].endswith("Z")
    assert host.get(f"{base}/instances/direct-1?returnInternalServerErrorOnFailure=true").status_code == 500
    listed = host.get(f"{base}/instances/?runtimeStatus=Failed&instanceIdPrefix=direct-").json()
    assert [s["instanceId"] for s in listed] == ["direct-1"]
    raise_ = host.post(f"{base}/instances/direct-1/raiseEvent/x", data=b"{}")
    assert raise_.status_code == 410


# -- a killed host loses nothing ------------------------------------------------------------------------------


def test_a_killed_host_resumes_every_orchestration_in_a_new_process(azurite, blobs):
    env = sample_env(azurite)
    first = start_host(env, app=SAMPLE, task_hub="killhub", args=["--no-queue-polling"])
    try:
        sleeping = start(first, sleep_s=5)
        slow = start(first, slow_s=60)
        wait_phase(first, sleeping, "sleeping")
        wait_phase(first, slow, "slow")
        wait_for(lambda: markers(blobs, f"activity/{slow}/s0"), "the slow activity to start")
        assert status(first, sleeping)["runtime_status"] == "Running"
        assert not markers(blobs, f"activity/{sleeping}/b0"), "the timer fired before the kill: a slow machine?"
    finally:
        first.kill()
    with start_host(env, app=SAMPLE, task_hub="killhub", args=["--no-queue-polling"]) as second:
        for iid in (sleeping, slow):
            assert wait_status(second, iid, "Completed", "Failed", timeout=30)["runtime_status"] == "Completed"
        # the timer's orchestration: every activity's side effect exactly once
        assert [len(markers(blobs, f"activity/{sleeping}/{s}")) for s in ("a0", "b0")] == [1, 1]
        # the activity that was running when the host died runs again (at-least-once), the rest once
        assert [len(markers(blobs, f"activity/{slow}/{s}")) for s in ("a0", "s0", "b0")] == [1, 2, 1]
        assert status(second, slow)["output"]["second"] == {"step": "b0", "attempt": 1}
        began = time.monotonic()
        assert second.stop() == 0 and time.monotonic() - began < 5  # SIGTERM: prompt, clean exit


def test_keys_are_required_when_given(azurite, blobs):
    with start_host(sample_env(azurite), app=SAMPLE, task_hub="keyhub",
                    args=["--function-key", "fk", "--master-key", "mk", "--no-queue-polling"]) as h:
        assert h.get("/api/secret").status_code == 401
        assert h.get("/api/secret", headers={"x-functions-key": "fk"}).text == "ok"
        assert h.get("/api/secret?code=mk").status_code == 200
        assert h.get("/api/hello/anyone").status_code == 200  # anonymous
        assert h.get("/admin/host/status").status_code == 401
        assert h.get("/admin/host/status", headers={"x-functions-key": "fk"}).status_code == 401
        assert h.get("/admin/host/status", headers={"x-functions-key": "mk"}).status_code == 200


# -- the product's app ------------------------------------------------------------------------------------------


def test_the_real_function_app_answers_a_bad_prediction_batch_with_its_problems(tmp_path):
    env = {"AL_STAGES": "scoring_collector", "AL_BACKEND": "embedded", "AL_DATA_DIR": str(tmp_path)}
    with start_host(env) as h:
        assert h.ready["errors"] == {} and "post_predictions" in h.ready["functions"]
        resp = h.post("/api/predictions", json=[{"item_id": "x"}])
        assert resp.status_code == 400, resp.text
        problems = resp.json()["problems"]
        assert problems and {"field", "reason"} <= set(problems[0])
