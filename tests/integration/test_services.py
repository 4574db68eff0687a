"""The four services over the embedded adapters, the way the simulation and function apps use them."""

import base64
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from shared.adapters.duckdb_store import DuckDBStore
from shared.adapters.local_objects import LocalFolderObjectStore
from shared.core.exports import datastore_url, write_csv_export
from shared.core.records import ModelStatus, ModelVersion
from shared.core.uncertainty import rank_order
from shared.errors import BatchRejectedError, ExportFormatError
from shared.model.items import Featurizer, encode_png
from shared.model.registry import LocalModelRegistry
from shared.model.trainer import EvaluationSet, LocalDeployer, LocalTrainer
from shared.services.collect import CollectService
from shared.services.labels import LabelService
from shared.services.retrain import RetrainService
from shared.services.select import LABELING_CONTAINER, SelectService, selection_rng

CLASSES = ("vertical", "horizontal")
NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)


@pytest.fixture
def loop(tmp_path):
    store = DuckDBStore(tmp_path / "db.duckdb")
    objects = LocalFolderObjectStore(tmp_path / "blobs")
    store.upsert_model_version(ModelVersion("m", "1", CLASSES, status=ModelStatus.SERVING))
    collect = CollectService(store, objects, max_item_bytes=10_000)
    select = SelectService(store, objects, model_name="m", strategy="margin", batch_size=3,
                           window=timedelta(hours=2))
    labels = LabelService(store, model_name="m", class_names=lambda: CLASSES, retrain_threshold=4)
    return store, objects, collect, select, labels


def stripes(i: int) -> np.ndarray:
    """Even items: vertical stripes; odd items: horizontal. Position jitters with i."""
    img = np.zeros((16, 16), np.uint8)
    sl = slice(i % 3, None, 4)
    if i % 2 == 0:
        img[:, sl] = 200 + i % 50
    else:
        img[sl, :] = 200 + i % 50
    return img


def image(i: int) -> bytes:
    return encode_png(stripes(i))


def records(n: int, *, start: int = 0):
    out = []
    for i in range(start, start + n):
        p = 0.5 + 0.05 * (i % 9)
        out.append({
            "item_id": f"img-{i:03d}", "item_base64": base64.b64encode(image(i)).decode(),
            "model_name": "m", "model_version": "1", "probabilities": [p, 1 - p],
            "predicted_label": "vertical", "scored_at": (NOW - timedelta(minutes=10)).isoformat(),
        })
    return out


def test_collect_stores_items_once_and_rows_once(loop):
    _, objects, collect, _, _ = loop
    batch = records(5)
    batch.append({**batch[0], "item_id": "img-copy"})  # same bytes under another id
    result = collect.collect(batch)
    assert (result.accepted, result.duplicates) == (6, 0)
    assert len(objects.list("items")) == 5  # content-addressed
    assert collect.collect(batch).duplicates == 6


def test_a_bad_batch_stores_nothing(loop):
    store, objects, collect, _, _ = loop
    bad = records(3)
    bad[2]["probabilities"] = [0.9, 0.9]
    with pytest.raises(BatchRejectedError) as info:
        collect.collect(bad)
    assert [(p.where, p.field) for p in info.value.problems] == [(2, "probabilities")]
    assert store.count_predictions() == 0 and objects.list("items") == []


def test_select_hands_off_and_never_repeats(loop):
    _, objects, collect, select, _ = loop
    collect.collect(records(9))
    first = select.run(now=NOW).selection
    assert first is not None and len(first.items) == 3
    # margin = |2p - 1| with p = 0.5 + 0.05 * (i % 9): ties broken by item id
    assert [i.item_id for i in first.items] == ["img-000", "img-001", "img-002"]
    names = objects.list(LABELING_CONTAINER)
    assert len(names) == 3 and all(n.startswith(first.batch_id + "/") for n in names)
    second = select.run(now=NOW).selection
    assert second is not None
    assert not {i.item_id for i in first.items} & {i.item_id for i in second.items}
    preview = select.preview(now=NOW)
    assert preview.selection is not None and len(objects.list(LABELING_CONTAINER)) == 6


def test_a_crash_between_record_and_copy_is_finished_by_the_next_run(loop, monkeypatch):
    store, objects, collect, select, _ = loop
    collect.collect(records(6))
    calls = {"n": 0}
    real_copy = objects.copy

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk went away")
        return real_copy(*args, **kwargs)

    monkeypatch.setattr(objects, "copy", flaky)
    with pytest.raises(OSError):
        select.run(now=NOW)
    assert len(store.pending_handoffs()) == 1
    monkeypatch.setattr(objects, "copy", real_copy)
    result = select.run(now=NOW)
    assert len(result.resumed) == 1 and store.pending_handoffs() == []
    assert len(objects.list(LABELING_CONTAINER)) == 6  # 3 resumed + 3 new, no duplicates


def test_no_serving_model_or_empty_pool_finish_cleanly(loop):
    store, _, _, select, _ = loop
    assert select.run(now=NOW).reason.startswith("no candidates")
    store.upsert_model_version(ModelVersion("m", "1", CLASSES, status=ModelStatus.RETIRED))
    assert "no serving version" in select.run(now=NOW).reason


def export_for(objects, batch_id, answer=lambda name: "vertical"):
    names = objects.list(LABELING_CONTAINER, batch_id + "/")
    return write_csv_export((datastore_url("ds", f"{LABELING_CONTAINER}/{n}"), answer(n)) for n in names)


def test_labels_are_recorded_once_and_problems_reported(loop):
    _, objects, collect, select, labels = loop
    collect.collect(records(9))
    batch = select.run(now=NOW).selection
    data = export_for(objects, batch.batch_id)
    result = labels.ingest("e1.csv", data)
    assert (result.recorded, result.problems, result.pending) == (3, (), 3)
    assert not result.retrain_requested
    again = labels.ingest("renamed.csv", data)
    assert (again.recorded, again.already_known) == (0, 3)
    bad = data + b"AmlDatastore://ds/x/never-selected.png,vertical\r\nAmlDatastore://ds/x/img-000.png,purple\r\n"
    result = labels.ingest("e2.csv", bad)
    assert {p.reason.split(" ")[0] for p in result.problems} >= {"'x/never-selected.png'", "'purple'"}
    with pytest.raises(ExportFormatError):
        labels.ingest("broken.csv", b"\x00\x01")


def test_retrain_gates_and_deploys(tmp_path, loop):
    store, objects, collect, select, labels = loop
    collect.collect(records(12))
    for _ in range(4):
        batch = select.run(now=NOW).selection
        labels.ingest(batch.batch_id, export_for(
            objects, batch.batch_id, lambda n: CLASSES[int(n.split("img-")[1][:3]) % 2]))
    feats = Featurizer()
    evaluation = EvaluationSet(feats.features([image(100), image(101)]), CLASSES)
    registry = LocalModelRegistry(objects)
    trainer = LocalTrainer(objects, registry, feats, evaluation, model_name="m")
    service = RetrainService(store, trainer, LocalDeployer(store), model_name="m")
    store.upsert_model_version(ModelVersion("m", "1", CLASSES, status=ModelStatus.RETIRED))
    first = service.retrain(class_names=CLASSES)
    assert first.deployed and store.serving_version("m").version == first.candidate.version
    assert first.candidate.trained_on_labels == 12 and labels.pending() == 0
    scorer = registry.scorer(first.candidate)
    proba = scorer.predict_proba(evaluation.features)
    assert proba.argmax(axis=1).tolist() == [0, 1]
    # Accuracy and confidence on the same evaluation set, and accuracy on the training labels, stored
    # with the serving version.
    stored = store.serving_version("m").metrics
    assert stored["accuracy"] == 1.0 and stored["confidence"] == pytest.approx(proba.max(axis=1).mean(), abs=1e-6)
    assert stored["train_accuracy"] == 1.0
    # A worse candidate (the gate sees a lower metric) is recorded as rejected and not deployed.
    worse = trainer
    real = worse.train

    def sabotaged(*a, **k):
        out = real(*a, **k)
        return replace(out, metric=out.metric - 0.5)

    worse.train = sabotaged  # type: ignore[method-assign]
    second = service.retrain()
    assert not second.deployed
    assert store.get_model_version("m", second.candidate.version).status is ModelStatus.REJECTED
    assert store.serving_version("m").version == first.candidate.version


@pytest.mark.parametrize("metrics, arm", [
    ({}, "gradient_spaced"),                                    # no calibration recorded
    ({"accuracy": 0.8, "confidence": 0.6}, "gradient_spaced"),  # not overconfident on held-out labels
    ({"accuracy": 0.3, "confidence": 0.7}, "badge"),            # overconfident
    ({"accuracy": 0.3, "confidence": 0.7, "train_accuracy": 1.0}, "badge"),  # overconfident, fits its labels
    ({"accuracy": 0.5, "confidence": 0.7, "train_accuracy": 0.6}, "margin"),  # fit-limited: 0.4 > 0.1
])
def test_the_default_picks_by_the_serving_versions_calibration_on_the_stored_embeddings(loop, metrics, arm):
    from shared.core.batch import gradient_spaced
    from shared.core.peers import badge
    from shared.core.selection import CandidateFilter
    from shared.settings import Settings

    default = Settings.model_fields["strategy"].default
    assert default == "calibration_switch"

    store, _, collect, _, _ = loop
    store.upsert_model_version(ModelVersion("m", "1", CLASSES, metrics=metrics, status=ModelStatus.SERVING))
    batch = records(12)
    for n, r in enumerate(batch):
        r["embedding"] = [float(n % 3 == 0), float(n % 3 == 1), float(n % 3 == 2), 0.1 + n / 100]
    collect.collect(batch)
    select = SelectService(store, loop[1], model_name="m", strategy=default, batch_size=4,
                           window=timedelta(hours=2), seed=5)
    end = np.datetime64(NOW.replace(tzinfo=None), "us")
    cands = store.candidates(CandidateFilter("m", "1", end - np.timedelta64(2, "h"), end))
    ranked = SelectService(store, loop[1], model_name="m", strategy="margin", batch_size=4,
                           window=timedelta(hours=2), seed=5).preview(now=NOW)  # before the run takes them
    chosen = select.run(now=NOW).selection
    assert cands.embeddings is not None and cands.embeddings.shape == (12, 4)
    if arm == "badge":  # the service's generator: seeded by its seed, the version and the candidates
        idx = badge(cands.probabilities, cands.embeddings, 4, selection_rng(5, "1", cands.item_ids))
    elif arm == "margin":  # what the ranked margin strategy picks from the store
        idx = rank_order("margin", cands.item_ids, cands.probabilities)[:4]
        assert [i.item_id for i in ranked.selection.items] == cands.item_ids[idx].tolist()
    else:
        idx, _ = gradient_spaced(cands.probabilities, cands.embeddings, np.zeros((0, 4)), cands.item_ids, 4)
    assert [i.item_id for i in chosen.items] == cands.item_ids[idx].tolist()
    assert chosen.strategy == "calibration_switch"


def test_a_sampled_selection_depends_on_its_inputs_not_on_the_clock():
    ids = np.array(["a", "b", "c"])
    draw = [selection_rng(0, "1", ids).integers(1 << 30) for _ in range(2)]
    assert draw[0] == draw[1]
    assert selection_rng(0, "2", ids).integers(1 << 30) != draw[0]  # another serving version
    assert selection_rng(0, "1", ids[:2]).integers(1 << 30) != draw[0]  # other candidates
    assert selection_rng(1, "1", ids).integers(1 << 30) != draw[0]  # another seed
