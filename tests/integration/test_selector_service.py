"""The select service on its Azure neighbours: ADX (the stand-in, real Kusto clients) for predictions
and selections, Azurite for the items, the labeling folder (server-side copy) and the blob-lease lock.
Resume after a crash between record and copy, re-runs, two overlapping runs, budget and stopping."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from azure.storage.blob import BlobServiceClient

from shared.adapters.adx_ingest import build_query_client, build_streaming_client
from shared.adapters.adx_store import AdxStore
from shared.adapters.blob_objects import BlobObjectStore
from shared.adapters.selection_lock import BlobLeaseLock, FileLock, LockBusyError
from shared.core.naming import item_id_from_path
from shared.core.records import ModelStatus, ModelVersion, PredictionBatch
from shared.services.select import SelectService, batch_uncertainty
from tests.support.credentials import StaticTokenCredential

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
CLASSES = 5


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def adx_store(adx) -> AdxStore:
    """The Azure store on the stand-in, emptied (one stand-in serves the module)."""
    query = build_query_client(cluster_uri=adx.url, credential=StaticTokenCredential())
    for table in ("Predictions", "Selections", "Labels", "ModelVersions"):
        query.execute_mgmt(adx.database, f".clear table {table} data")
    return AdxStore(query, database=adx.database,
                    ingest=build_streaming_client(cluster_uri=adx.url, credential=StaticTokenCredential()))


class World:
    """The ADX store with a serving model and n scored items whose bytes sit in Azurite."""

    def __init__(self, service: BlobServiceClient, adx, n: int = 30, *, confident: bool = False) -> None:
        self.service = service
        self.objects = BlobObjectStore(service)
        self.labeling = _name("labeling")
        self.lock_container = _name("lock")
        self.store = adx_store(adx)
        self.store.upsert_model_version(ModelVersion("m", "v1", tuple(f"c{i}" for i in range(CLASSES)),
                                                     status=ModelStatus.SERVING))
        items = _name("items")
        rng = np.random.default_rng(7)
        ids = [f"item {i:03d}/é" if i % 10 == 0 else f"item-{i:03d}" for i in range(n)]
        ids = [i.replace("/", "_") for i in ids]  # ids with spaces and non-ASCII: names must map back
        uris = [self.objects.put(items, f"{i:03d}.png", f"bytes of {i}".encode()) for i in range(n)]
        proba = rng.dirichlet(np.full(CLASSES, 0.05 if confident else 1.0), size=n).astype(np.float32)
        if confident:
            proba = np.full((n, CLASSES), 0.001, np.float32)
            proba[:, 0] = 0.996
        at = np.datetime64(NOW.replace(tzinfo=None), "us") - np.timedelta64(1, "h")
        self.store.add_predictions(PredictionBatch(
            tuple(f"p{i}" for i in range(n)), tuple(ids), tuple(uris), ("m",) * n, ("v1",) * n, ("c0",) * n,
            np.full(n, at), proba))
        self.ids = ids

    def lock(self) -> BlobLeaseLock:
        return BlobLeaseLock(self.service, container=self.lock_container, lease_seconds=15)

    def select(self, objects=None, **kw) -> SelectService:
        args = dict(model_name="m", strategy="margin", batch_size=8, window=timedelta(days=1), seed=1,
                    lock=self.lock(), labeling_container=self.labeling) | kw
        return SelectService(self.store, objects or self.objects, **args)

    def labeled_files(self) -> list[str]:
        return self.objects.list(self.labeling)

    def labeled_items(self) -> list[str]:
        return [item_id_from_path(n) for n in self.labeled_files()]


class CrashingCopies:
    """The real Blob object store, but ``copy`` dies after ``allowed`` copies (a crash mid-hand-off)."""

    def __init__(self, inner: BlobObjectStore, allowed: int) -> None:
        self._inner = inner
        self._allowed = allowed

    def copy(self, src_uri: str, container: str, name: str) -> str:
        if self._allowed <= 0:
            raise ConnectionError("the worker died mid-copy")
        self._allowed -= 1
        return self._inner.copy(src_uri, container, name)

    def __getattr__(self, name: str):
        return getattr(self._inner, name)


@pytest.fixture(scope="module")
def blob_service(azurite):
    return BlobServiceClient.from_connection_string(azurite.connection_string)


@pytest.fixture
def world(blob_service, adx):
    return World(blob_service, adx)


def test_a_run_records_then_copies_under_lossless_names(world):
    result = world.select().run(now=NOW)
    assert result.status == "selected" and len(result.selection.items) == 8
    files = world.labeled_files()
    assert all(f.startswith(result.selection.batch_id + "/") for f in files)
    assert sorted(world.labeled_items()) == sorted(i.item_id for i in result.selection.items)
    first = result.selection.items[0]
    name = next(f for f in files if item_id_from_path(f) == first.item_id)
    assert world.objects.get(world.labeling, name) == world.objects.read(first.item_uri)  # the bytes, copied
    assert world.store.pending_handoffs() == []


def test_a_rerun_never_selects_an_item_twice(world):
    service = world.select()
    picked = []
    for hour in range(5):  # 30 items, 8 a run: the fourth run gets 6, the fifth none
        result = service.run(now=NOW + timedelta(minutes=hour))
        picked += [i.item_id for i in result.selection.items] if result.selection else []
    assert len(picked) == len(set(picked)) == 30
    assert result.status == "empty" and "no candidates" in result.reason
    assert sorted(world.labeled_items()) == sorted(world.ids)


@pytest.mark.parametrize("copies_before_crash", [0, 3])
def test_a_crash_between_record_and_copy_is_finished_by_the_next_run(world, copies_before_crash):
    crashing = world.select(objects=CrashingCopies(world.objects, copies_before_crash))
    with pytest.raises(ConnectionError):
        crashing.run(now=NOW)
    [pending] = world.store.pending_handoffs()
    assert len(world.labeled_files()) == copies_before_crash

    result = world.select().run(now=NOW + timedelta(hours=1))
    assert result.resumed == (pending.batch_id,)
    assert world.store.pending_handoffs() == []
    interrupted = {i.item_id for i in pending.items}
    new = {i.item_id for i in result.selection.items}
    assert not interrupted & new
    files = world.labeled_files()
    assert len(files) == len(set(files)) == 16
    assert sorted(world.labeled_items()) == sorted(interrupted | new)  # every item once, none lost
    assert {f.split("/")[0] for f in files if item_id_from_path(f) in interrupted} == {pending.batch_id}


def test_two_overlapping_runs_never_select_the_same_item(world):
    """Run A holds the lease while it copies; run B (another instance, its own lock object on the same
    blob) starts meanwhile and is refused; after A, a third run picks only new items."""
    in_copy, release = threading.Event(), threading.Event()

    class SlowCopies(CrashingCopies):
        def copy(self, src_uri, container, name):
            in_copy.set()
            assert release.wait(30), "run B never finished"
            return self._inner.copy(src_uri, container, name)

    a_result = {}
    a = threading.Thread(target=lambda: a_result.update(r=world.select(objects=SlowCopies(world.objects, 99))
                                                        .run(now=NOW)))
    a.start()
    try:
        assert in_copy.wait(30), "run A never reached the copy"
        b = world.select().run(now=NOW)
        assert b.status == "busy" and b.selection is None
    finally:
        release.set()
        a.join(30)
    assert a_result["r"].status == "selected"
    c = world.select().run(now=NOW + timedelta(minutes=1))
    picked = [i.item_id for r in (a_result["r"], c) for i in r.selection.items]
    assert len(picked) == len(set(picked)) == 16
    assert len(world.labeled_files()) == 16


def test_the_lease_is_exclusive_and_released(world):
    first, second = world.lock(), world.lock()
    with first.hold(), pytest.raises(LockBusyError), second.hold():
        pass
    with second.hold():  # released on exit
        pass


def test_file_lock_is_exclusive_within_and_across_holders(tmp_path):
    path = tmp_path / "selection.lock"
    with FileLock(path).hold(), pytest.raises(LockBusyError, match="another selection run"), FileLock(path).hold():
        pass
    with FileLock(path).hold():
        pass


def test_budget_caps_labels_per_day_and_in_total(world):
    service = world.select(labels_per_day=10, labels_total=12, window=timedelta(days=7))
    assert len(service.run(now=NOW).selection.items) == 8
    assert len(service.run(now=NOW + timedelta(minutes=1)).selection.items) == 2  # 10 today
    assert service.run(now=NOW + timedelta(minutes=2)).status == "budget"
    tomorrow = service.run(now=NOW + timedelta(days=1))
    assert len(tomorrow.selection.items) == 2  # 12 in total
    assert service.run(now=NOW + timedelta(days=2)).status == "budget"
    assert len(world.labeled_files()) == 12


def test_stopping_rule_skips_a_batch_the_model_is_sure_about(blob_service, adx):
    sure = World(blob_service, adx, 12, confident=True)
    result = sure.select(stop_uncertainty_below=0.5).run(now=NOW)
    assert result.status == "stopped" and result.uncertainty < 0.5 and "stopping rule" in result.reason
    assert sure.labeled_files() == [] and sure.store.pending_handoffs() == []
    assert not sure.store.is_selected(sure.ids).any()
    assert sure.select().run(now=NOW).status == "selected"  # no rule: it selects


def test_no_serving_model_and_fewer_candidates_than_k_finish_cleanly(world, caplog):
    caplog.set_level("INFO")
    none = world.select(model_name="other").run(now=NOW)
    assert none.status == "empty" and "no serving version" in none.reason
    assert "nothing selected" in caplog.text
    few = world.select().run(now=NOW, k=50)
    assert few.status == "selected" and len(few.selection.items) == 30 and "only 30 candidates" in few.reason


def test_preview_records_nothing(world):
    preview = world.select().preview(now=NOW, strategy="entropy", k=5)
    assert preview.status == "preview" and len(preview.selection.items) == 5
    assert world.labeled_files() == [] and world.store.pending_handoffs() == []
    scores = [i.score for i in preview.selection.items]
    assert scores == sorted(scores, reverse=True)


def test_batch_uncertainty_is_on_a_zero_to_one_scale():
    assert batch_uncertainty("margin", [0.0, 1.0], 5) == pytest.approx(0.5)
    assert batch_uncertainty("least_confidence", [0.8], 5) == pytest.approx(1.0)
    assert batch_uncertainty("entropy", [np.log(5)], 5) == pytest.approx(1.0)
    assert batch_uncertainty("random", [0.0], 5) is None
