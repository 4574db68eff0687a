"""The selector re-checks every item URI before it copies an item to labeling: rows stored before the
collector checked URIs (or written around it) cannot make it fetch an arbitrary URL."""

from __future__ import annotations

import json
import logging
import uuid
from datetime import UTC, datetime, timedelta

import azure.functions as func
import numpy as np
import pytest
from azure.storage.blob import BlobServiceClient

from functions.selector_timer import handlers
from functions.selector_timer.wiring import build_select_service
from shared.adapters.blob_objects import BlobObjectStore
from shared.core.records import ModelStatus, ModelVersion, PredictionBatch, SelectedItem, Selection
from shared.ports import PredictionStore
from shared.services.select import SelectService
from shared.settings import load_settings

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)
HOSTILE = ["file:///etc/passwd", "http://169.254.169.254/metadata/instance?api-version=2021-02-01",
           "ftp://files.example/x.png", "https://files.example/x.png"]


def add_rows(store: PredictionStore, uris: list[str], *, uncertain: list[bool], now: datetime = NOW) -> list[str]:
    """One prediction per URI; the hostile ones most uncertain, so a run picks them first."""
    n = len(uris)
    proba = np.array([[0.34, 0.33, 0.33] if u else [0.9, 0.05, 0.05] for u in uncertain], np.float32)
    ids = [f"item-{i:02d}" for i in range(n)]
    at = np.datetime64(now.astimezone(UTC).replace(tzinfo=None) - timedelta(hours=1), "us")
    store.add_predictions(PredictionBatch(tuple(f"p{i}" for i in range(n)), tuple(ids), tuple(uris), ("m",) * n,
                                          ("v1",) * n, ("a",) * n, np.full(n, at), proba))
    return ids


class SpyCopies:
    """The real object store, recording every URI the selector asks it to copy from."""

    def __init__(self, inner) -> None:
        self._inner, self.sources = inner, []

    def copy(self, src_uri: str, container: str, name: str) -> str:
        self.sources.append(src_uri)
        return self._inner.copy(src_uri, container, name)

    def __getattr__(self, name: str):
        return getattr(self._inner, name)


def test_the_run_route_skips_refused_items_logs_and_reports_them(tmp_path, caplog):
    settings = load_settings(data_dir=tmp_path, model_name="m", strategy="margin", batch_size=10)
    service = build_select_service(settings)  # the embedded wiring: DuckDB + the folder under AL_DATA_DIR
    store, objects = service._store, service._objects
    store.upsert_model_version(ModelVersion("m", "v1", ("a", "b", "c"), status=ModelStatus.SERVING))
    good = [objects.put("items", f"{i}.png", bytes([i])) for i in range(2)]
    ids = add_rows(store, [*HOSTILE, *good], uncertain=[True] * len(HOSTILE) + [False, False],
                   now=datetime.now(UTC))  # the route selects as of now
    spy = SpyCopies(objects)
    service._objects = spy

    req = func.HttpRequest(method="POST", url="http://localhost/api/selection/run", params={}, body=b"")
    with caplog.at_level(logging.WARNING, logger="shared.services.select"):
        resp = handlers.run(req, service)
    body = json.loads(resp.get_body())
    assert resp.status_code == 200 and body["status"] == "selected" and body["count"] == 6
    refused = {r["item_id"]: r for r in body["refused"]}
    assert sorted(refused) == ids[:4]
    assert [refused[i]["item_uri"] for i in ids[:4]] == HOSTILE and all(r["reason"] for r in refused.values())
    assert "scheme 'file' is not allowed" not in refused["item-00"]["reason"]  # embedded: file:// is, elsewhere
    assert "outside the object store" in refused["item-00"]["reason"]
    assert spy.sources == good  # nothing else was ever fetched
    assert len(objects.list(settings.labeling_container)) == 2
    assert sum("not copied to labeling" in r.message for r in caplog.records if r.levelno == logging.WARNING) == 4
    assert store.pending_handoffs() == []  # recorded and done: never picked (or retried) again
    again = handlers.run(req, service)
    assert json.loads(again.get_body())["status"] == "empty"


def test_an_interrupted_hand_off_with_an_old_hostile_row_is_finished_without_fetching_it(tmp_path):
    settings = load_settings(data_dir=tmp_path, model_name="m")
    service = build_select_service(settings)
    store, objects = service._store, service._objects
    store.upsert_model_version(ModelVersion("m", "v1", ("a", "b"), status=ModelStatus.SERVING))
    good = objects.put("items", "ok.png", b"ok")
    items = (SelectedItem("evil", "file:///etc/passwd", 0.1, 0), SelectedItem("ok", good, 0.2, 1))
    store.record_selection(Selection("20260301T000000Z-old", "margin", "m", "v1", NOW, items))
    spy = SpyCopies(objects)
    service._objects = spy
    result = service.run(now=NOW)
    assert result.resumed == ("20260301T000000Z-old",) and spy.sources == [good]
    assert [(r.batch_id, r.item_id) for r in result.refused] == [("20260301T000000Z-old", "evil")]
    assert store.pending_handoffs() == []


@pytest.fixture
def blob_service(azurite):
    return BlobServiceClient.from_connection_string(azurite.connection_string)


def test_in_azure_only_the_storage_accounts_are_fetched_from(blob_service, adx):
    """Azure backend: ADX (the stand-in) holds the old rows, Blob (Azurite) the items; only the account's own
    endpoint and AL_ALLOWED_ITEM_HOSTS over https are fetched from."""
    from shared.adapters.adx_ingest import build_query_client, build_streaming_client
    from shared.adapters.adx_store import AdxStore
    from tests.support.credentials import StaticTokenCredential

    objects = BlobObjectStore(blob_service)
    items = f"items-{uuid.uuid4().hex[:8]}"
    good = objects.put(items, "a.png", b"a")
    store = AdxStore(build_query_client(cluster_uri=adx.url, credential=StaticTokenCredential()),
                     database=adx.database,
                     ingest=build_streaming_client(cluster_uri=adx.url, credential=StaticTokenCredential()))
    store.upsert_model_version(ModelVersion("m", "v1", ("a", "b", "c"), status=ModelStatus.SERVING))
    hostile = [*HOSTILE, "http://other.blob.core.windows.net/items/x.png", good.replace(items, "../" + items)]
    ids = add_rows(store, [*hostile, good], uncertain=[True] * len(hostile) + [False])
    spy = SpyCopies(objects)
    labeling = f"labeling-{uuid.uuid4().hex[:8]}"
    service = SelectService(store, spy, model_name="m", strategy="margin", batch_size=10, window=timedelta(days=1),
                            labeling_container=labeling, allowed_item_hosts=["other.blob.core.windows.net"])
    result = service.run(now=NOW)
    assert sorted(r.item_id for r in result.refused) == ids[:-1]
    assert spy.sources == [good] and len(objects.list(labeling)) == 1
