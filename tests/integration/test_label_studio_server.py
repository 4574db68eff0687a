"""The real Label Studio 1.23.2 on loopback: its token, a project with pre-annotated tasks whose images
live in Azurite behind Label Studio's Azure source storage (proxy mode), and a person labeling one task
in Chromium."""

from __future__ import annotations

import contextlib
import io
import uuid

import pytest
from azure.core.exceptions import ResourceExistsError
from azure.storage.blob import BlobServiceClient
from PIL import Image

from tests.support.azurite import ACCOUNT, KEY
from tests.support.browser import label_in_browser

pytestmark = pytest.mark.slow

CLASSES = ("cat", "dog", "bird")
LABEL_CONFIG = (
    '<View>\n  <Image name="image" value="$image"/>\n'
    '  <Choices name="label" toName="image" choice="single">\n'
    + "".join(f'    <Choice value="{c}"/>\n' for c in CLASSES)
    + "  </Choices>\n</View>"
)
CONTAINER = "labeling-input"


def _png(color: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), color).save(out, "PNG")
    return out.getvalue()


def _choices(label: str) -> list[dict[str, object]]:
    return [{"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": [label]}}]


def test_legacy_token_authenticates(label_studio):
    http = label_studio.session()
    me = http.get(f"{label_studio.url}/api/current-user/whoami", timeout=10)
    assert me.status_code == 200
    assert me.json()["email"] == label_studio.username
    wrong = http.get(f"{label_studio.url}/api/projects/", headers={"Authorization": "Token not-the-token"},
                     timeout=10)
    assert wrong.status_code == 401
    assert label_studio.version == "1.23.2"


def test_personal_access_token_gives_a_bearer_token(label_studio):
    access = label_studio.access_token()
    r = label_studio.session(auth=False).get(
        f"{label_studio.url}/api/projects/", headers={"Authorization": f"Bearer {access}"}, timeout=10)
    assert r.status_code == 200


def test_a_person_labels_a_pre_annotated_task_served_from_azurite(label_studio, azurite, tmp_path):
    http = label_studio.session()
    base = label_studio.url
    run = uuid.uuid4().hex[:8]

    container = BlobServiceClient.from_connection_string(azurite.connection_string).get_container_client(CONTAINER)
    with contextlib.suppress(ResourceExistsError):  # the session's Azurite is shared
        container.create_container()
    names = [f"ls-test/{run}/item-{i}.png" for i in range(2)]
    for name, color in zip(names, [(200, 30, 30), (30, 30, 200)], strict=True):
        container.upload_blob(name, _png(color))

    project = http.post(f"{base}/api/projects/", json={"title": f"browser test {run}", "label_config": LABEL_CONFIG},
                        timeout=10)
    assert project.status_code == 201, project.text
    pid = project.json()["id"]

    # Source storage in proxy mode: Label Studio streams the blob itself (same origin for the editor).
    # Azurite is reached through the connection-string parser: the endpoint rides in account_name.
    storage = http.post(f"{base}/api/storages/azure", json={
        "project": pid, "title": "azurite", "container": CONTAINER,
        "account_name": f"{ACCOUNT};BlobEndpoint={azurite.blob_url}", "account_key": KEY,
        "presign": False, "use_blob_urls": True,
    }, timeout=30)
    assert storage.status_code == 201, storage.text

    predicted = ["cat", "dog"]
    tasks = [{
        "data": {"image": f"azure-blob://{CONTAINER}/{name}", "item_id": f"{run}-{i}", "batch_id": run,
                 "score": score},
        "predictions": [{"model_version": "v1", "score": score, "result": _choices(label)}],
    } for i, (name, label, score) in enumerate(zip(names, predicted, [0.41, 0.77], strict=True))]
    imported = http.post(f"{base}/api/projects/{pid}/import?return_task_ids=true", json=tasks, timeout=30)
    assert imported.status_code == 201, imported.text
    assert imported.json()["prediction_count"] == 2
    task_id = imported.json()["task_ids"][0]

    chosen = "bird"  # not the predicted "cat"
    shot = tmp_path / "labeling.png"
    out = label_in_browser(base, label_studio.username, label_studio.password, pid, task_id, chosen,
                           screenshot=shot)

    assert out["status"] == 201
    assert out["prediction_shown"] is True
    assert out["preselected"] == "cat"
    annotation = out["annotation"]
    assert annotation["task"] == task_id
    assert annotation["was_cancelled"] is False
    assert [r["value"]["choices"] for r in annotation["result"]] == [[chosen]]
    assert annotation["parent_prediction"] is not None
    assert shot.stat().st_size > 0

    stored = http.get(f"{base}/api/tasks/{task_id}", timeout=10).json()
    assert [a["id"] for a in stored["annotations"]] == [annotation["id"]]
    assert stored["annotations"][0]["result"][0]["value"]["choices"] == [chosen]


def test_restart_keeps_port_token_and_data(label_studio):
    http = label_studio.session()
    before = http.post(f"{label_studio.url}/api/projects/", json={"title": "survives restart"}, timeout=10)
    assert before.status_code == 201
    url, pid = label_studio.url, label_studio.pid
    label_studio.stop()
    assert not label_studio.running
    label_studio.start()
    assert label_studio.url == url and label_studio.pid != pid
    after = label_studio.session().get(f"{label_studio.url}/api/projects/{before.json()['id']}", timeout=10)
    assert after.status_code == 200
    assert after.json()["title"] == "survives restart"
