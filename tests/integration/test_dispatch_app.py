"""The github_dispatch app as the host sees it: indexed bindings, and the queue and admin HTTP
functions called with real azure.functions objects and the real DurableOrchestrationClient, which
talks to a stand-in for the Durable extension's HTTP API on loopback (pytest-httpserver)."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import textwrap
from typing import Any

import azure.durable_functions as df
import azure.functions as func
import pytest
from azure.durable_functions.models.utils import http_utils
from werkzeug import Request, Response

from shared.core.orchestration import RETRAIN_REQUESTED_EVENT

ACTIVITIES = ["retrain_cancel_run", "retrain_deploy_status", "retrain_find_candidate", "retrain_prepare",
              "retrain_record", "retrain_run_status", "retrain_start_deploy", "retrain_start_training"]


def test_the_app_indexes_the_orchestrator_activities_client_and_triggers():
    code = textwrap.dedent(
        """
        import json, os
        os.environ["AL_STAGES"] = "github_dispatch"
        import function_app
        out = {}
        for f in function_app.app.get_functions():
            out[f.get_function_name()] = [b.get_dict_repr() for b in f.get_bindings()]
        print(json.dumps(out, default=str))
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    functions = json.loads(done.stdout.strip().splitlines()[-1])
    assert sorted(functions) == sorted(["retrain_queue", "retrain_start", "retrain_status", "retrain_terminate",
                                        "retrain_orchestrator", *ACTIVITIES])
    queue = {b["type"]: b for b in functions["retrain_queue"]}
    assert queue["queueTrigger"]["queueName"] == "%AL_RETRAIN_QUEUE%"
    assert queue["queueTrigger"]["connection"] == "AL_STORAGE"
    assert "durableClient" in queue
    assert [b["type"] for b in functions["retrain_orchestrator"]] == ["orchestrationTrigger"]
    for name in ACTIVITIES:
        assert [b["type"] for b in functions[name]] == ["activityTrigger"]
    routes = {n: next(b for b in functions[n] if b["type"] == "httpTrigger")
              for n in ("retrain_start", "retrain_status", "retrain_terminate")}
    assert routes["retrain_start"]["route"] == "retrain" and routes["retrain_start"]["methods"] == ["POST"]
    assert routes["retrain_status"]["route"] == "retrain/{instance}"
    assert routes["retrain_terminate"]["route"] == "retrain/{instance}/terminate"
    assert {r["authLevel"] for r in routes.values()} == {"ADMIN"}


class FakeExtension:
    """The Durable extension's instance API, as the Python client calls it."""

    def __init__(self, httpserver) -> None:
        self.instances: dict[str, dict[str, Any]] = {}
        self.started: list[tuple[str, str, Any]] = []
        self.events: list[tuple[str, str, Any]] = []
        self.terminated: list[tuple[str, str]] = []
        self.gone_on_raise = False
        self.server = httpserver
        httpserver.expect_request(re.compile(r"^/rt/.*")).respond_with_handler(self.handle)

    @property
    def binding(self) -> str:
        base = self.server.url_for("/rt/")
        return json.dumps({"taskHubName": "hub", "creationUrls": {}, "managementUrls": {}, "rpcBaseUrl": base})

    def handle(self, request: Request) -> Response:
        parts = request.path.split("/")[2:]  # after /rt/
        body = json.loads(request.data) if request.data else None
        if isinstance(body, str):  # the client sends the input serialised once more
            body = json.loads(body)
        if parts[0] == "orchestrators" and request.method == "POST":
            name, iid = parts[1], parts[2]
            self.started.append((name, iid, body))
            self.instances[iid] = {"name": name, "instanceId": iid, "runtimeStatus": "Running",
                                   "createdTime": "2026-03-01T12:00:00Z", "lastUpdatedTime": "2026-03-01T12:00:00Z",
                                   "input": body, "output": None, "customStatus": {"step": "retrain_prepare"}}
            return Response(json.dumps({"id": iid}), status=202, content_type="application/json")
        iid = parts[1]
        if len(parts) == 2 and request.method == "GET":
            if iid not in self.instances:
                return Response("", status=404)
            return Response(json.dumps(self.instances[iid]), status=200, content_type="application/json")
        if parts[2] == "raiseEvent":
            if self.gone_on_raise:
                return Response("", status=410)
            self.events.append((iid, parts[3], body))
            return Response("", status=202)
        if parts[2] == "terminate":
            self.terminated.append((iid, request.args.get("reason", "")))
            self.instances[iid]["runtimeStatus"] = "Terminated"
            return Response("", status=202)
        return Response("", status=400)


@pytest.fixture(scope="module")
def user_functions():
    """The blueprint's functions as the worker calls them (indexed once, in this process)."""
    from functions.github_dispatch.blueprint import bp

    app = df.DFApp(http_auth_level=func.AuthLevel.FUNCTION)
    app.register_functions(bp)
    return {f.get_function_name(): f.get_user_function() for f in app.get_functions()}


@pytest.fixture
def ext(httpserver, monkeypatch):
    monkeypatch.setenv("AL_MODEL_NAME", "m")
    from shared.settings import get_settings

    get_settings.cache_clear()
    yield FakeExtension(httpserver)
    get_settings.cache_clear()


def call(fn, **kwargs):
    async def run():
        try:
            return await fn(**kwargs)
        finally:  # the client's shared aiohttp session belongs to this event loop
            if http_utils._client_session is not None:
                await http_utils._client_session.close()
            http_utils._client_session = None

    return asyncio.run(run())


def http(method: str, url: str, body: bytes = b"", **route) -> func.HttpRequest:
    return func.HttpRequest(method=method, url=url, body=body, route_params=route, headers={})


def queue_msg(body: bytes) -> func.QueueMessage:
    return func.QueueMessage(id="msg-1", body=body)


def test_queue_message_starts_the_models_instance(user_functions, ext):
    call(user_functions["retrain_queue"], msg=queue_msg(b'{"reason": "120 labels pending", "pending": 120}'),
         client=ext.binding)
    ((name, iid, payload),) = ext.started
    assert (name, iid) == ("retrain_orchestrator", "retrain-m")
    assert payload["plan"]["model_name"] == "m" and payload["request"]["pending"] == 120
    assert payload["plan"]["training_timeout_s"] == 360 * 60


def test_a_request_while_running_is_raised_to_the_instance_not_started_twice(user_functions, ext):
    call(user_functions["retrain_queue"], msg=queue_msg(b""), client=ext.binding)
    call(user_functions["retrain_queue"], msg=queue_msg(b'{"reason": "more"}'), client=ext.binding)
    assert len(ext.started) == 1
    assert ext.events == [("retrain-m", RETRAIN_REQUESTED_EVENT, {"model_name": None, "reason": "more",
                                                                 "pending": None})]


def test_a_finished_instance_is_started_again(user_functions, ext):
    call(user_functions["retrain_queue"], msg=queue_msg(b""), client=ext.binding)
    ext.instances["retrain-m"]["runtimeStatus"] = "Completed"
    call(user_functions["retrain_queue"], msg=queue_msg(b""), client=ext.binding)
    assert len(ext.started) == 2 and not ext.events


def test_an_instance_gone_between_look_and_event_fails_the_message_so_it_is_retried(user_functions, ext):
    call(user_functions["retrain_queue"], msg=queue_msg(b""), client=ext.binding)
    ext.gone_on_raise = True
    with pytest.raises(Exception, match="gone"):
        call(user_functions["retrain_queue"], msg=queue_msg(b""), client=ext.binding)


@pytest.mark.parametrize("body, field", [(b"[1]", "body"), (b"{not json", "body"),
                                         (b'{"pending": -1}', "pending"), (b'{"model_name": "other"}', "model_name")])
def test_a_bad_queue_message_is_refused_naming_the_field(user_functions, ext, body, field):
    from shared.errors import InvalidInputError

    with pytest.raises(InvalidInputError) as info:
        call(user_functions["retrain_queue"], msg=queue_msg(body), client=ext.binding)
    assert info.value.problems[0].field == field and not ext.started


def test_post_retrain_starts_and_answers_202(user_functions, ext):
    resp = call(user_functions["retrain_start"], req=http("POST", "/api/retrain", b'{"reason": "by hand"}'),
                client=ext.binding)
    assert resp.status_code == 202
    assert json.loads(resp.get_body()) == {"instance_id": "retrain-m", "action": "started"}
    resp = call(user_functions["retrain_start"], req=http("POST", "/api/retrain"), client=ext.binding)
    assert json.loads(resp.get_body())["action"] == "coalesced"


def test_post_retrain_with_a_bad_body_is_a_400_naming_the_field(user_functions, ext):
    resp = call(user_functions["retrain_start"], req=http("POST", "/api/retrain", b'{"reason": 5}'),
                client=ext.binding)
    assert resp.status_code == 400
    assert json.loads(resp.get_body())["problems"] == [{"field": "reason",
                                                        "reason": "must be a string of at most 500 characters"}]
    assert not ext.started


def test_get_status_and_terminate(user_functions, ext):
    resp = call(user_functions["retrain_status"], req=http("GET", "/api/retrain/retrain-m", instance="retrain-m"),
                client=ext.binding)
    assert resp.status_code == 404
    call(user_functions["retrain_start"], req=http("POST", "/api/retrain"), client=ext.binding)
    resp = call(user_functions["retrain_status"], req=http("GET", "/api/retrain/retrain-m", instance="retrain-m"),
                client=ext.binding)
    status = json.loads(resp.get_body())
    assert resp.status_code == 200 and status["runtime_status"] == "Running"
    assert status["custom_status"] == {"step": "retrain_prepare"}
    resp = call(user_functions["retrain_terminate"],
                req=http("POST", "/api/retrain/retrain-m/terminate", b'{"reason": "wrong data"}',
                         instance="retrain-m"), client=ext.binding)
    assert resp.status_code == 202 and ext.terminated == [("retrain-m", "wrong data")]
    resp = call(user_functions["retrain_terminate"],
                req=http("POST", "/api/retrain/retrain-m/terminate", instance="retrain-m"), client=ext.binding)
    assert resp.status_code == 409  # already terminated


def test_a_bad_instance_id_is_a_400(user_functions, ext):
    resp = call(user_functions["retrain_status"], req=http("GET", "/api/retrain/x", instance="a/b c"),
                client=ext.binding)
    assert resp.status_code == 400 and json.loads(resp.get_body())["problems"][0]["field"] == "instance"


def test_the_label_stages_message_is_accepted(user_functions, ext):
    from shared.ports import RetrainRequest

    body = RetrainRequest("m", 240, 120, "exports/e1.csv", "ab" * 32, "2026-03-01T12:00:00+00:00").to_json()
    call(user_functions["retrain_queue"], msg=queue_msg(body.encode()), client=ext.binding)
    ((_, iid, payload),) = ext.started
    assert iid == "retrain-m" and payload["request"]["pending"] == 120
