"""One simulated active-learning run (a strategy and a seed) through the embedded services.

Per round: a fresh sample of the unlabeled pool is scored by the deployed ONNX model and sent to
the collect service; the select service picks a batch and copies it to the labeling input folder;
the oracle writes an Azure ML CSV export that the label service parses; the retrain service trains
from the serving checkpoint, gates and deploys; the serving model is measured on the test set.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from shared.adapters.duckdb_store import DuckDBStore
from shared.adapters.local_objects import LocalFolderObjectStore
from shared.core.records import SelectedItem, Selection
from shared.model.embedding import EMBEDDING_WIDTH
from shared.model.features import extract_features
from shared.model.items import Featurizer, encode_png, encode_vector
from shared.model.registry import LocalModelRegistry
from shared.model.scoring import score_items
from shared.model.trainer import EvaluationSet, LocalDeployer, LocalTrainer
from shared.services.collect import ITEMS_CONTAINER, CollectService
from shared.services.labels import LabelService
from shared.services.retrain import RetrainService
from shared.services.select import SelectService
from shared.sim.datasets import Dataset
from shared.sim.oracle import OracleLabeler

MODEL_NAME = "sim-classifier"
ROUND = timedelta(hours=1)
START = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class SimConfig:
    initial: int = 200
    rounds: int = 15
    batch: int = 100
    scored: int = 1000
    test_size: int = 2000
    val_size: int = 1000
    embeddings: bool = True  # log an embedding with each prediction (batch-aware strategies use them)
    embedding_width: int = EMBEDDING_WIDTH  # the model's compact embedding; 0 logs the whole feature vector


@dataclass(frozen=True)
class Prepared:
    """A dataset ready for every run: encoded item bytes, their features, splits per seed."""

    item_ids: tuple[str, ...]
    item_bytes: tuple[bytes, ...]
    keys: tuple[str, ...]  # SHA-256 of each item's bytes
    uris: tuple[str, ...]  # where each item is stored (one folder shared by every run)
    features: np.ndarray
    targets: np.ndarray
    class_names: tuple[str, ...]


@dataclass(frozen=True)
class RunResult:
    strategy: str
    seed: int
    labels: list[int]
    accuracy: list[float]
    round_seconds: list[float]
    deployed: list[bool]


def split(n: int, seed: int, config: SimConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(test, validation, pool) indices: the test set is never labeled, validation feeds the gate."""
    order = np.random.default_rng([seed, 1]).permutation(n)
    t, v = config.test_size, config.val_size
    return order[:t], order[t : t + v], order[t + v :]


def run_simulation(
    prepared: Prepared,
    strategy: str,
    seed: int,
    config: SimConfig,
    workdir: Path,
    on_round: Callable[[], None] = lambda: None,
) -> RunResult:
    rng = np.random.default_rng([seed, 2])
    test, val, pool = split(len(prepared.targets), seed, config)
    names = np.asarray(prepared.class_names)
    truth = {prepared.item_ids[i]: str(names[prepared.targets[i]]) for i in pool}

    shared_items = workdir.parent / "shared-items"
    objects = LocalFolderObjectStore(workdir / "blobs", read_roots=(shared_items,))
    store = DuckDBStore(workdir / "loop.duckdb", threads=1, random_seed=seed)  # the seed selection asks for
    featurizer = Featurizer()
    featurizer.prime(prepared.keys, prepared.features)
    uris = {prepared.item_ids[i]: prepared.uris[i] for i in pool}

    registry = LocalModelRegistry(objects)
    evaluation = EvaluationSet(prepared.features[val], tuple(names[prepared.targets[val]]))
    trainer = LocalTrainer(objects, registry, featurizer, evaluation, model_name=MODEL_NAME,
                           embedding_width=config.embedding_width or None)
    retrain = RetrainService(store, trainer, LocalDeployer(store), model_name=MODEL_NAME)
    classes = prepared.class_names
    labels = LabelService(store, model_name=MODEL_NAME, class_names=lambda: classes, retrain_threshold=1)
    collect = CollectService(store, objects, max_records=max(config.scored, config.initial))
    select = SelectService(store, objects, model_name=MODEL_NAME, strategy=strategy,
                           batch_size=config.batch, window=ROUND, seed=seed)
    oracle = OracleLabeler(objects, truth)

    # Round 0: the initial labeled set, handed to labeling like any selection, then a first model.
    initial = rng.choice(pool, size=config.initial, replace=False)
    seed_ids = [prepared.item_ids[i] for i in initial]
    seed_batch = Selection(
        batch_id="initial", strategy="initial", model_name=MODEL_NAME, model_version="",
        selected_at=START, items=tuple(SelectedItem(i, uris[i], 0.0, n) for n, i in enumerate(seed_ids)),
    )
    store.record_selection(seed_batch)
    select.hand_off(seed_batch)
    export_name, data = oracle.label_batch("initial")
    labels.ingest(export_name, data)
    retrain.retrain(class_names=classes)
    serving = store.serving_version(MODEL_NAME)
    assert serving is not None
    # The endpoint scored the initial items too: their embeddings are what "labeled" looks like.
    collect.collect(score_items(
        registry.scorer(serving), featurizer, serving, seed_ids, [uris[i] for i in seed_ids],
        [prepared.item_bytes[i] for i in initial], scored_at=START, embeddings=config.embeddings,
    ))

    test_x = prepared.features[test]
    test_y = names[prepared.targets[test]]

    def accuracy() -> float:
        serving = store.serving_version(MODEL_NAME)
        assert serving is not None
        proba = registry.scorer(serving).predict_proba(test_x)
        return float(np.mean(names[proba.argmax(axis=1)] == test_y))

    result = RunResult(strategy, seed, [store.count_labels()], [accuracy()], [], [True])
    selected = set(seed_ids)
    for r in range(1, config.rounds + 1):
        t0 = time.perf_counter()
        now = START + r * ROUND
        unlabeled = np.array([i for i in pool if prepared.item_ids[i] not in selected])
        sample = rng.choice(unlabeled, size=min(config.scored, len(unlabeled)), replace=False)
        serving = store.serving_version(MODEL_NAME)
        assert serving is not None
        ids = [prepared.item_ids[i] for i in sample]
        records = score_items(
            registry.scorer(serving), featurizer, serving, ids, [uris[i] for i in ids],
            [prepared.item_bytes[i] for i in sample], scored_at=now - timedelta(minutes=30),
            embeddings=config.embeddings,
        )
        collect.collect(records)
        outcome = select.run(now=now)
        if outcome.selection is None:
            raise RuntimeError(f"round {r}: nothing selected ({outcome.reason})")
        selected.update(item.item_id for item in outcome.selection.items)
        export_name, data = oracle.label_batch(outcome.selection.batch_id)
        labels.ingest(export_name, data)
        retrained = retrain.retrain()
        result.round_seconds.append(time.perf_counter() - t0)
        result.labels.append(store.count_labels())
        result.accuracy.append(accuracy())
        result.deployed.append(retrained.deployed)
        on_round()
    store.close()
    return result


def prepare(dataset: Dataset, items_root: Path) -> Prepared:
    """Encode and store every item once (content-addressed, in a folder every run reads) and
    compute its features with the one feature function."""
    if dataset.is_images:
        item_bytes = tuple(encode_png(im) for im in dataset.items)
        extension = ".png"
        features = np.concatenate(
            [extract_features(dataset.items[i : i + 2048]) for i in range(0, len(dataset), 2048)]
        )
    else:
        item_bytes = tuple(encode_vector(v) for v in dataset.items)
        extension = ".npy"
        features = dataset.items.astype(np.float32)
    ids = tuple(f"{dataset.name}-{i:06d}" for i in range(len(dataset)))
    keys = tuple(hashlib.sha256(b).hexdigest() for b in item_bytes)
    store = LocalFolderObjectStore(items_root)
    uris = tuple(store.put(ITEMS_CONTAINER, f"sha256/{k}{extension}", b) for k, b in zip(keys, item_bytes, strict=True))
    return Prepared(ids, item_bytes, keys, uris, features, dataset.labels, dataset.class_names)
