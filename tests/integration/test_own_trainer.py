"""Issue 21, part 3: a team's own training step (tests/support/own_trainer.py, a scikit-learn MLP) swapped in
by the one setting AL_TRAINING_COMMAND, run through the contract (docs/your-model.md) and the orchestrator's
retraining steps to a deployed version that scores and whose results the collector takes; a folder that
breaks the contract is refused with a message naming what is wrong, and nothing is deployed."""

from __future__ import annotations

import base64
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from shared.adapters.duckdb_store import DuckDBStore
from shared.adapters.local_objects import LocalFolderObjectStore
from shared.core.exports import datastore_url, write_csv_export
from shared.core.records import ModelStatus, ModelVersion
from shared.errors import ConfigurationError, TrainingError
from shared.model.items import Featurizer, encode_png
from shared.model.registry import CONTAINER, LocalModelRegistry
from shared.model.scoring import score_items
from shared.model.trainer import EvaluationSet, LocalDeployer, LocalTrainer, configured_command
from shared.services.collect import CollectService
from shared.services.labels import LabelService
from shared.services.retrain import RetrainService
from shared.services.select import LABELING_CONTAINER, SelectService
from shared.settings import load_settings
from shared.training import contract
from tests.support import own_trainer

ROOT = Path(__file__).resolve().parents[2]
CLASSES = ("vertical", "horizontal")
NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)
OWN = "python -m tests.support.own_trainer"


def stripes(i: int) -> bytes:
    img = np.zeros((16, 16), np.uint8)
    sl = slice(i % 3, None, 4)
    if i % 2 == 0:
        img[:, sl] = 200 + i % 50
    else:
        img[sl, :] = 200 + i % 50
    return encode_png(img)


def records(n: int, *, start: int = 0) -> list[dict]:
    return [{"item_id": f"img-{i:03d}", "item_base64": base64.b64encode(stripes(i)).decode(),
             "model_name": "m", "model_version": "1", "probabilities": [0.5 + 0.02 * (i % 9), 0.5 - 0.02 * (i % 9)],
             "predicted_label": "vertical", "scored_at": (NOW - timedelta(minutes=10)).isoformat()}
            for i in range(start, start + n)]


@pytest.fixture
def loop(tmp_path):
    store = DuckDBStore(tmp_path / "db.duckdb")
    objects = LocalFolderObjectStore(tmp_path / "blobs")
    store.upsert_model_version(ModelVersion("m", "1", CLASSES, status=ModelStatus.SERVING))
    collect = CollectService(store, objects, max_item_bytes=10_000)
    select = SelectService(store, objects, model_name="m", strategy="margin", batch_size=6,
                           window=timedelta(hours=2))
    labels = LabelService(store, model_name="m", class_names=lambda: CLASSES, retrain_threshold=4)
    evaluation = EvaluationSet(Featurizer().features([stripes(100 + i) for i in range(6)]), CLASSES * 3)
    return store, objects, collect, select, labels, evaluation


def label_rounds(loop, rounds: int) -> None:
    """Select ``rounds`` batches and answer them truthfully (even ids vertical, odd horizontal)."""
    _, objects, _, select, labels, _ = loop
    for _ in range(rounds):
        batch = select.run(now=NOW).selection
        names = objects.list(LABELING_CONTAINER, batch.batch_id + "/")
        labels.ingest(batch.batch_id, write_csv_export(
            (datastore_url("ds", f"{LABELING_CONTAINER}/{n}"), CLASSES[int(n.split("img-")[1][:3]) % 2])
            for n in names))


@pytest.fixture
def own_command(monkeypatch):
    """The one setting that swaps the training step; the subprocess imports tests.support from the repo."""
    monkeypatch.setenv("AL_TRAINING_COMMAND", OWN)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    monkeypatch.chdir(ROOT)


def test_an_own_trainer_goes_through_the_contract_and_the_orchestrator_to_a_serving_version(loop, own_command):
    store, objects, collect, _, labels, evaluation = loop
    collect.collect(records(24))
    label_rounds(loop, 3)
    registry = LocalModelRegistry(objects)
    trainer = LocalTrainer(objects, registry, Featurizer(), evaluation, model_name="m", timeout_s=120)  # the setting
    service = RetrainService(store, trainer, LocalDeployer(store), model_name="m", objects=objects)
    store.upsert_model_version(ModelVersion("m", "1", CLASSES, status=ModelStatus.RETIRED))  # no checkpoint yet

    first = service.retrain(class_names=CLASSES)
    serving = store.serving_version("m")
    assert first.deployed and serving.version == first.candidate.version == "1"
    assert labels.pending() == 0 and serving.trained_on_labels == 18
    # The registry holds the trainer's folder as it made it (its own checkpoint file too), the metrics its
    # metrics.json reported are the serving version's, and the gate compared the candidate's figure.
    files = {n.split("/", 2)[2] for n in objects.list(CONTAINER, "m/1/")}
    assert files == {"model.onnx", "meta.json", "metrics.json", "mlp.npz"}
    reported = json.loads(objects.get(CONTAINER, "m/1/metrics.json"))
    assert reported["trainer"] == "own-mlp" and reported["baseline_accuracy"] is None
    assert dict(serving.metrics) == {k: reported[k] for k in ("accuracy", "confidence", "train_accuracy")}
    assert json.loads(objects.get(CONTAINER, "m/1/meta.json"))["trainer"] == "own-mlp"

    # The serving version scores through the path score.py and the simulation use; the collector takes it.
    scorer = registry.scorer(serving)
    assert scorer.has_embedding
    recs = score_items(scorer, Featurizer(), serving, [f"new-{i}" for i in range(4)], [""] * 4,
                       [stripes(200 + i) for i in range(4)], scored_at=NOW - timedelta(minutes=5))
    assert [len(r["embedding"]) for r in recs] == [own_trainer.HIDDEN] * 4
    assert [r["predicted_label"] for r in recs] == ["vertical", "horizontal", "vertical", "horizontal"]
    for r, i in zip(recs, range(4), strict=True):
        del r["item_uri"]
        r["item_base64"] = base64.b64encode(stripes(200 + i)).decode()
    assert collect.collect(recs).accepted == 4

    # Next round: the checkpoint folder is the serving version's folder; the trainer scores it on its
    # held-out split and the gate compares the two.
    collect.collect(records(12, start=24))
    label_rounds(loop, 1)
    second = service.retrain()
    now = json.loads(objects.get(CONTAINER, "m/2/metrics.json"))
    assert second.candidate.version == "2" and now["baseline_accuracy"] is not None
    assert second.deployed == (now["accuracy"] >= now["baseline_accuracy"]), second.decision.reason
    assert store.serving_version("m").version == ("2" if second.deployed else "1")


def test_a_folder_that_breaks_the_contract_is_refused_and_nothing_is_deployed(loop):
    store, objects, collect, _, labels, evaluation = loop
    collect.collect(records(12))
    label_rounds(loop, 2)
    registry = LocalModelRegistry(objects)
    store.upsert_model_version(ModelVersion("m", "1", CLASSES, status=ModelStatus.SERVING,
                                            metrics={"accuracy": 0.5}))

    def sloppy(manifest, out, *, class_names, checkpoint, items, metric):
        own_trainer.train(manifest, out, class_names=class_names, checkpoint=checkpoint, items=items)
        (out / "metrics.json").unlink()
        (out / "meta.json").write_text(json.dumps({"class_names": list(reversed(class_names))}))

    trainer = LocalTrainer(objects, registry, Featurizer(), evaluation, model_name="m", command=sloppy)
    service = RetrainService(store, trainer, LocalDeployer(store), model_name="m", objects=objects)
    with pytest.raises(TrainingError) as info:
        service.retrain()
    message = str(info.value)
    assert "breaks the training contract" in message and "metrics.json is missing" in message
    assert "class_names ['horizontal', 'vertical'] differ" in message
    assert store.serving_version("m").version == "1" and objects.list(CONTAINER) == []
    assert labels.pending() == 12  # the labels wait for the next round


def test_the_contract_names_each_breach(tmp_path):
    good = tmp_path / "good"
    manifest = contract.write_manifest(tmp_path / "m.jsonl", [
        (f"i{i}", (tmp_path / f"{i}.png").as_uri(), CLASSES[i % 2]) for i in range(8)])
    for i in range(8):
        (tmp_path / f"{i}.png").write_bytes(stripes(i))
    own_trainer.train(manifest, good, class_names=list(CLASSES), checkpoint=None, items=None)
    dim = Featurizer().features([stripes(0)]).shape[1]
    found = contract.check_model_folder(good, class_names=CLASSES, feature_dim=dim)
    assert found.embedding_width == own_trainer.HIDDEN and found.baseline("accuracy") is None

    def broken(name: str, **change: object) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        for f in good.iterdir():
            (folder / f.name).write_bytes(f.read_bytes())
        metrics = {**json.loads((good / "metrics.json").read_text()), **change}
        (folder / "metrics.json").write_text(json.dumps(metrics))
        return folder

    with pytest.raises(contract.ContractError, match=r"'confidence' is 1.5, not a number in \[0, 1\]"):
        contract.check_model_folder(broken("range", confidence=1.5), class_names=CLASSES, feature_dim=dim)
    with pytest.raises(contract.ContractError, match=r"takes \d+ features; the loop's featurizer makes 7"):
        contract.check_model_folder(good, class_names=CLASSES, feature_dim=7)
    with pytest.raises(contract.ContractError, match=r"is \(2, 2\) for 2 rows, not \(2, 3\)"):
        contract.check_model_folder(good, class_names=(*CLASSES, "diagonal"), feature_dim=dim)
    not_onnx = broken("onnx")
    (not_onnx / "model.onnx").write_bytes(b"not a model")
    with pytest.raises(contract.ContractError, match="does not open with onnxruntime"):
        contract.check_model_folder(not_onnx, class_names=CLASSES, feature_dim=dim)
    assert contract.main(["check", str(good), "--classes", json.dumps(CLASSES)]) == 0
    assert contract.main(["check", str(not_onnx), "--classes", json.dumps(CLASSES)]) == 2


def test_the_projects_own_trainer_obeys_the_contract_and_the_schemas_say_what_the_checks_check(tmp_path):
    import jsonschema

    from shared.training.train import train

    rows = [(f"i{i}", (tmp_path / f"{i}.png").as_uri(), CLASSES[i % 2]) for i in range(10)]
    for i in range(10):
        (tmp_path / f"{i}.png").write_bytes(stripes(i))
    manifest = contract.write_manifest(tmp_path / "m.jsonl", rows)
    train(manifest, tmp_path / "out", class_names=list(CLASSES), checkpoint=None, items=None)
    found = contract.check_model_folder(tmp_path / "out", class_names=CLASSES)
    assert found.embedding_width == 64
    for line in manifest.read_text().splitlines():
        jsonschema.validate(json.loads(line), contract.MANIFEST_LINE_SCHEMA)
    jsonschema.validate(found.metrics, contract.metrics_schema())
    for bad in ({"image_url": "x", "label": "a"}, {"item_id": "", "image_url": "x", "label": "a"}):
        assert contract.manifest_line_problems(bad)
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, contract.MANIFEST_LINE_SCHEMA)
    bad_metrics = {"accuracy": 1.2, "confidence": 0.5}
    assert len(contract.metrics_problems(bad_metrics)) == 2
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad_metrics, contract.metrics_schema())


def test_the_setting_is_checked_and_the_default_is_the_projects_trainer(monkeypatch):
    monkeypatch.delenv("AL_TRAINING_COMMAND", raising=False)
    assert load_settings().training_command == configured_command() == contract.DEFAULT_COMMAND
    for bad, why in (("", "AL_TRAINING_COMMAND"), ("python -m x --out y", "the loop appends them"),
                     ("python 'unclosed", "shell-quoted")):
        with pytest.raises(ConfigurationError, match=why):
            load_settings(training_command=bad)
        monkeypatch.setenv("AL_TRAINING_COMMAND", bad)
        with pytest.raises(ConfigurationError, match="AL_TRAINING_COMMAND"):
            configured_command()
    monkeypatch.setenv("AL_TRAINING_COMMAND", f"  {OWN} ")
    assert configured_command() == OWN


def test_a_training_command_that_fails_reports_its_error(tmp_path, loop):
    store, objects, collect, _, _, evaluation = loop
    collect.collect(records(6))
    label_rounds(loop, 1)
    trainer = LocalTrainer(objects, LocalModelRegistry(objects), Featurizer(), evaluation, model_name="m",
                           command="python -c 'import sys; sys.exit(\"no GPU here\")'")
    with pytest.raises(TrainingError, match="exited with 1: no GPU here"):
        RetrainService(store, trainer, LocalDeployer(store), model_name="m").retrain()
    assert objects.list(CONTAINER) == []
