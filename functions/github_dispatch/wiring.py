"""Clients and activities of this stage, built once per process from the settings."""

from __future__ import annotations

from functools import lru_cache

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


def _require(settings: Settings, *names: str) -> None:
    missing = [f"AL_{n.upper()}" for n in names if not str(getattr(settings, n)).strip()]
    if missing:
        raise ConfigurationError(f"setting {', '.join(missing)} is missing (github_dispatch on the azure backend)")


@lru_cache(maxsize=1)
def activities() -> RetrainActivities:
    """The activities for ``AL_BACKEND``: Azure (GitHub + Azure ML) or embedded (local trainer)."""
    settings = get_settings()
    store, objects = _store_and_objects(settings)
    if settings.backend == "embedded":
        return _embedded(settings, store, objects)
    _require(settings, "github_repository", "aml_subscription_id", "aml_resource_group", "aml_workspace",
             "aml_endpoint", "aml_deployment")
    if not settings.github_token.get_secret_value():
        raise ConfigurationError("setting AL_GITHUB_TOKEN is missing (a Key Vault reference in Azure)")
    from shared.adapters.azureml import AzureMLAdapter, build_ml_client
    from shared.adapters.github import GitHubClient

    github = GitHubClient(token=settings.github_token.get_secret_value(), repository=settings.github_repository,
                          api_url=settings.github_api_url)
    ml = build_ml_client(subscription_id=settings.aml_subscription_id, resource_group=settings.aml_resource_group,
                         workspace=settings.aml_workspace)
    aml = AzureMLAdapter(ml, endpoint=settings.aml_endpoint, deployment=settings.aml_deployment)
    return AzureActivities(store, objects, github, aml, model_name=settings.model_name,
                           workflow=settings.github_workflow, ref=settings.github_ref, metric=settings.gate_metric,
                           items_datastore=settings.aml_items_datastore,
                           class_names=settings.class_name_list or None)


def _store_and_objects(settings: Settings):  # type: ignore[no-untyped-def]
    """The label/model-version store and the object store.

    The store is the DuckDB file under ``AL_DATA_DIR`` until the Azure Data Explorer store exists;
    objects go to Blob Storage when a storage account is configured, else to a local folder.
    """
    from shared.adapters.duckdb_store import DuckDBStore
    from shared.adapters.local_objects import LocalFolderObjectStore

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = DuckDBStore(settings.data_dir / "loop.duckdb")
    if settings.storage_connection_string or settings.storage_account_url:
        from azure.storage.blob import BlobServiceClient

        from shared.adapters.blob_objects import BlobObjectStore

        if settings.storage_connection_string:
            service = BlobServiceClient.from_connection_string(settings.storage_connection_string)
        else:
            from azure.identity import DefaultAzureCredential

            service = BlobServiceClient(settings.storage_account_url, credential=DefaultAzureCredential())
        return store, BlobObjectStore(service)
    return store, LocalFolderObjectStore(settings.data_dir / "objects")


def _embedded(settings: Settings, store, objects) -> RetrainActivities:  # type: ignore[no-untyped-def]
    """The function app trains through GitHub and Azure ML; the embedded loop retrains in-process.

    (``al simulate`` and :class:`shared.services.retrain.RetrainService` drive the same steps on the
    local trainer, which needs the simulation's evaluation split, something an app setting cannot give.)
    """
    raise ConfigurationError("setting AL_BACKEND must be 'azure' for the github_dispatch stage; the embedded "
                             "loop retrains in-process (al simulate)")
