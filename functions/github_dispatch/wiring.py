"""Clients and activities of this stage, built once per process from the settings."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from shared.backends import Backend, backend
from shared.core.orchestration import Plan
from shared.errors import ConfigurationError
from shared.services.retrain import AzureActivities, RetrainActivities
from shared.settings import Settings, get_settings


def instance_id(model_name: str) -> str:
    """One orchestration instance per model: at most one training at a time."""
    return f"retrain-{model_name}"


def plan_from(settings: Settings) -> Plan:
    return Plan(
        model_name=settings.model_name,
        metric=settings.gate_metric,
        tolerance=settings.gate_tolerance,
        training_timeout_s=settings.training_timeout_minutes * 60,
        deploy_timeout_s=settings.deploy_timeout_minutes * 60,
        poll_initial_s=settings.poll_initial_seconds,
        poll_max_s=max(settings.poll_max_seconds, settings.poll_initial_seconds),
    )


@lru_cache(maxsize=1)
def activities() -> RetrainActivities:
    """The activities on GitHub and Azure ML, with the loop's state in the backend's ADX store and
    Blob Storage. Only the Azure backend: the embedded loop retrains in-process (``al simulate``)."""
    settings = get_settings()
    if settings.backend != "azure":
        raise ConfigurationError("setting AL_BACKEND must be 'azure' for the github_dispatch stage; the embedded "
                                 "loop retrains in-process (al simulate)")
    return build_activities(settings, ports=backend())


def build_activities(settings: Settings, *, ports: Backend, github: Any = None, azureml: Any = None) -> AzureActivities:
    """``github`` / ``azureml`` override the clients (tests); by default built from the settings."""
    ports.require("github_dispatch")
    if github is None:
        from shared.adapters.github import GitHubClient

        github = GitHubClient(token=settings.github_token.get_secret_value(), repository=settings.github_repository,
                              api_url=settings.github_api_url)
    if azureml is None:
        from shared.adapters.azureml import AzureMLAdapter, build_ml_client

        ml = build_ml_client(subscription_id=settings.aml_subscription_id, resource_group=settings.aml_resource_group,
                             workspace=settings.aml_workspace)
        azureml = AzureMLAdapter(ml, endpoint=settings.aml_endpoint, deployment=settings.aml_deployment)
    return AzureActivities(ports.store, ports.objects, github, azureml, model_name=settings.model_name,
                           workflow=settings.github_workflow, ref=settings.github_ref, metric=settings.gate_metric,
                           items_datastore=settings.aml_items_datastore,
                           class_names=settings.class_name_list or None)
