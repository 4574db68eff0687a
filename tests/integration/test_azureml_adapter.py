"""The Azure ML adapter at the MLClient boundary (a small fake with real azure-ai-ml entities), the
Azure activities on a real DuckDB store and folder, the training job's entry point, and the workflow
and job YAML checked against what the client sends."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from azure.ai.ml.entities import ManagedOnlineDeployment, Model

from shared.adapters.azureml import AzureMLAdapter
from shared.adapters.github import WorkflowRun
from shared.backends import Backend
from shared.core.orchestration import TAG_CORRELATION
from shared.core.records import Label, ModelStatus, ModelVersion, SelectedItem, Selection
from shared.errors import NotFoundError, TrainingError
from shared.model.items import encode_vector
from shared.services.retrain import WORKFLOW_INPUTS, AzureActivities, azureml_url
from shared.settings import load_settings
from shared.training import register as reg
from shared.training import train as trn
from tests.support.credentials import StaticTokenCredential

ROOT = Path(__file__).resolve().parents[2]


class ResourceNotFoundError(Exception):
    """Stands in for azure.core.exceptions.ResourceNotFoundError (matched by name)."""


def set_state(deployment: ManagedOnlineDeployment, state: str) -> None:
    """What the service's answer sets (the property is read-only for callers)."""
    deployment._provisioning_state = state


class FakeMLClient:
    """The three operation groups the adapter uses, holding real azure-ai-ml entities."""

    def __init__(self) -> None:
        self.created_data: list = []
        self.model_versions: list[Model] = []
        self.deployment = ManagedOnlineDeployment(name="blue", endpoint_name="ep", model="azureml:m:6",
                                                  instance_type="Standard_DS3_v2", instance_count=1)
        set_state(self.deployment, "Succeeded")
        self.updates: list[str] = []
        self.data = SimpleNamespace(create_or_update=self._create_data)
        self.models = SimpleNamespace(list=self._list_models, create_or_update=self._create_model)
        self.online_deployments = SimpleNamespace(get=self._get_deployment, begin_create_or_update=self._update)

    def _create_data(self, asset):
        self.created_data.append(asset)
        return asset

    def _list_models(self, name: str):
        found = [m for m in self.model_versions if m.name == name]
        if not found:
            raise ResourceNotFoundError(name)
        return iter(found)

    def _create_model(self, model: Model) -> Model:
        model.version = str(len(self.model_versions) + 1)
        self.model_versions.append(model)
        return model

    def _get_deployment(self, *, name: str, endpoint_name: str):
        if (name, endpoint_name) != ("blue", "ep"):
            raise ResourceNotFoundError(name)
        return self.deployment

    def _update(self, deployment):
        self.updates.append(deployment.model)
        set_state(self.deployment, "Updating")
        return SimpleNamespace(result=lambda: deployment)


@pytest.fixture
def ml() -> FakeMLClient:
    return FakeMLClient()


@pytest.fixture
def adapter(ml) -> AzureMLAdapter:
    return AzureMLAdapter(ml, endpoint="ep", deployment="blue")


def test_register_manifest_makes_a_uri_file_data_asset(adapter, ml):
    ref = adapter.register_manifest(name="m-manifest", version="abc", uri="https://a.blob.core.windows.net/m/x.jsonl")
    assert ref == "azureml:m-manifest:abc"
    (asset,) = ml.created_data
    assert asset.type == "uri_file" and asset.path == "https://a.blob.core.windows.net/m/x.jsonl"


def test_find_model_by_correlation_tag_and_reads_its_metrics(adapter, ml):
    assert adapter.find_model("m", "cid", metric="accuracy") is None  # no model of that name yet
    ml.model_versions += [Model(name="m", version="6", tags={TAG_CORRELATION: "old"}),
                          Model(name="m", version="7", tags={TAG_CORRELATION: "cid", "al_accuracy": "0.91",
                                                            "al_baseline_accuracy": "0.88", "al_confidence": "0.95",
                                                            "al_train_accuracy": "0.99"})]
    found = adapter.find_model("m", "cid", metric="accuracy")
    assert (found.version, found.metric, found.baseline_metric, found.confidence, found.train_accuracy) == \
        ("7", 0.91, 0.88, 0.95, 0.99)
    assert adapter.find_model("m", "nope", metric="accuracy") is None


def test_deploy_updates_the_deployment_and_reports_until_it_serves_the_version(adapter, ml):
    adapter.start_deploy("m", "7")
    assert ml.updates == ["azureml:m:7"]
    assert adapter.deploy_state("m", "7")["state"] == "Updating"
    set_state(ml.deployment, "Succeeded")
    ml.deployment.model = "/subscriptions/s/resourceGroups/g/providers/x/workspaces/w/models/m/versions/6"
    assert adapter.deploy_state("m", "7")["state"] == "Updating"  # still the old version
    ml.deployment.model = "/subscriptions/s/resourceGroups/g/providers/x/workspaces/w/models/m/versions/7"
    assert adapter.deploy_state("m", "7")["state"] == "Succeeded"
    set_state(ml.deployment, "Failed")
    assert adapter.deploy_state("m", "7")["state"] == "Failed"


def test_a_missing_deployment_says_what_to_create(ml):
    with pytest.raises(NotFoundError, match="deployment 'green' of endpoint 'ep' not found"):
        AzureMLAdapter(ml, endpoint="ep", deployment="green").deploy_state("m", "1")


def test_azureml_url_maps_blob_urls_onto_the_datastore():
    assert azureml_url("https://a.blob.core.windows.net/items/ab/cd.png", "items") == \
        "azureml://datastores/items/paths/ab/cd.png"
    assert azureml_url("file:///x/y.png", "items") == "file:///x/y.png"
    assert azureml_url("https://a.blob.core.windows.net/items/x.png", "") == "https://a.blob.core.windows.net/items/x.png"
    assert azureml_url("http://127.0.0.1:10000/devstoreaccount1/items/sha256/ab", "items") == \
        "azureml://datastores/items/paths/sha256/ab"  # the emulator's path-style URL


class FakeGitHub:
    def __init__(self) -> None:
        self.dispatched: list[dict] = []

    def dispatch_workflow(self, workflow, *, ref, inputs, correlation_id):
        self.dispatched.append({"workflow": workflow, "ref": ref, "inputs": dict(inputs), "cid": correlation_id})
        return WorkflowRun(55, "api", "https://example.invalid/runs/55")

    def find_run(self, workflow, correlation_id, *, since):
        found = [d for d in self.dispatched if d["cid"] == correlation_id]
        return WorkflowRun(55, "api", "https://example.invalid/runs/55") if found else None


@pytest.fixture
def azure_ports(azurite, adx, tmp_path):
    """The dispatch stage's neighbours on their Azure adapters: ADX (the stand-in) and Blob (Azurite)."""
    from azure.kusto.data import KustoClient, KustoConnectionStringBuilder

    admin = KustoClient(KustoConnectionStringBuilder.with_no_authentication(adx.url))
    for table in ("Selections", "Labels", "ModelVersions"):
        admin.execute_mgmt(adx.database, f".clear table {table} data")
    settings = load_settings(backend="azure", adx_cluster_uri=adx.url,
                             storage_connection_string=azurite.connection_string)
    ports = Backend(settings, credential=StaticTokenCredential())
    store = ports.store
    store.upsert_model_version(ModelVersion("m", "6", ("a", "b"), {"accuracy": 0.8}, status=ModelStatus.SERVING,
                                            created_at=datetime(2026, 1, 1, tzinfo=UTC), trained_on_labels=0))
    items = tuple(SelectedItem(f"i{k}", f"https://acct.blob.core.windows.net/items/i{k}.png", 0.5, k)
                  for k in range(3))
    store.record_selection(Selection("b1", "margin", "m", "6", datetime(2026, 1, 2, tzinfo=UTC), items))
    store.add_labels([Label(f"i{k}", "ab"[k % 2], "e1", "sha") for k in range(3)])
    yield store, ports.objects
    admin.close()


def test_azure_activities_write_the_manifest_register_it_and_dispatch(azure_ports, adapter, ml):
    store, objects = azure_ports
    github = FakeGitHub()
    acts = AzureActivities(store, objects, github, adapter, model_name="m", workflow="train.yml", ref="main",
                           items_datastore="items")
    prepared = acts.prepare({"correlation_id": "cid1"})
    assert prepared["labels"] == 3 and prepared["data_asset"] == "azureml:m-manifest:cid1"
    lines = [json.loads(x) for x in objects.get("manifests", "m/cid1.jsonl").decode().splitlines()]
    assert lines[0] == {"image_url": "azureml://datastores/items/paths/i0.png", "label": "a", "item_id": "i0"}
    run = acts.start_training({"correlation_id": "cid1", "prepared": prepared})
    assert run == {"run_id": 55, "url": "https://example.invalid/runs/55"}
    again = acts.start_training({"correlation_id": "cid1", "prepared": prepared})  # an activity re-run
    assert again == run
    (sent,) = github.dispatched  # dispatched once
    assert tuple(sent["inputs"]) == WORKFLOW_INPUTS and sent["inputs"]["base_model_version"] == "6"
    assert json.loads(sent["inputs"]["class_names"]) == ["a", "b"]


def test_record_marks_a_deployed_candidate_serving_and_keeps_labels_pending_otherwise(azure_ports, adapter):
    store, objects = azure_ports
    acts = AzureActivities(store, objects, FakeGitHub(), adapter, model_name="m", workflow="w", ref="main")
    prepared = acts.prepare({"correlation_id": "c2"})
    result = {"outcome": "rejected", "reason": "worse", "correlation_id": "c2", "candidate_version": "7",
              "candidate_metric": 0.5, "candidate_confidence": 0.75, "candidate_train_accuracy": 0.625}
    acts.record({"result": result, "prepared": prepared})
    assert store.serving_version("m").version == "6"
    assert store.get_model_version("m", "7").status is ModelStatus.REJECTED
    assert json.loads(objects.get("retrain-outcomes", "m/c2.json"))["reason"] == "worse"
    acts.record({"result": {**result, "outcome": "deployed", "correlation_id": "c3"}, "prepared": prepared})
    serving = store.serving_version("m")
    assert serving.version == "7" and serving.trained_on_labels == 3
    # what the default strategy reads
    assert serving.metrics == {"accuracy": 0.5, "confidence": 0.75, "train_accuracy": 0.625}


def test_the_workflow_declares_exactly_the_inputs_the_client_sends():
    wf = yaml.safe_load((ROOT / ".github/workflows/train.yml").read_text())
    on = wf[True] if True in wf else wf["on"]  # YAML 1.1 reads the key `on` as True
    inputs = on["workflow_dispatch"]["inputs"]
    assert tuple(inputs) == WORKFLOW_INPUTS
    assert all(spec["type"] == "string" for spec in inputs.values())
    assert "${{ inputs.correlation_id }}" in wf["run-name"]
    assert wf["permissions"]["id-token"] == "write"
    steps = wf["jobs"]["train"]["steps"]
    assert any(s.get("uses", "").startswith("azure/login@") for s in steps)
    script = "\n".join(s.get("run", "") for s in steps)
    assert "az ml job create --file training/job.yml" in script and "shared.training.register" in script
    assert "${{ inputs.correlation_id }}" in script


def test_the_job_spec_runs_the_trainer_with_every_input():
    job = yaml.safe_load((ROOT / "training/job.yml").read_text())
    assert job["type"] == "command" and "python -m shared.training.train" in job["command"]
    for name in ("manifest", "checkpoint", "items", "classes", "metric"):
        assert name in job["inputs"] and ("${{inputs." + name + "}}") in job["command"]
    assert "${{outputs.model}}" in job["command"]
    assert (ROOT / "training" / job["environment"]["conda_file"]).exists()


def _items(tmp_path: Path, n: int, rng: np.random.Generator) -> tuple[Path, list[str]]:
    folder = tmp_path / "items"
    folder.mkdir()
    lines, labels = [], []
    for k in range(n):
        label = "ab"[k % 2]
        center = np.zeros(8, np.float32)
        center[0 if label == "a" else 1] = 3
        (folder / f"i{k}.npy").write_bytes(encode_vector(center + rng.normal(0, 0.3, 8).astype(np.float32)))
        lines.append(json.dumps({"image_url": f"azureml://datastores/items/paths/i{k}.npy", "label": label,
                                 "item_id": f"i{k}"}))
        labels.append(label)
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    return folder, labels


def test_the_training_entry_point_trains_evaluates_and_registers_with_the_tags(tmp_path, ml, adapter):
    rng = np.random.default_rng(0)
    items, _ = _items(tmp_path, 40, rng)
    first = tmp_path / "v1"
    assert trn.main(["--manifest", str(tmp_path / "manifest.jsonl"), "--classes", '["a", "b"]',
                     "--items", str(items), "--out", str(first)]) == 0
    second = tmp_path / "v2"
    metrics = trn.train(tmp_path / "manifest.jsonl", second, class_names=["a", "b"], checkpoint=first, items=items)
    assert metrics["accuracy"] >= 0.9 and metrics["baseline_accuracy"] is not None
    assert metrics["n_train"] + metrics["n_eval"] == 40 and metrics["n_eval"] > 0
    assert 0.5 <= metrics["confidence"] <= 1.0  # mean top-class probability on the held-out split
    assert metrics["train_accuracy"] >= 0.9  # on the rows it trained on (a separable toy set)
    assert {p.name for p in second.iterdir()} >= {"model.onnx", "head.npz", "meta.json", "metrics.json"}
    version = reg.register(ml, second, name="m", correlation_id="cidX", metric="accuracy", job_name="job1")
    found = adapter.find_model("m", "cidX", metric="accuracy")
    assert found.version == version and found.metric == pytest.approx(metrics["accuracy"])
    assert found.baseline_metric == pytest.approx(metrics["baseline_accuracy"])
    assert found.confidence == pytest.approx(metrics["confidence"])
    assert found.train_accuracy == pytest.approx(metrics["train_accuracy"])


def test_the_training_entry_point_refuses_a_bad_manifest(tmp_path):
    bad = tmp_path / "m.jsonl"
    bad.write_text('{"image_url": "x.png"}\nnot json\n')
    with pytest.raises(TrainingError, match=r"2 bad lines \(line 1: 'label'; line 2"):
        trn.read_manifest(bad)
    assert trn.main(["--manifest", str(bad), "--classes", "[]", "--out", str(tmp_path / "o")]) == 2


def test_a_new_deployment_gets_all_of_the_endpoints_traffic(tmp_path):
    """Without traffic a new ManagedOnlineDeployment serves nothing (issue 20, item 2)."""
    from azure.ai.ml.entities import ManagedOnlineEndpoint

    ml = FakeMLClient()
    endpoints: dict[str, ManagedOnlineEndpoint] = {}
    created: list = []

    def get_endpoint(*, name: str):
        if name not in endpoints:
            raise ResourceNotFoundError(name)
        return endpoints[name]

    def put_endpoint(endpoint):
        endpoints[endpoint.name] = endpoint
        return SimpleNamespace(result=lambda: endpoint)

    def get_deployment(*, name: str, endpoint_name: str):
        raise ResourceNotFoundError(name)

    def put_deployment(deployment):
        created.append(deployment)
        return SimpleNamespace(result=lambda: deployment)

    ml.online_endpoints = SimpleNamespace(get=get_endpoint, begin_create_or_update=put_endpoint)
    ml.online_deployments = SimpleNamespace(get=get_deployment, begin_create_or_update=put_deployment)
    AzureMLAdapter(ml, endpoint="ep", deployment="blue").ensure_deployment(
        "m", "1", code_dir=str(tmp_path), scoring_script="scoring/score.py", conda_file=str(
            ROOT / "training" / "environment" / "conda.yaml"), image="img", instance_type="Standard_DS3_v2",
        environment_variables={})
    assert [d.name for d in created] == ["blue"]
    assert endpoints["ep"].traffic == {"blue": 100}
