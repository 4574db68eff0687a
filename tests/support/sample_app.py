"""A throwaway function app for the stand-in host's own tests (tests/integration/test_funchost.py).

One function of each trigger kind the product uses. Side effects are marker blobs in the container
``SAMPLE_MARKERS`` of ``SAMPLE_STORAGE`` (Azurite), so a test can count what ran, even across host
processes. Settings: ``SAMPLE_STORAGE`` (connection string), ``SAMPLE_MARKERS``, ``SAMPLE_QUEUE``,
``SAMPLE_SCHEDULE``.
"""

import hashlib
import json
import os
import time
import uuid
from datetime import timedelta
from typing import Any

import azure.durable_functions as df
import azure.functions as func

app = df.DFApp(http_auth_level=func.AuthLevel.ANONYMOUS)
ORCHESTRATOR = "sample_orchestrator"


def _markers() -> Any:
    from azure.storage.blob import BlobServiceClient

    service = BlobServiceClient.from_connection_string(os.environ["SAMPLE_STORAGE"])
    return service.get_container_client(os.environ.get("SAMPLE_MARKERS", "funchost-markers"))


def mark(prefix: str, data: dict[str, Any]) -> None:
    """One new marker blob under ``prefix`` (never overwritten: counting them counts the runs)."""
    _markers().upload_blob(f"{prefix}/{uuid.uuid4().hex}", json.dumps(data, default=str).encode())


def count(prefix: str) -> int:
    return sum(1 for _ in _markers().list_blobs(name_starts_with=f"{prefix}/"))


def _json(body: Any, status: int = 200) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(body, default=str), status_code=status, mimetype="application/json")


# -- HTTP, timer, queue, blob ------------------------------------------------------------------------------


@app.route(route="hello/{name}", methods=["GET", "POST"])
def hello(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(json.dumps({
        "name": req.route_params.get("name"), "method": req.method, "params": dict(req.params), "url": req.url,
        "header": req.headers.get("x-sample"), "body": req.get_body().decode(),
    }), status_code=201 if req.method == "POST" else 200, mimetype="application/json", headers={"x-answer": "42"})


@app.route(route="secret", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def secret(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse("ok")


@app.timer_trigger(arg_name="timer", schedule="%SAMPLE_SCHEDULE%", run_on_startup=False)
def tick(timer: func.TimerRequest) -> None:
    mark("timer", {"past_due": timer.past_due, "type": f"{type(timer).__module__}.{type(timer).__name__}"})


@app.queue_trigger(arg_name="msg", queue_name="%SAMPLE_QUEUE%", connection="SAMPLE_STORAGE")
def work(msg: func.QueueMessage) -> None:
    body = msg.get_body().decode()
    mark(f"queue/{body}", {"id": msg.id, "dequeue_count": msg.dequeue_count, "type": type(msg).__name__})
    if body.startswith("fail"):
        raise RuntimeError(f"message {body!r} fails on purpose")


@app.blob_trigger(arg_name="blob", path="uploads/in/{name}", connection="SAMPLE_STORAGE",
                  source=func.BlobSource.EVENT_GRID)
def uploaded(blob: func.InputStream) -> None:
    data = blob.read()
    if data.startswith(b"fail"):
        raise ValueError("this upload fails on purpose")
    mark("blob", {"name": blob.name, "length": blob.length, "sha256": hashlib.sha256(data).hexdigest(),
                  "uri": blob.uri})


# -- Durable: client routes, orchestrator, activities ------------------------------------------------------


@app.route(route="orchestrations/{instance}", methods=["POST"])
@app.durable_client_input(client_name="client")
async def start(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    iid = await client.start_new(ORCHESTRATOR, req.route_params["instance"], req.get_json())
    return _json({"id": iid}, 202)


@app.route(route="orchestrations/{instance}", methods=["GET"])
@app.durable_client_input(client_name="client")
async def status(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    st = await client.get_status(req.route_params["instance"])
    if not st:
        return _json({"error": "no such instance"}, 404)
    return _json({"runtime_status": st.runtime_status.value, "custom_status": st.custom_status,
                  "output": st.output, "input": st.input_, "created": st.created_time,
                  "last_updated": st.last_updated_time})


@app.route(route="orchestrations/{instance}/events/{event}", methods=["POST"])
@app.durable_client_input(client_name="client")
async def send_event(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    try:
        await client.raise_event(req.route_params["instance"], req.route_params["event"], req.get_json())
    except Exception as exc:  # the client's own message: gone, not found
        return _json({"error": str(exc)}, 409)
    return _json({}, 202)


@app.route(route="orchestrations/{instance}/terminate", methods=["POST"])
@app.durable_client_input(client_name="client")
async def terminate(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    try:
        await client.terminate(req.route_params["instance"], req.params.get("reason", "by a test"))
    except Exception as exc:
        return _json({"error": str(exc)}, 404)
    return _json({}, 202)


@app.route(route="orchestrations/{instance}", methods=["DELETE"])
@app.durable_client_input(client_name="client")
async def purge(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    try:
        result = await client.purge_instance_history(req.route_params["instance"])
    except Exception as exc:
        return _json({"error": str(exc)}, 409)
    return _json({"deleted": result.instances_deleted})


@app.orchestration_trigger(context_name="context")
def sample_orchestrator(context: df.DurableOrchestrationContext):  # type: ignore[no-untyped-def]
    """mark_step; a durable timer (``sleep_s``); flaky_step with retries (``fail_times``); optionally
    slow_step, an external event ``go`` (``wait_event``), continue-as-new (``generations``)."""
    data = context.get_input() or {}
    if data.get("explode"):
        raise ValueError("the orchestrator explodes on purpose")
    iid, gen = context.instance_id, data.get("generation", 0)
    first = yield context.call_activity("mark_step", {"instance": iid, "step": f"a{gen}"})
    if data.get("sleep_s"):
        context.set_custom_status({"phase": "sleeping"})
        yield context.create_timer(context.current_utc_datetime + timedelta(seconds=data["sleep_s"]))
    if data.get("slow_s"):
        context.set_custom_status({"phase": "slow"})
        yield context.call_activity("slow_step", {"instance": iid, "step": f"s{gen}", "sleep_s": data["slow_s"]})
    retry = df.RetryOptions(first_retry_interval_in_milliseconds=1000, max_number_of_attempts=data.get("attempts", 3))
    second = yield context.call_activity_with_retry("flaky_step", retry, {"instance": iid, "step": f"b{gen}",
                                                                          "fail_times": data.get("fail_times", 0)})
    event = None
    if data.get("wait_event"):
        context.set_custom_status({"phase": "waiting"})
        go = context.wait_for_external_event("go")
        timeout = context.create_timer(context.current_utc_datetime + timedelta(seconds=60))
        winner = yield context.task_any([go, timeout])
        event = go.result if winner == go else "timed out"
    if gen < data.get("generations", 0):
        context.continue_as_new({**data, "generation": gen + 1})
        return None
    context.set_custom_status({"phase": "done"})
    return {"first": first, "second": second, "event": event, "generation": gen}


@app.activity_trigger(input_name="payload")
def mark_step(payload: dict) -> dict:
    mark(f"activity/{payload['instance']}/{payload['step']}", payload)
    return {"step": payload["step"]}


@app.activity_trigger(input_name="payload")
def flaky_step(payload: dict) -> dict:
    attempt = count(f"activity/{payload['instance']}/{payload['step']}") + 1
    mark(f"activity/{payload['instance']}/{payload['step']}", {**payload, "attempt": attempt, "at": time.time()})
    if attempt <= payload["fail_times"]:
        raise RuntimeError(f"attempt {attempt} fails on purpose")
    return {"step": payload["step"], "attempt": attempt}


@app.activity_trigger(input_name="payload")
def slow_step(payload: dict) -> dict:
    """Slow only on its first run (so a host killed meanwhile leaves it half done)."""
    runs = count(f"activity/{payload['instance']}/{payload['step']}")
    mark(f"activity/{payload['instance']}/{payload['step']}", payload)
    if runs == 0:
        time.sleep(payload["sleep_s"])
    return {"step": payload["step"], "run": runs + 1}
