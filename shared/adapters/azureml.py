"""Azure ML through azure-ai-ml: the training manifest as a data asset, the trained model version, the
managed online deployment.

The ``MLClient`` is built once per process with ``DefaultAzureCredential`` (the function app's
managed identity in Azure; the developer's ``az login`` locally): no keys. Tests pass a small fake
with the same operation groups (``data``, ``models``, ``online_deployments``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from shared.core.calibration import CONFIDENCE, TRAIN_ACCURACY
from shared.core.orchestration import TAG_CORRELATION, baseline_tag, metric_tag
from shared.errors import NotFoundError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RegisteredModel:
    """A model version the training job registered, with the metrics it tagged it with."""

    name: str
    version: str
    metric: float | None
    baseline_metric: float | None
    tags: dict[str, str]
    confidence: float | None = None  # mean top-class probability on the metric's split
    train_accuracy: float | None = None  # accuracy on the rows it was trained on

    @classmethod
    def from_tags(cls, name: str, version: str, tags: dict[str, str], *, metric: str) -> RegisteredModel:
        """The figures the training job tagged the version with (an unreadable one is None)."""
        return cls(name, version, _float(tags.get(metric_tag(metric))), _float(tags.get(baseline_tag(metric))),
                   tags, _float(tags.get(metric_tag(CONFIDENCE))), _float(tags.get(metric_tag(TRAIN_ACCURACY))))


def build_ml_client(*, subscription_id: str, resource_group: str, workspace: str) -> Any:
    """An ``MLClient`` on the workspace with ``DefaultAzureCredential`` (identity-based)."""
    from azure.ai.ml import MLClient
    from azure.identity import DefaultAzureCredential

    return MLClient(DefaultAzureCredential(), subscription_id, resource_group, workspace)


class AzureMLAdapter:
    """What the retraining needs from an Azure ML workspace. Build once per process."""

    def __init__(self, ml_client: Any, *, endpoint: str, deployment: str) -> None:
        self._ml = ml_client
        self._endpoint = endpoint
        self._deployment = deployment

    def register_manifest(self, *, name: str, version: str, uri: str, description: str = "",
                          tags: dict[str, str] | None = None) -> str:
        """Register the JSON Lines manifest at ``uri`` as data asset ``name:version``; return its id.

        Registering the same name and version again is a no-op in Azure ML when the path is the
        same, so a retried activity does not fail.
        """
        from azure.ai.ml.constants import AssetTypes
        from azure.ai.ml.entities import Data

        asset = Data(name=name, version=version, path=uri, type=AssetTypes.URI_FILE,
                     description=description, tags=tags or {})
        created = self._ml.data.create_or_update(asset)
        return f"azureml:{created.name}:{created.version}"

    def find_model(self, name: str, correlation_id: str, *, metric: str) -> RegisteredModel | None:
        """The version of model ``name`` tagged with ``correlation_id``, or None if there is none yet."""
        try:
            versions = list(self._ml.models.list(name=name))
        except Exception as exc:  # azure-core raises ResourceNotFoundError for an unknown name
            if type(exc).__name__ == "ResourceNotFoundError":
                return None
            raise
        matches = [m for m in versions if (m.tags or {}).get(TAG_CORRELATION) == correlation_id]
        if not matches:
            return None
        found = max(matches, key=lambda m: _version_key(str(m.version)))
        tags = {str(k): str(v) for k, v in (found.tags or {}).items()}
        return RegisteredModel.from_tags(name, str(found.version), tags, metric=metric)

    def start_deploy(self, name: str, version: str) -> None:
        """Point the managed online deployment at ``name:version`` (a rolling update); do not wait.

        The update takes minutes, longer than an activity should block; :meth:`deploy_state` is
        polled by the orchestrator with durable timers instead.
        """
        deployment = self._ml.online_deployments.get(name=self._deployment, endpoint_name=self._endpoint)
        deployment.model = f"azureml:{name}:{version}"
        self._ml.online_deployments.begin_create_or_update(deployment)
        log.info("deployment %s/%s: updating to %s:%s", self._endpoint, self._deployment, name, version)

    def deploy_state(self, name: str, version: str) -> dict[str, str]:
        """``{"state": ..., "detail": ...}``: ``Updating`` until the deployment serves ``name:version``."""
        try:
            deployment = self._ml.online_deployments.get(name=self._deployment, endpoint_name=self._endpoint)
        except Exception as exc:
            if type(exc).__name__ == "ResourceNotFoundError":
                raise NotFoundError(f"deployment {self._deployment!r} of endpoint {self._endpoint!r} not found; "
                                    "create it once (docs/retraining.md)") from exc
            raise
        state = str(deployment.provisioning_state or "Updating")
        if state == "Succeeded" and not _model_ref_matches(str(deployment.model or ""), name, version):
            state = "Updating"  # the update has not become visible yet
        return {"state": state, "detail": f"{self._endpoint}/{self._deployment} serves {deployment.model}"}


    def register_model(self, name: str, model_dir: str, *, tags: dict[str, str], description: str = "") -> str:
        """Register a model folder (``model.onnx``, ``head.npz``, ``meta.json``) as a new version of
        ``name``; return the version Azure ML gave it."""
        from azure.ai.ml.constants import AssetTypes
        from azure.ai.ml.entities import Model

        created = self._ml.models.create_or_update(Model(name=name, path=model_dir, type=AssetTypes.CUSTOM_MODEL,
                                                         tags=tags, description=description))
        return str(created.version)

    def ensure_deployment(self, name: str, version: str, *, code_dir: str, scoring_script: str, conda_file: str,
                          image: str, instance_type: str, environment_variables: dict[str, str]) -> None:
        """Point the deployment at ``name:version`` (an update: do not wait), or the first time create the
        endpoint and the deployment (the project's scoring script on a conda environment), wait for it,
        and give it all of the endpoint's traffic."""
        try:
            self._ml.online_deployments.get(name=self._deployment, endpoint_name=self._endpoint)
        except Exception as exc:
            if type(exc).__name__ != "ResourceNotFoundError":
                raise
        else:
            self.start_deploy(name, version)
            return
        from azure.ai.ml.entities import (
            CodeConfiguration,
            Environment,
            ManagedOnlineDeployment,
            ManagedOnlineEndpoint,
        )

        try:
            self._ml.online_endpoints.get(name=self._endpoint)
        except Exception as exc:
            if type(exc).__name__ != "ResourceNotFoundError":
                raise
            endpoint = ManagedOnlineEndpoint(name=self._endpoint, auth_mode="aml_token",
                                             description="active-learning loop: the serving model")
            self._ml.online_endpoints.begin_create_or_update(endpoint).result()
        deployment = ManagedOnlineDeployment(
            name=self._deployment, endpoint_name=self._endpoint, model=f"azureml:{name}:{version}",
            code_configuration=CodeConfiguration(code=code_dir, scoring_script=scoring_script),
            environment=Environment(conda_file=conda_file, image=image), instance_type=instance_type,
            instance_count=1, environment_variables=environment_variables,
        )
        self._ml.online_deployments.begin_create_or_update(deployment).result()
        # A new deployment gets 0 % of the endpoint's traffic: route all of it there, as Microsoft's
        # online-endpoint tutorial does (endpoint.traffic = {"blue": 100}), or no request reaches the model.
        endpoint = self._ml.online_endpoints.get(name=self._endpoint)
        endpoint.traffic = {self._deployment: 100}
        self._ml.online_endpoints.begin_create_or_update(endpoint).result()
        log.info("deployment %s/%s: created with %s:%s, 100%% of the endpoint's traffic", self._endpoint,
                 self._deployment, name, version)


def _model_ref_matches(ref: str, name: str, version: str) -> bool:
    """``azureml:name:version`` or an ARM id ending in ``/models/name/versions/version``."""
    return ref == f"azureml:{name}:{version}" or ref.rstrip("/").endswith(f"/models/{name}/versions/{version}")


def _version_key(version: str) -> tuple[int, str]:
    return (int(version), "") if version.isdigit() else (-1, version)


def _float(value: str | None) -> float | None:
    try:
        return None if value is None else float(value)
    except ValueError:
        return None
