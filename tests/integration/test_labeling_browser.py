"""The Azure labeling path with a person in the browser, every neighbour on its Azure adapter.

A serving model version and four scored items are in ADX (the stand-in, real Kusto clients), their
PNGs in Azurite. The Label Studio project is made by the product's ``ensure_project``: label config
from the model's classes, uncertainty sampling, Azure source storage on Azurite in proxy mode, and the
webhook to the label app (the product's ``function_app`` with ``AL_STAGES=label_export_trigger`` in
its own process, keys enforced, so the webhook's ``x-functions-key`` header is what lets it in). The
selector runs in-process on the same Azure settings: it records the selection in ADX, copies the
items into the labeling container and creates pre-annotated tasks. A person in Chromium opens the
least confident task, sees the model's guess, picks another class and submits; the label reaches ADX
by the webhook alone. The catch-up then finds nothing new, and deleting the annotation in Label
Studio retracts the label, again by the webhook.
"""

from __future__ import annotations

import io
import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from azure.storage.blob import BlobServiceClient
from PIL import Image

from functions.selector_timer.wiring import build_select_service
from shared.adapters.label_studio import LabelStudioClient
from shared.backends import Backend
from shared.core.answers import label_studio_answer_id
from shared.core.records import ModelStatus, ModelVersion, PredictionBatch
from shared.settings import load_settings
from tests.support.azurite import ACCOUNT, KEY
from tests.support.browser import label_in_browser
from tests.support.credentials import StaticTokenCredential
from tests.support.label_studio import free_port

pytestmark = pytest.mark.slow

MODEL = "pets"
VERSION = "v7"
CLASSES = ("cat", "dog", "bird")
# Four items, each with its top guess; item 0 is the least sure (smallest margin, lowest top score).
PROBA = np.asarray([[0.40, 0.35, 0.25], [0.10, 0.62, 0.28], [0.05, 0.15, 0.80], [0.91, 0.06, 0.03]], np.float32)
COLORS = [(200, 40, 40), (40, 160, 40), (40, 40, 200), (200, 200, 40)]
WEBHOOK_WITHIN_S = 60.0


def _png(color: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), color).save(out, "PNG")
    return out.getvalue()


def _wait_for(what: str, probe: Any, timeout: float) -> tuple[Any, float]:
    """Poll ``probe()`` until it answers something truthy: (that answer, seconds waited)."""
    started = time.monotonic()
    while True:
        got = probe()
        if got:
            return got, time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{what}: not within {timeout:.0f}s")
        time.sleep(0.2)


def test_a_person_labels_in_the_browser_and_the_label_reaches_adx_by_webhook(
        azurite, adx, label_studio, tmp_path):
    tag = uuid.uuid4().hex[:8]
    conn = azurite.connection_string
    http = label_studio.session()
    ls_url = label_studio.url
    containers = {"items": f"items-{tag}", "labeling": f"labeling-{tag}", "exports": f"exports-{tag}",
                  "quarantine": f"quarantine-{tag}", "state": f"state-{tag}", "lock": f"lock-{tag}"}
    queue = f"retrain-{tag}"
    # Label Studio validates its Azure storage against the container when the storage is created.
    BlobServiceClient.from_connection_string(conn).create_container(containers["labeling"])

    # --- 2. the project (before the app: the app's settings name the project) ---------------------
    app_port = free_port()
    function_key, master_key = f"fk-{tag}", f"mk-{tag}"
    webhook_url = f"http://127.0.0.1:{app_port}/api/labels/webhook"
    project_spec = dict(
        title=f"{MODEL} {tag}", class_names=CLASSES,
        storage={"type": "azure", "title": f"{containers['labeling']} (labeling account)",
                 "container": containers["labeling"], "account_name": f"{ACCOUNT};BlobEndpoint={azurite.blob_url}",
                 "account_key": KEY, "presign": False, "use_blob_urls": True, "regex_filter": ""},
        webhook_url=webhook_url, webhook_headers={"x-functions-key": function_key})
    client = LabelStudioClient(ls_url, label_studio.token)
    setup = client.ensure_project(**project_spec)
    pid = setup.project_id
    assert setup.created and setup.storage_id and setup.webhook_id
    again = client.ensure_project(**project_spec)  # `al labeling setup` run twice: the same project
    assert (again.project_id, again.created, again.storage_id, again.webhook_id) == (
        pid, False, setup.storage_id, setup.webhook_id)
    project = http.get(f"{ls_url}/api/projects/{pid}/", timeout=10).json()
    assert project["sampling"] == "Uncertainty sampling"
    hook = http.get(f"{ls_url}/api/webhooks/{setup.webhook_id}/", timeout=10).json()
    assert hook["url"] == webhook_url and hook["headers"] == {"x-functions-key": function_key}

    # --- 1. the Azure settings; the serving version and the predictions through the Azure store ---
    common = dict(
        backend="azure", model_name=MODEL, storage_connection_string=conn, adx_cluster_uri=adx.url,
        adx_ingest_uri=adx.url, adx_database=adx.database, labeling_container=containers["labeling"],
        exports_container=containers["exports"], quarantine_container=containers["quarantine"],
        retrain_queue=queue, retrain_state_container=containers["state"],
        selection_lock_container=containers["lock"], label_studio_url=ls_url,
        label_studio_token=label_studio.token, label_studio_project_id=pid)
    settings = load_settings(stages="selector_timer", strategy="margin", batch_size=4, **common)
    ports = Backend(settings, credential=StaticTokenCredential())
    store = ports.store
    store.upsert_model_version(ModelVersion(MODEL, VERSION, CLASSES, metrics={"accuracy": 0.8},
                                            status=ModelStatus.SERVING))
    assert store.serving_version(MODEL).class_names == CLASSES
    ids = [f"pet-{tag}-{i}" for i in range(len(PROBA))]
    uris = [ports.objects.put(containers["items"], f"{i}.png", _png(c)) for i, c in zip(ids, COLORS, strict=True)]
    scored = np.datetime64(datetime.now(UTC).replace(tzinfo=None) - timedelta(hours=1), "us")
    guess = {i: CLASSES[int(k)] for i, k in zip(ids, PROBA.argmax(axis=1), strict=True)}
    added = store.add_predictions(PredictionBatch(
        tuple(f"pred-{tag}-{n}" for n in range(len(ids))), tuple(ids), tuple(uris), (MODEL,) * len(ids),
        (VERSION,) * len(ids), tuple(guess[i] for i in ids), np.full(len(ids), scored), PROBA))
    assert added == len(ids)

    # The label app: the product's function_app in its own process, on the same Azure settings.
    data_dir = tmp_path / "label-app"
    data_dir.mkdir()
    env = {f"AL_{k.upper()}": str(v) for k, v in common.items()} | {
        "AL_STAGES": "label_export_trigger", "AL_DATA_DIR": str(data_dir), "AL_STORAGE": conn,
        "AL_EXPORTS_STORAGE": conn, "AzureWebJobsStorage": conn, "AL_LABEL_SYNC_SCHEDULE": "0 * * * * *",
        "AL_BLOB_TRIGGER_SOURCE": "EventGrid"}
    from tests.support.funchost_client import start_host

    # tests.support.e2e_app: the product's app with the managed identity replaced by a static token
    # (the ADX stand-in checks that a bearer token arrives, not whose it is).
    host = start_host(env, port=app_port, task_hub=f"label{tag}", app="tests.support.e2e_app:app",
                      args=["--function-key", function_key, "--master-key", master_key])
    try:
        assert host.url == f"http://127.0.0.1:{app_port}"
        assert host.post("/api/labels/webhook", data=b"{}").status_code == 401  # no key, no entry

        # --- 3. the selector, in-process, on the Azure adapters --------------------------------
        select = build_select_service(settings, credential=StaticTokenCredential())
        result = select.run()
        assert result.status == "selected", result.reason
        assert result.refused == ()
        selection = result.selection
        assert selection.strategy == "margin" and len(selection.items) == 4
        assert {it.item_id for it in selection.items} == set(ids)
        batch = selection.batch_id
        recorded = [r for r in adx.rows("Selections") if r["BatchId"] == batch]
        assert {r["ItemId"] for r in recorded if r["HandedOff"]} == set(ids), "recorded, then handed off"
        copied = ports.labeling_objects.list(containers["labeling"], f"{batch}/")
        assert len(copied) == 4

        listed = http.get(f"{ls_url}/api/tasks/", params={"project": pid, "page_size": 100, "fields": "all"},
                          timeout=10).json()
        task_ids = [t["id"] for t in (listed["tasks"] if isinstance(listed, dict) else listed)]
        tasks = {tid: http.get(f"{ls_url}/api/tasks/{tid}/", params={"resolve_uri": "false"},
                                  timeout=10).json() for tid in task_ids}
        assert sorted(t["data"]["item_id"] for t in tasks.values()) == sorted(ids)
        by_item = {t["data"]["item_id"]: t for t in tasks.values()}
        for item, t in by_item.items():
            assert t["data"]["batch_id"] == batch
            assert t["data"]["image"].startswith(f"azure-blob://{containers['labeling']}/{batch}/")
            (pred,) = t["predictions"]  # the serving model's guess, as a pre-annotation
            assert pred["model_version"] == VERSION
            assert pred["result"][0]["value"]["choices"] == [guess[item]]
            row = ids.index(item)
            assert pred["score"] == pytest.approx(float(PROBA[row].max()), abs=1e-5)

        # --- 4. a person in the browser: the least confident task first ------------------------
        lowest = min(tasks.values(), key=lambda t: t["predictions"][0]["score"])
        nxt = http.get(f"{ls_url}/api/projects/{pid}/next", timeout=10)
        assert nxt.status_code == 200, nxt.text
        task = nxt.json()
        assert task["id"] == lowest["id"] and task["data"]["item_id"] == ids[0], "uncertainty sampling's queue"
        item = task["data"]["item_id"]
        chosen = next(c for c in CLASSES if c != guess[item])
        out = label_in_browser(ls_url, label_studio.username, label_studio.password, pid, task["id"], chosen,
                               screenshot=tmp_path / "labeling.png")
        submitted = time.monotonic()
        assert out["status"] == 201, out
        assert out["prediction_shown"] is True
        assert out["preselected"] == guess[item]
        annotation = out["annotation"]
        assert [r["value"]["choices"] for r in annotation["result"]] == [[chosen]]
        answer_id = label_studio_answer_id(pid, int(annotation["id"]))

        # --- 5. the label in ADX, by the webhook ------------------------------------------------
        def label_rows() -> list[dict[str, Any]]:
            return [r for r in adx.rows("Labels") if r["AnswerId"] == answer_id]

        rows, _ = _wait_for("the label in ADX", label_rows, WEBHOOK_WITHIN_S)
        webhook_seconds = round(time.monotonic() - submitted, 2)
        (row,) = rows
        # Label Studio saved the annotation at created_at; the label app recorded it at RecordedAt
        # (one machine, one clock): the submit-to-ADX time, webhook included.
        saved_at = datetime.fromisoformat(annotation["created_at"].replace("Z", "+00:00"))
        recorded_at = row["RecordedAt"] if row["RecordedAt"].tzinfo else row["RecordedAt"].replace(tzinfo=UTC)
        submit_to_recorded = round((recorded_at - saved_at).total_seconds(), 3)
        assert 0 <= submit_to_recorded < WEBHOOK_WITHIN_S, (saved_at, recorded_at)
        assert (row["ItemId"], row["Label"], row["Retracted"]) == (item, chosen, False)
        assert row["ExportId"].startswith("label-studio:webhook:ANNOTATION_CREATED:"), row["ExportId"]
        current = {lb.item_id: lb for lb in store.list_labels()}
        assert (current[item].label, current[item].answer_id) == (chosen, answer_id)

        # The catch-up reads the same annotation again and records nothing.
        labels_before = len(adx.rows("Labels"))
        assert host.post("/api/labels/sync", json={}).status_code == 401  # admin: the master key only
        assert host.post("/api/labels/sync", json={},
                         headers={"x-functions-key": function_key}).status_code == 401
        sync = host.post("/api/labels/sync", json={}, headers={"x-functions-key": master_key})
        assert sync.status_code == 200, sync.text
        caught = sync.json()
        assert caught["answers"] == 1 and caught["recorded"] == 0 and caught["retracted"] == 0, caught
        assert caught["refused"] == [] and caught["tasks_read"] >= 1, caught
        assert len(adx.rows("Labels")) == labels_before

        # Deleting the annotation in Label Studio retracts the label, by the webhook.
        deleted = http.delete(f"{ls_url}/api/annotations/{annotation['id']}/", timeout=30)
        assert deleted.status_code == 204, deleted.text
        retractions, retract_seconds = _wait_for(
            "the retraction in ADX", lambda: [r for r in label_rows() if r["Retracted"]], WEBHOOK_WITHIN_S)
        (retraction,) = retractions
        assert retraction["ItemId"] == item
        assert retraction["ExportId"].startswith("label-studio:webhook:ANNOTATIONS_DELETED:"), retraction
        assert item not in {lb.item_id for lb in store.list_labels()}, "the item has no current label"
        assert sorted(p.name for p in data_dir.rglob("*")) == [], "the Azure backend writes nothing locally"
    finally:
        host.stop()
    report = {"submit_to_recorded_seconds": submit_to_recorded, "waited_after_submit_seconds": webhook_seconds,
              "retraction_wait_seconds": round(retract_seconds, 2), "browser_seconds": out["seconds"],
              "project": pid, "task": task["id"]}
    print(json.dumps(report))
    (Path(tmp_path) / "timing.json").write_text(json.dumps(report))
