"""``al bootstrap``: the first serving version, registered in Azure ML, deployed to the endpoint (the
deployment created the first time) and recorded in ADX — the adapter at the MLClient boundary (a fake
holding real azure-ai-ml entities), the store on the ADX stand-in."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from azure.ai.ml.entities import ManagedOnlineDeployment, ManagedOnlineEndpoint, Model

from shared import cli
from shared.adapters.azureml import AzureMLAdapter
from shared.backends import Backend
from shared.core.records import ModelStatus
from shared.errors import ConfigurationError
from shared.services.bootstrap import bootstrap
from shared.settings import load_settings
from tests.support.credentials import StaticTokenCredential

ROOT = Path(__file__).resolve().parents[2]


class ResourceNotFoundError(Exception):
    """Stands in for azure.core.exceptions.ResourceNotFoundError (matched by name)."""


class EmptyWorkspace:
    """An MLClient of a workspace with no endpoint yet: what the adapter creates lands here."""

    def __init__(self) -> None:
        self.models: list[Model] = []
        self.endpoint: ManagedOnlineEndpoint | None = None
        self.deployment: ManagedOnlineDeployment | None = None
        self.model_ops = SimpleNamespace(create_or_update=self._create_model)
        self.online_endpoints = SimpleNamespace(get=self._get_endpoint, begin_create_or_update=self._create_endpoint)
        self.online_deployments = SimpleNamespace(get=self._get_deployment,
                                                  begin_create_or_update=self._create_deployment)

    def _create_model(self, model: Model) -> Model:
        model.version = str(len(self.models) + 1)
        self.models.append(model)
        return model

    def _get_endpoint(self, *, name: str):
        if self.endpoint is None:
            raise ResourceNotFoundError(name)
        return self.endpoint

    def _create_endpoint(self, endpoint):
        self.endpoint = endpoint
        return SimpleNamespace(result=lambda: endpoint)

    def _get_deployment(self, *, name: str, endpoint_name: str):
        if self.deployment is None:
            raise ResourceNotFoundError(name)
        return self.deployment

    def _create_deployment(self, deployment):
        deployment._provisioning_state = "Succeeded"
        self.deployment = deployment
        return SimpleNamespace(result=lambda: deployment)


@pytest.fixture
def workspace() -> EmptyWorkspace:
    return EmptyWorkspace()


def model_dir(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(b"onnx")
    (folder / "head.npz").write_bytes(b"npz")
    (folder / "meta.json").write_text(json.dumps({"class_names": ["cat", "dog"],
                                                  "metrics": {"accuracy": 0.8, "n_train": 40}}))
    return folder


def test_bootstrap_registers_creates_the_deployment_and_records_the_serving_version(tmp_path, workspace, adx):
    ml = SimpleNamespace(models=workspace.model_ops, online_endpoints=workspace.online_endpoints,
                         online_deployments=workspace.online_deployments)
    aml = AzureMLAdapter(ml, endpoint="ep", deployment="blue")
    settings = load_settings(backend="azure", adx_cluster_uri=adx.url)
    store = Backend(settings, credential=StaticTokenCredential()).store
    deployment = {"code_dir": str(tmp_path), "scoring_script": "scoring/score.py",
                  "conda_file": str(ROOT / "training" / "environment" / "conda.yaml"),
                  "image": "base:latest", "instance_type": "Standard_DS3_v2",
                  "environment_variables": {"AL_COLLECTOR_URL": "https://c/api/predictions"}}
    mv = bootstrap(store, aml, model_name="m", model_dir=model_dir(tmp_path), deployment=deployment, poll_s=0)

    (model,) = workspace.models
    assert model.name == "m" and model.type == "custom_model" and model.tags == {"al_bootstrap": "true"}
    assert workspace.endpoint.name == "ep"
    dep = workspace.deployment
    assert (dep.name, dep.endpoint_name, dep.model) == ("blue", "ep", "azureml:m:1")
    assert dep.code_configuration.scoring_script == "scoring/score.py"
    assert dep.environment_variables == {"AL_COLLECTOR_URL": "https://c/api/predictions"}
    assert (mv.version, mv.class_names, dict(mv.metrics)) == ("1", ("cat", "dog"), {"accuracy": 0.8})
    serving = store.serving_version("m")
    assert (serving.version, serving.status, serving.trained_on_labels) == ("1", ModelStatus.SERVING, 0)

    # The next bootstrap (a new first model, say) updates the existing deployment instead.
    bootstrap(store, aml, model_name="m", model_dir=model_dir(tmp_path / "2"), deployment=deployment, poll_s=0)
    assert workspace.deployment.model == "azureml:m:2" and store.serving_version("m").version == "2"


def test_bootstrap_refuses_what_it_cannot_use(tmp_path, capsys, monkeypatch):
    with pytest.raises(ConfigurationError, match=r"has no model\.onnx"):
        bootstrap(None, None, model_name="m", model_dir=tmp_path, deployment={})  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="--classes"):
        bootstrap(None, None, model_name="m", aml_version="3", deployment={})  # type: ignore[arg-type]
    monkeypatch.setenv("AL_BACKEND", "embedded")
    from shared.settings import get_settings

    get_settings.cache_clear()
    try:
        assert cli.main(["bootstrap", "--model-dir", str(tmp_path)]) == 2
    finally:
        get_settings.cache_clear()
    assert "al bootstrap is for the Azure backend" in capsys.readouterr().err
