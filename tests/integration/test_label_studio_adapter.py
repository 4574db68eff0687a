"""The Label Studio adapter (shared/adapters/label_studio.py) against the real Label Studio 1.23.2 on
loopback: the project it sets up, the tasks it hands over (once per batch item, with the serving
model's guess and the least confident first in the queue), the catch-up's reads, the personal access
token; then the client's retries and refusals against a scripted HTTP server (pytest-httpserver)."""

from __future__ import annotations

import json
import time
import uuid
import xml.etree.ElementTree as ET
from datetime import UTC, datetime

import pytest
from werkzeug import Request, Response

from shared.adapters.label_studio import LabelStudioClient, LabelStudioError, LabelStudioTool, image_ref_for
from shared.core import label_studio as ls
from shared.core.records import LabelingTask
from shared.errors import UnavailableError
from tests.support.label_studio import free_port

CLASSES = ("cat", "dog", "bird")
CONTAINER = "labeling-input"


def _choices(label: str) -> list[dict[str, object]]:
    return [{"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": [label]}}]


def labeling_task(i: int, confidence: float, *, batch: str = "batch-1", version: str = "3",
                  label: str | None = "dog") -> LabelingTask:
    return LabelingTask(item_id=f"item-{i}", batch_id=batch, container=CONTAINER, name=f"{batch}/item-{i}.png",
                        score=round(1 - confidence, 6), rank=i, model_version=version, predicted_label=label,
                        confidence=confidence)


@pytest.fixture
def client(label_studio) -> LabelStudioClient:
    return LabelStudioClient(label_studio.url, label_studio.token, session=label_studio.session(auth=False))


@pytest.fixture
def tool(client) -> LabelStudioTool:
    setup = client.ensure_project(title=f"adapter {uuid.uuid4().hex[:10]}", class_names=CLASSES)
    return LabelStudioTool(client, project_id=setup.project_id, image_ref=image_ref_for(object()))


# --- against the real server ------------------------------------------------------------------
def test_ensure_project_creates_once_then_updates(client):
    title = f"ensure {uuid.uuid4().hex[:10]}"
    first = client.ensure_project(title=title, class_names=CLASSES[:2])
    assert first.created and first.storage_id is None and first.webhook_id is None
    second = client.ensure_project(title=title, class_names=CLASSES, description="now with birds")
    assert (second.project_id, second.created) == (first.project_id, False)
    doc = client.project(first.project_id)
    assert doc["title"] == title and doc["description"] == "now with birds"
    assert doc["label_config"] == ls.label_config(CLASSES)
    assert [c.get("value") for c in ET.fromstring(doc["label_config"]).iter("Choice")] == list(CLASSES)
    assert doc["sampling"] == ls.UNCERTAINTY_SAMPLING == "Uncertainty sampling"
    assert doc["show_skip_button"] is True and doc["maximum_annotations"] == 1
    # By id, too (a title with another project's title as a prefix is not confused with it).
    third = client.ensure_project(title=title, class_names=CLASSES, project_id=first.project_id)
    assert (third.project_id, third.created) == (first.project_id, False)
    other = client.ensure_project(title=f"{title} 2", class_names=CLASSES)
    assert other.created and other.project_id != first.project_id


def test_create_tasks_is_idempotent_per_batch_and_queues_the_least_confident_first(tool, client, label_studio):
    batch = [labeling_task(0, 0.9), labeling_task(1, 0.3, label="cat"), labeling_task(2, 0.6)]
    assert tool.create_tasks("batch-1", batch) == 3
    assert tool.create_tasks("batch-1", batch) == 0  # a hand-off run again creates nothing twice
    assert tool.create_tasks("batch-1", [*batch, labeling_task(3, 0.5, label="bird")]) == 1

    tasks = sorted(client.tasks(tool.project_id), key=lambda t: t["data"]["item_id"])
    assert [t["data"]["item_id"] for t in tasks] == ["item-0", "item-1", "item-2", "item-3"]
    for t, (conf, label) in zip(tasks, [(0.9, "dog"), (0.3, "cat"), (0.6, "dog"), (0.5, "bird")], strict=True):
        i = t["data"]["item_id"][-1]
        assert t["data"]["image"] == f"azure-blob://{CONTAINER}/batch-1/item-{i}.png"
        assert t["data"]["batch_id"] == "batch-1"
        assert t["data"]["uncertainty"] == pytest.approx(1 - conf)
        (pred,) = t["predictions"]
        assert pred["model_version"] == "3" and pred["score"] == pytest.approx(conf)
        assert pred["result"] == _choices(label)

    assert client.project(tool.project_id)["model_version"] == "3"
    nxt = label_studio.session().get(f"{label_studio.url}/api/projects/{tool.project_id}/next", timeout=10)
    assert nxt.status_code == 200, nxt.text
    assert nxt.json()["data"]["item_id"] == "item-1"  # the lowest score of the project's model version


def test_a_new_model_version_moves_the_queue_to_its_predictions(tool, client, label_studio):
    assert tool.create_tasks("b1", [labeling_task(0, 0.2, batch="b1", version="1"),
                                    labeling_task(1, 0.8, batch="b1", version="1")]) == 2
    assert tool.create_tasks("b2", [labeling_task(2, 0.7, batch="b2", version="2"),
                                    labeling_task(3, 0.4, batch="b2", version="2")]) == 2
    assert client.project(tool.project_id)["model_version"] == "2"
    nxt = label_studio.session().get(f"{label_studio.url}/api/projects/{tool.project_id}/next", timeout=10)
    assert nxt.json()["data"]["item_id"] == "item-3"  # version 2's least confident, not version 1's 0.2


def _newest(tasks: list[dict]) -> datetime:
    """The latest updated_at of these tasks (Label Studio's clock, so no skew with the test's)."""
    return max(at for at in (ls.parse_time(t["updated_at"]) for t in tasks) if at is not None)


def test_changed_tasks_lists_answers_and_what_changed_since(tool, client, label_studio):
    http, base = label_studio.session(), label_studio.url
    assert tool.create_tasks("batch-1", [labeling_task(i, 0.5) for i in range(3)]) == 3
    ids = {t["data"]["item_id"]: t["id"] for t in client.tasks(tool.project_id)}

    def annotate(item: str, label: str) -> int:
        r = http.post(f"{base}/api/tasks/{ids[item]}/annotations/", json={"result": _choices(label)}, timeout=10)
        assert r.status_code == 201, r.text
        return int(r.json()["id"])

    first = annotate("item-0", "cat")
    listed = list(tool.changed_tasks(None))
    assert sorted(t["data"]["item_id"] for t in listed) == ["item-0", "item-1", "item-2"]
    assert listed[0]["data"]["item_id"] == "item-0"  # most recently updated first
    (ann,) = listed[0]["annotations"]
    assert ann["id"] == first and ann["result"] == _choices("cat") and ann["was_cancelled"] is False
    parsed = ls.task_answers(listed[0], project_id=tool.project_id, class_names=CLASSES, delivery="t")
    assert [(a.item_id, a.label) for a in parsed.answers] == [("item-0", "cat")]

    # Creating an annotation moves its task's updated_at: only that task is newer than the mark.
    since = _newest(listed)
    time.sleep(0.05)
    second = annotate("item-1", "dog")
    assert [t["data"]["item_id"] for t in tool.changed_tasks(since)] == ["item-1"]

    # Updating one moves it too.
    since = _newest(list(tool.changed_tasks(None)))
    time.sleep(0.05)
    r = http.patch(f"{base}/api/annotations/{first}/", json={"result": _choices("bird")}, timeout=10)
    assert r.status_code == 200, r.text
    (changed,) = tool.changed_tasks(since)
    assert changed["data"]["item_id"] == "item-0" and changed["annotations"][0]["result"] == _choices("bird")

    # And deleting one: the task comes back without it (how the catch-up finds a lost deletion).
    since = _newest(list(tool.changed_tasks(None)))
    time.sleep(0.05)
    assert http.delete(f"{base}/api/annotations/{second}/", timeout=10).status_code == 204
    (changed,) = tool.changed_tasks(since)
    assert changed["data"]["item_id"] == "item-1" and changed["annotations"] == []
    assert list(tool.changed_tasks(_newest(list(tool.changed_tasks(None))))) == []


def test_a_personal_access_token_authenticates_the_client(label_studio, tool):
    pat = label_studio.personal_access_token()
    client = LabelStudioClient(label_studio.url, pat, session=label_studio.session(auth=False))
    assert client.version() == "1.23.2"
    assert client.project(tool.project_id)["id"] == tool.project_id
    assert client._access is not None  # exchanged at /api/token/refresh/ for a Bearer access token
    assert pat not in repr(client)
    forged = pat.rsplit(".", 1)[0] + ".not-the-signature"
    with pytest.raises(LabelStudioError) as err:
        LabelStudioClient(label_studio.url, forged, session=label_studio.session(auth=False)).version()
    assert err.value.status == 401 and forged not in str(err.value) and pat not in str(err.value)


# --- the client's resilience, against a scripted server -----------------------------------------
TOKEN = "s3cret-legacy-token-value"


def scripted(httpserver, **kw) -> tuple[LabelStudioClient, list[float]]:
    waits: list[float] = []
    client = LabelStudioClient(httpserver.url_for("/"), kw.pop("token", TOKEN), sleep=waits.append,
                               timeout=kw.pop("timeout", 5.0), attempts=kw.pop("attempts", 4),
                               backoff_seconds=0.01, **kw)
    return client, waits


def _no_secret(*texts: object, secret: str = TOKEN) -> None:
    for text in texts:
        assert secret not in str(text)


def test_a_503_is_retried_then_succeeds(httpserver):
    httpserver.expect_oneshot_request("/api/version/").respond_with_data("busy", status=503)
    httpserver.expect_request("/api/version/").respond_with_json({"release": "1.23.2"})
    client, waits = scripted(httpserver)
    assert client.version() == "1.23.2"
    assert len(httpserver.log) == 2 and len(waits) == 1
    assert all(req.headers["Authorization"] == f"Token {TOKEN}" for req, _ in httpserver.log)


def test_a_429_waits_as_long_as_retry_after_says(httpserver):
    httpserver.expect_oneshot_request("/api/projects/5/").respond_with_data(
        "slow down", status=429, headers={"Retry-After": "7"})
    httpserver.expect_oneshot_request("/api/projects/5/").respond_with_data(
        "slow down", status=429, headers={"Retry-After": "120"})  # capped at 60 s
    httpserver.expect_request("/api/projects/5/").respond_with_json({"id": 5})
    client, waits = scripted(httpserver)
    assert client.project(5) == {"id": 5}
    assert waits == [7.0, 60.0]


def test_a_400_is_refused_at_once(httpserver):
    httpserver.expect_request("/api/projects/", method="POST").respond_with_json(
        {"validation_errors": {"label_config": ["bad"]}}, status=400)
    client, waits = scripted(httpserver)
    with pytest.raises(LabelStudioError) as err:
        client.request("POST", "/api/projects/", body={"title": "x"})
    assert err.value.status == 400 and "label_config" in str(err.value)
    assert len(httpserver.log) == 1 and waits == []
    _no_secret(err.value, repr(client))


def test_a_server_that_stays_overloaded_is_unavailable(httpserver):
    httpserver.expect_request("/api/version/").respond_with_data("down", status=502)
    client, waits = scripted(httpserver, attempts=3)
    with pytest.raises(UnavailableError) as err:
        client.version()
    assert len(httpserver.log) == 3 and len(waits) == 2 and "3 tries" in str(err.value)
    _no_secret(err.value, err.value.__cause__)


def test_a_dead_port_is_unavailable_after_the_configured_attempts():
    waits: list[float] = []
    url = f"http://127.0.0.1:{free_port()}"
    client = LabelStudioClient(url, TOKEN, attempts=3, timeout=2.0, backoff_seconds=0.01, sleep=waits.append)
    with pytest.raises(UnavailableError) as err:
        client.version()
    assert "3 tries" in str(err.value) and "ConnectionError" in str(err.value) and url in str(err.value)
    assert len(waits) == 2
    _no_secret(err.value, err.value.__cause__, repr(client))


def test_an_expired_access_token_is_renewed_once(httpserver):
    pat = "header.payload.signature"
    issued: list[str] = []

    def refresh(request: Request) -> Response:
        assert request.get_json() == {"refresh": pat}
        issued.append(f"access-{len(issued) + 1}")
        return Response(f'{{"access": "{issued[-1]}"}}', content_type="application/json")

    httpserver.expect_request("/api/token/refresh/", method="POST").respond_with_handler(refresh)
    httpserver.expect_oneshot_request("/api/version/").respond_with_data("expired", status=401)
    httpserver.expect_request("/api/version/").respond_with_json({"release": "1.23.2"})
    client, waits = scripted(httpserver, token=pat)
    assert client.version() == "1.23.2"
    assert issued == ["access-1", "access-2"] and waits == []
    auth = [req.headers.get("Authorization") for req, _ in httpserver.log if req.path == "/api/version/"]
    assert auth == ["Bearer access-1", "Bearer access-2"]
    assert pat not in repr(client)


def test_an_overloaded_token_refresh_is_retried_not_called_a_refusal(httpserver):
    pat = "header.payload.signature"
    httpserver.expect_oneshot_request("/api/token/refresh/", method="POST").respond_with_data("restarting", status=503)
    httpserver.expect_request("/api/token/refresh/", method="POST").respond_with_json({"access": "a1"})
    httpserver.expect_request("/api/version/").respond_with_json({"release": "1.23.2"})
    client, waits = scripted(httpserver, token=pat)
    assert client.version() == "1.23.2" and len(waits) == 1


def test_a_refused_personal_access_token_names_no_secret(httpserver):
    pat = "header.payload.signature-that-is-secret"
    httpserver.expect_request("/api/token/refresh/", method="POST").respond_with_json(
        {"detail": "Token is invalid or expired"}, status=401)
    client, waits = scripted(httpserver, token=pat)
    with pytest.raises(LabelStudioError) as err:
        client.version()
    assert err.value.status == 401 and waits == []
    _no_secret(err.value, repr(client), secret=pat)


def test_the_client_refuses_an_empty_url_or_token():
    with pytest.raises(ValueError):
        LabelStudioClient("", TOKEN)
    with pytest.raises(ValueError) as err:
        LabelStudioClient("http://127.0.0.1:1", "")
    _no_secret(err.value)


def test_changed_tasks_filters_on_updated_at_and_pages(httpserver):
    since = datetime(2026, 3, 1, 10, 0, 0, 5, tzinfo=UTC)
    pages = {1: [{"id": i, "data": {"item_id": f"i{i}"}} for i in range(100)], 2: [{"id": 100, "data": {}}]}
    seen: list[dict] = []

    def handler(request: Request) -> Response:
        import json

        seen.append(json.loads(request.args["query"]))
        page = int(request.args["page"])
        return Response(json.dumps({"tasks": pages[page], "total": 101}), content_type="application/json")

    httpserver.expect_request("/api/tasks/").respond_with_handler(handler)
    client, _ = scripted(httpserver)
    tool = LabelStudioTool(client, project_id=9, image_ref=image_ref_for(object()))
    assert len(list(tool.changed_tasks(since))) == 101
    assert seen[0]["filters"]["items"] == [ls.updated_since_filter(since)]
    assert seen[0]["ordering"] == ["-tasks:updated_at"]
    assert [r.args["page"] for r, _ in httpserver.log] == ["1", "2"]


def test_batches_are_told_apart_exactly(tool, client):
    assert tool.create_tasks("b1", [labeling_task(0, 0.5, batch="b1")]) == 1
    # The same item in another batch whose id contains the first one's is another task.
    assert tool.create_tasks("b10", [labeling_task(0, 0.5, batch="b10")]) == 1
    assert tool.create_tasks("b", [labeling_task(0, 0.5, batch="b")]) == 1
    assert sorted(t["data"]["batch_id"] for t in client.tasks(tool.project_id)) == ["b", "b1", "b10"]


def test_an_import_that_failed_after_saving_is_not_sent_again(httpserver):
    """Label Studio saved the import but its answer was a 502 (a proxy timeout): the tool lists the
    batch again and sends only what is still missing, never the same task twice."""
    saved: list[dict] = []

    def tasks(request: Request) -> Response:
        return Response(json.dumps({"tasks": saved, "total": len(saved)}), 200,
                        content_type="application/json")

    def import_(request: Request) -> Response:
        body = request.get_json()
        saved.extend({"id": len(saved) + i + 1, "data": t["data"]} for i, t in enumerate(body))
        return Response("gateway timeout", 502) if len(saved) == len(body) else Response("{}", 201)

    httpserver.expect_request("/api/tasks/", method="GET").respond_with_handler(tasks)
    httpserver.expect_request("/api/projects/9/import", method="POST").respond_with_handler(import_)
    httpserver.expect_request("/api/projects/9/", method="PATCH").respond_with_json({"id": 9})
    client, waits = scripted(httpserver)
    tool = LabelStudioTool(client, project_id=9, image_ref=lambda c, n: f"azure-blob://{c}/{n}")
    batch = [labeling_task(i, 0.5) for i in range(3)]
    assert tool.create_tasks("batch-1", batch) == 3
    imports = [req for req, _ in httpserver.log if req.path.endswith("/import")]
    assert len(imports) == 1, "the saved import was not sent again"
    assert len(waits) == 1  # one back-off before listing the batch again
    assert sorted(t["data"]["item_id"] for t in saved) == sorted(t.item_id for t in batch)
    assert tool.create_tasks("batch-1", batch) == 0
