"""The Azure loop end to end: four function apps in four processes, sharing state only through Azure
services (issue 10's proof; ``make e2e``).

Each app is the product's ``function_app`` in its own OS process (the mini Functions host,
``tests/support/funchost.py``), with its own ``AL_STAGES`` and its own empty ``AL_DATA_DIR``, on the
Azure backend. They share nothing but:

* Azurite — Blob (items, landing, labeling input, exports, manifests, the selection lease), Queue
  (retrain requests; the ADX stand-in's ingestion queue) and the Durable task hub;
* the ADX stand-in — the Kusto REST API the real ``azure-kusto-data``/``-ingest`` clients speak,
  running the shipped KQL through duckdb-kql;
* the Data Labeling stand-in (``exportLabels`` over ARM HTTP; its labelers are an oracle), the
  GitHub stand-in (its workflow run trains with ``shared/training`` and registers the model), and
  the Azure ML workspace as a fake at the adapter port, kept in Azurite.

Three rounds on a glyph subset. Each: the scoring script (with the monitoring client) scores a fresh
sample and posts to the collector app; the selector app's timer selects; the label app's timer asks
for an export, and the export's Event Grid ``BlobCreated`` event reaches its blob trigger; the label
app queues a retrain request; the dispatch app's queue trigger starts the Durable orchestrator, which
prepares the manifest and data asset, dispatches the workflow, waits, gates, deploys and records the
new serving version — which the next round's scoring and selection use. Faults, in the same run: the
export event delivered twice (round 1), the dispatch process killed mid-orchestration and restarted
(round 2), ADX down while the collector takes a batch (round 3).

The report is ``runs/e2e/azure-loop.json``.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from shared.backends import Backend
from shared.model.items import Featurizer, encode_png
from shared.model.registry import OnnxScorer
from shared.services.bootstrap import bootstrap
from shared.settings import load_settings
from shared.sim.glyphs import GLYPH_CLASSES, render_glyphs67
from shared.training.train import train
from tests.support.aml_standin import LabelingStandIn, StandinAzureML
from tests.support.credentials import StaticTokenCredential
from tests.support.github_standin import GitHubStandIn

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
REPORT = ROOT / "runs" / "e2e" / "azure-loop.json"
MODEL = "glyphs"
CLASSES = 10          # the first ten glyph classes (digits)
PER_CLASS = 80        # images rendered per class
INITIAL = 50          # labels the first model is trained on (round 0)
SCORED = 150          # fresh items scored per round
BATCH = 50            # items selected per round = the retrain threshold
ROUNDS = 3
TEST_ITEMS = 150
STAGES = ("scoring_collector", "selector_timer", "label_export_trigger", "github_dispatch")
TOKEN = "ghp-e2e"
JOB = "glyphs-labeling"


@dataclass
class Glyphs:
    ids: list[str]
    pngs: list[bytes]
    labels: list[str]
    images: np.ndarray

    @classmethod
    def render(cls) -> Glyphs:
        images, labels = render_glyphs67(PER_CLASS, seed=7)
        keep = labels < CLASSES
        images, labels = images[keep], labels[keep]
        return cls([f"g{i:04d}" for i in range(len(labels))], [encode_png(im) for im in images],
                   [GLYPH_CLASSES[int(k)] for k in labels], images)

    @property
    def class_names(self) -> list[str]:
        return list(GLYPH_CLASSES[:CLASSES])


@dataclass
class Loop:
    """The running system: stand-ins, the four app processes, and what the test observed."""

    tmp: Path
    azurite: Any
    adx: Any
    aml: StandinAzureML
    labeling: LabelingStandIn
    github: GitHubStandIn
    data: Glyphs
    hosts: dict[str, Any] = field(default_factory=dict)
    data_dirs: dict[str, Path] = field(default_factory=dict)
    pids: dict[str, list[int]] = field(default_factory=dict)

    # --- apps -----------------------------------------------------------------------------------
    def env(self, stage: str) -> dict[str, str]:
        conn = self.azurite.connection_string
        return {
            "AL_BACKEND": "azure", "AL_STAGES": stage, "AL_DATA_DIR": str(self.data_dirs[stage]),
            "AL_MODEL_NAME": MODEL, "AL_BATCH_SIZE": str(BATCH),  # the default strategy (embeddings logged)
            "AL_RETRAIN_THRESHOLD": str(BATCH), "AL_WINDOW_HOURS": "24", "AL_GATE_TOLERANCE": "0.1",
            "AL_STORAGE_CONNECTION_STRING": conn, "AL_STORAGE": conn, "AL_EXPORTS_STORAGE": conn,
            "AzureWebJobsStorage": conn,
            "AL_ADX_CLUSTER_URI": self.adx.url, "AL_ADX_INGEST_URI": self.adx.url, "AL_ADX_DATABASE": "activelearning",
            "AL_EXPORTS_CONTAINER": "exports", "AL_EXPORTS_PREFIX": "Labeling/export/",
            "AL_LABELING_CONTAINER": "labeling-input", "AL_RETRAIN_QUEUE": "retrain-requests",
            "AL_SELECTION_SCHEDULE": "0 0 * * * *", "AL_EXPORT_SCHEDULE": "0 */30 * * * *",
            "AL_AML_SUBSCRIPTION_ID": "sub", "AL_AML_RESOURCE_GROUP": "rg", "AL_AML_WORKSPACE": "ws",
            "AL_AML_LABELING_JOB": JOB, "AL_AML_ARM_URL": self.labeling.url, "AL_AML_ENDPOINT": "glyphs-ep",
            "AL_AML_DEPLOYMENT": "blue", "AL_AML_ITEMS_DATASTORE": "al_items",
            "AL_GITHUB_REPOSITORY": "acme/loop", "AL_GITHUB_TOKEN": TOKEN, "AL_GITHUB_API_URL": self.github.url,
            "AL_POLL_INITIAL_SECONDS": "1", "AL_POLL_MAX_SECONDS": "2", "AL_ACTIVITY_RETRY_FIRST_SECONDS": "1",
            "AL_BLOB_TRIGGER_SOURCE": "EventGrid",
        }

    def start(self, stage: str) -> Any:
        from tests.support.funchost_client import start_host

        host = start_host(self.env(stage), task_hub="e2ehub", app="tests.support.e2e_app:app")
        self.hosts[stage] = host
        self.pids.setdefault(stage, []).append(host.pid)
        return host

    # --- the Azure-side reads the report needs ----------------------------------------------------
    def serving(self) -> tuple[str, list[str]]:
        doc = self.aml.deployment()
        assert doc is not None, "nothing is deployed"
        version = doc["model"].rsplit(":", 1)[1]
        return version, self.data.class_names

    def model_files(self, version: str) -> Path:
        """The deployed model as Azure ML mounts it: ``.../azureml-models/<name>/<version>/model``."""
        mount = self.tmp / "endpoint" / "azureml-models" / MODEL / version
        self.aml.download_model(MODEL, version, mount / "model")
        return mount

    def accuracy(self, version: str, test: list[int]) -> float:
        folder = self.model_files(version) / "model"
        scorer = OnnxScorer((folder / "model.onnx").read_bytes(), tuple(self.data.class_names))
        proba = scorer.predict_proba(Featurizer().features([self.data.pngs[i] for i in test]))
        truth = [self.data.class_names.index(self.data.labels[i]) for i in test]
        return float(np.mean(proba.argmax(axis=1) == np.asarray(truth)))

    def score(self, items: list[int]) -> None:
        """The endpoint: ``scoring/score.py`` on the deployed version, its monitoring client posting
        every result to the collector app."""
        version, _ = self.serving()
        os.environ["AZUREML_MODEL_DIR"] = str(self.model_files(version))
        os.environ["AL_COLLECTOR_URL"] = f"{self.hosts['scoring_collector'].url}/api/predictions"
        spec = importlib.util.spec_from_file_location("score_e2e", ROOT / "scoring" / "score.py")
        assert spec and spec.loader
        script = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = script  # dataclasses look their module up
        spec.loader.exec_module(script)
        script.init()
        try:
            for start in range(0, len(items), 60):
                chunk = items[start:start + 60]
                body = {"items": [{"item_id": self.data.ids[i], "data": base64.b64encode(self.data.pngs[i]).decode()}
                                  for i in chunk], "embeddings": True}
                answer = script.run(json.dumps(body))
                assert "error" not in answer, answer
            assert script._endpoint.client.flush(timeout=60), "the monitoring client could not deliver"
            assert script._endpoint.client.stats.dropped == 0
        finally:
            script.shutdown()

    def retrain_status(self) -> dict[str, Any]:
        resp = self.hosts["github_dispatch"].get(f"/api/retrain/retrain-{MODEL}")
        return resp.json() if resp.status_code == 200 else {}

    def wait_for_training(self, round_no: int, *, kill_mid_way: bool = False, timeout: float = 180) -> dict[str, Any]:
        """Until the orchestration of this round has deployed or rejected its candidate."""
        deadline = time.monotonic() + timeout
        killed = False
        while time.monotonic() < deadline:
            if kill_mid_way and not killed and len(self.github.dispatches) >= round_no:
                # GitHub has the run, but holds its answer: the host dies inside the dispatch activity,
                # before its result is in the history, so the restarted host runs the activity again
                # (Durable's at-least-once) — and must not start a second training.
                self.hosts["github_dispatch"].kill()  # SIGKILL: no chance to tidy up
                self.github.dispatch_delay = 0.0
                self.start("github_dispatch")
                killed = True
            st = self.retrain_status()
            if st.get("runtime_status") == "Completed" and len(self.github.dispatches) >= round_no:
                output = st.get("output") or {}
                if output.get("correlation_id") == self.github.dispatches[round_no - 1]["correlation_id"]:
                    assert not kill_mid_way or killed, "the orchestration finished before it could be killed"
                    return output
            time.sleep(0.5)
        raise AssertionError(f"round {round_no}: the retraining did not finish: {self.retrain_status()}")


@pytest.fixture(scope="module")
def loop(azurite, tmp_path_factory):
    from tests.support.adx_standin import AdxStandIn

    tmp = tmp_path_factory.mktemp("azure-loop")
    data = Glyphs.render()
    truth = dict(zip(data.ids, data.labels, strict=True))
    aml = StandinAzureML(azurite.connection_string)
    with AdxStandIn(azurite) as adx, \
            LabelingStandIn(azurite.connection_string, job=JOB, oracle=truth.get, labeling_container="labeling-input",
                            exports_container="exports") as labeling, \
            GitHubStandIn(azurite.connection_string, aml, repository="acme/loop", workflow="train.yml", token=TOKEN,
                          datastores={"al_items": "items"}, run_seconds=3) as github:
        system = Loop(tmp, azurite, adx, aml, labeling, github, data)
        for stage in STAGES:
            system.data_dirs[stage] = tmp / "apps" / stage
            system.data_dirs[stage].mkdir(parents=True)
        try:
            yield system
        finally:
            for host in system.hosts.values():
                host.stop()


def local_files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_three_rounds_of_the_azure_loop_across_four_processes(loop):
    data = loop.data
    rng = np.random.default_rng(0)
    order = rng.permutation(len(data.ids)).tolist()
    test_items, initial, pool = order[:TEST_ITEMS], order[TEST_ITEMS:TEST_ITEMS + INITIAL], order[TEST_ITEMS + INITIAL:]

    # Round 0: the first model, trained by the project's trainer and bootstrapped (registered, deployed,
    # recorded in ADX as serving) — what `al bootstrap --model-dir` does.
    first = loop.tmp / "first"
    first.mkdir()
    for i in initial:
        (first / f"{data.ids[i]}.png").write_bytes(data.pngs[i])
    (first / "manifest.jsonl").write_text("".join(json.dumps({"image_url": str(first / f"{data.ids[i]}.png"),
                                                             "label": data.labels[i], "item_id": data.ids[i]}) + "\n"
                                                  for i in initial))
    train(first / "manifest.jsonl", first / "model", class_names=data.class_names, checkpoint=None, items=None)
    parent = load_settings(backend="azure", model_name=MODEL, adx_cluster_uri=loop.adx.url,
                           storage_connection_string=loop.azurite.connection_string)
    store = Backend(parent, credential=StaticTokenCredential()).store
    mv = bootstrap(store, loop.aml, model_name=MODEL, model_dir=first / "model", deployment={}, poll_s=0.2)
    assert store.serving_version(MODEL).version == mv.version
    rounds = [{"serving_version": mv.version, "selected": 0, "handed_off": 0, "labels_recorded": 0,
               "trained_on_labels": 0, "gate": "passed", "test_accuracy": loop.accuracy(mv.version, test_items)}]

    for stage in STAGES:
        loop.start(stage)
    faults: dict[str, str] = {}
    selected_under: dict[str, str] = {}

    for r in range(1, ROUNDS + 1):
        serving_before, _ = loop.serving()
        sample = pool[(r - 1) * SCORED: r * SCORED]
        if r == 3:  # fault: ADX goes down while the collector takes batches (it knows this version already)
            loop.score(sample[:10])
            loop.adx.wait_for_queued()
            loop.adx.down = True
            loop.score(sample[10:])
            # Every post got its 202 (score() checks the client delivered all): each batch was landed in
            # Blob first, then either its queued ingestion went into ADX's queue, which holds it while
            # ADX is down, or the ingestion call failed and the batch waits under landing/pending/.
            pending = _pending_landings(loop)
            loop.adx.down = False
            if pending:
                resp = loop.hosts["scoring_collector"].post("/api/predictions/reingest", json={})
                assert resp.status_code == 200, resp.text
            loop.adx.wait_for_queued()
            stored = {row["ItemId"] for row in loop.adx.rows("Predictions")}
            survived = {data.ids[i] for i in sample} <= stored and not _pending_landings(loop)
            faults["adx_down_during_collect"] = "survived" if survived else "failed"
        else:
            loop.score(sample)
        loop.adx.wait_for_queued()
        scored = {row["ItemId"] for row in loop.adx.rows("Predictions") if row["ModelVersion"] == serving_before}
        assert {data.ids[i] for i in sample} <= scored, "every scored item reached ADX"

        ran = loop.hosts["selector_timer"].invoke("selection_timer", "{}")
        assert ran.status_code == 200, ran.text
        batch = [row for row in loop.adx.rows("Selections") if not row["HandedOff"]
                 and row["ModelVersion"] == serving_before]
        batch_ids = {row["BatchId"] for row in batch}
        assert len(batch_ids) == 1 and len(batch) == BATCH, batch_ids
        (batch_id,) = batch_ids
        selected_under[batch_id] = serving_before
        handed = [row for row in loop.adx.rows("Selections") if row["HandedOff"] and row["BatchId"] == batch_id]

        labels_before = len(loop.adx.rows("Labels"))
        asked = loop.hosts["label_export_trigger"].invoke("labels_request_export", "{}")
        assert asked.status_code == 200, asked.text
        export = loop.labeling.exports[-1]
        deliveries = 2 if r == 1 else 1  # fault: Event Grid delivers the same event twice
        for _ in range(deliveries):
            got = loop.hosts["label_export_trigger"].blob_created("exports", export, loop.labeling.blob_url(export))
            assert got.status_code == 200, got.text
        recorded = len(loop.adx.rows("Labels")) - labels_before
        if r == 1:
            faults["export_event_delivered_twice"] = "survived" if recorded == BATCH else "failed"

        if r == 2:
            loop.github.dispatch_delay = 5.0
        output = loop.wait_for_training(r, kill_mid_way=(r == 2))
        if r == 2:
            faults["dispatch_killed_mid_orchestration"] = "survived" if len(loop.github.dispatches) == 2 else "failed"
        version, _ = loop.serving()
        serving = store.serving_version(MODEL)
        rounds.append({
            "serving_version": serving.version, "selected": len(batch), "handed_off": len(handed),
            "labels_recorded": recorded, "trained_on_labels": serving.trained_on_labels,
            "gate": "passed" if output.get("outcome") == "deployed" else "rejected",
            "test_accuracy": loop.accuracy(serving.version, test_items),
        })
        assert output.get("outcome") == "deployed", (output, [run["log"] for run in loop.github.runs.values()])
        assert serving.version == version != serving_before, "a new version serves, in the endpoint and in ADX"

    # --- the facts --------------------------------------------------------------------------------
    apps = {stage: {"pid": loop.pids[stage][-1], "pids": loop.pids[stage], "backend": "azure",
                    "local_files": local_files(loop.data_dirs[stage])} for stage in STAGES}
    report = {"apps": apps, "rounds": rounds, "faults": faults}
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps(report, indent=1))

    assert len({a["pid"] for a in apps.values()}) == 4
    assert all(a["local_files"] == [] for a in apps.values()), apps
    selections = [row for row in loop.adx.rows("Selections") if not row["HandedOff"]]
    assert {row["Strategy"] for row in selections} == {"calibration_switch"}  # the default, on logged embeddings
    assert {len(row["Embedding"] or []) for row in loop.adx.rows("Predictions")} == {64}
    per_item = Counter(row["ItemId"] for row in selections)
    assert len(per_item) == ROUNDS * BATCH and set(per_item.values()) == {1}, "no item selected twice"
    labels = Counter(row["ItemId"] for row in loop.adx.rows("Labels"))
    assert set(labels) == set(per_item) and set(labels.values()) == {1}, "every selected item labeled exactly once"
    assert all(row["Label"] == dict(zip(data.ids, data.labels, strict=True))[row["ItemId"]]
               for row in loop.adx.rows("Labels"))
    assert len(loop.github.dispatches) == ROUNDS, "no training twice"
    versions = [r["serving_version"] for r in rounds]
    assert len(set(versions)) == ROUNDS + 1, versions
    # Every retrained version reached ADX with the figures the default reads: held-out accuracy and
    # confidence, training accuracy.
    trained = {row["Version"]: row["Metrics"] for row in loop.adx.rows("ModelVersions")
               if row["Version"] in versions[1:]}
    assert set(trained) == set(versions[1:]), trained
    assert all({"accuracy", "confidence", "train_accuracy"} <= set(m or {}) for m in trained.values()), trained
    used = [selected_under[b] for b in sorted(selected_under)]
    assert used == versions[:ROUNDS], "each round selected under the version the previous round deployed"
    assert rounds[-1]["trained_on_labels"] == ROUNDS * BATCH
    assert faults and set(faults.values()) == {"survived"}, faults
    assert rounds[-1]["test_accuracy"] > rounds[0]["test_accuracy"], rounds


def _pending_landings(loop: Loop) -> list[str]:
    from azure.storage.blob import BlobServiceClient

    container = BlobServiceClient.from_connection_string(loop.azurite.connection_string).get_container_client("landing")
    return [b.name for b in container.list_blobs(name_starts_with="pending/")]
