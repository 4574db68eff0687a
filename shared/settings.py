"""One settings object, read from ``AL_*`` environment variables and validated once at start-up.

Every error names the environment variable and what is wrong with it, so that a function app that
fails to start says which app setting to fix.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AwareDatetime, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.errors import ConfigurationError

ENV_PREFIX = "AL_"
_HOST = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)+")
STAGES = ("scoring_collector", "selector_timer", "label_export_trigger", "github_dispatch")


class Settings(BaseSettings):
    """The product's configuration. Field ``x`` is read from ``AL_X``."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="ignore")

    backend: Literal["embedded", "azure"] = "embedded"
    data_dir: Path = Path("data")
    stages: str = Field("all", description="Comma-separated stages this app hosts, or 'all'.")

    model_name: str = Field("classifier", min_length=1, max_length=128)
    strategy: str = "calibration_switch"
    batch_size: int = Field(100, ge=1, le=100_000)
    window_hours: float = Field(24 * 7, gt=0)
    selection_seed: int = 0

    retrain_threshold: int = Field(100, ge=1)
    gate_metric: str = "accuracy"
    gate_tolerance: float = Field(0.0, ge=0.0, le=1.0)
    training_command: str = Field(
        "python -m shared.training.train", min_length=1,
        description="The training step (docs/your-model.md): a command line the loop appends --manifest, "
        "--classes, --checkpoint, --items, --metric and --out to. The embedded trainer runs it (the default "
        "in-process); in Azure the same line is the command of training/job.yml.")

    max_records: int = Field(1000, ge=1)
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    max_item_bytes: int = Field(2 * 1024 * 1024, ge=1)

    # --- scoring_collector ---
    max_future_seconds: float = Field(300, ge=0, description="How far scored_at may lie ahead of the clock.")
    landing_container: str = Field("landing", min_length=3, max_length=63)
    items_container: str = Field("items", min_length=3, max_length=63)
    storage_account_url: str = Field("", description="Blob endpoint, e.g. https://<account>.blob.core.windows.net")
    storage_connection_string: str = Field("", description="Only for Azurite / local development.")
    adx_cluster_uri: str = Field("", description="Query endpoint, e.g. https://<cluster>.<region>.kusto.windows.net")
    adx_ingest_uri: str = Field("", description="Data-management endpoint; default: the cluster's ingest- URI.")
    adx_database: str = "activelearning"
    adx_streaming: bool = False
    reingest_schedule: str = "0 */5 * * * *"
    reingest_min_age_seconds: float = Field(120, ge=0)

    # --- hostile input (issue 13): what the collector refuses, and the selector re-checks ---
    max_embedding_dim: int = Field(4096, ge=1, le=1_000_000, description="Longest embedding accepted.")
    min_scored_at: AwareDatetime = Field(datetime(2000, 1, 1, tzinfo=UTC),
                                         description="Earliest plausible scored_at (ISO 8601 with a time zone).")
    allowed_item_hosts: str = Field("", description="Comma-separated blob hosts an https:// item_uri may name, "
                                    "e.g. 'acct.blob.core.windows.net'; the object store's own endpoint is "
                                    "always allowed. Azure backend only (embedded: file:// in the object store).")

    @field_validator("allowed_item_hosts")
    @classmethod
    def _host_names(cls, value: str) -> str:
        hosts = [h.strip().lower() for h in value.split(",") if h.strip()]
        bad = [h for h in hosts if not _HOST.fullmatch(h)]
        if bad:
            raise ValueError(f"{bad} are not host names; give blob hosts without scheme or path, "
                             "e.g. 'acct.blob.core.windows.net'")
        return ",".join(hosts)

    @property
    def allowed_item_host_list(self) -> tuple[str, ...]:
        return tuple(h for h in self.allowed_item_hosts.split(",") if h)

    # --- label_export_trigger ---
    # The blob trigger's connection is the app setting AL_STORAGE (a connection string for Azurite) or
    # AL_STORAGE__blobServiceUri / AL_STORAGE__queueServiceUri (identity-based, in Azure).
    exports_container: str = Field("exports", pattern=r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
    exports_prefix: str = Field("", pattern=r"^(?:[^/{}]+/)*$", description="Folder the trigger watches, e.g. "
                                "'Labeling/export/' (ends with '/'), or '' for the whole container.")
    quarantine_container: str = Field("exports-quarantine", pattern=r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
    retrain_queue: str = Field("retrain-requests", pattern=r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
    retrain_state_container: str = Field("retrain-state", pattern=r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
    storage_queue_url: str = Field("", description="Queue endpoint; default: storage_account_url's .queue. twin.")
    class_names: str = Field("", description="Comma-separated classes a label must be one of; "
                             "empty: the serving model version's classes.")
    max_export_bytes: int = Field(256 * 1024 * 1024, ge=1024)

    @property
    def class_name_list(self) -> tuple[str, ...]:
        return tuple(c.strip() for c in self.class_names.split(",") if c.strip())

    # --- github_dispatch ---
    # The GitHub token is a secret: in Azure a Key Vault reference
    # (@Microsoft.KeyVault(SecretUri=...)) in the app setting AL_GITHUB_TOKEN; never logged.
    github_repository: str = Field("", pattern=r"^$|^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$",
                                   description="owner/name of the repository holding the training workflow")
    github_workflow: str = Field("train.yml", min_length=1, description="Workflow file name or id.")
    github_ref: str = Field("main", min_length=1)
    github_token: SecretStr = Field(SecretStr(""), description="Token with actions:write on the repository.")
    github_api_url: str = Field("https://api.github.com", pattern=r"^https?://")
    aml_subscription_id: str = ""
    aml_resource_group: str = ""
    aml_workspace: str = ""
    aml_endpoint: str = Field("", description="Managed online endpoint serving the model.")
    aml_deployment: str = Field("", description="Deployment of that endpoint the orchestrator updates.")
    aml_items_datastore: str = Field("", description="Azure ML datastore on the items container; "
                                     "empty: the manifest keeps the items' Blob URLs.")
    training_timeout_minutes: float = Field(360, gt=0, le=7 * 24 * 60)
    deploy_timeout_minutes: float = Field(60, gt=0, le=24 * 60)
    poll_initial_seconds: float = Field(60, ge=1)
    poll_max_seconds: float = Field(900, ge=1)
    activity_retry_attempts: int = Field(3, ge=1, le=10)
    activity_retry_first_seconds: float = Field(30, ge=1)

    # --- Azure backend: where the labeling exports land ---
    exports_account_url: str = Field("", description="Blob endpoint of the storage account historical labeling "
                                     "exports are dropped into (the exports container), e.g. "
                                     "https://<account>.blob.core.windows.net; reports and quarantine go there too.")
    blob_trigger_source: Literal["EventGrid", "LogsAndContainerScan"] = Field(
        "EventGrid", description="The export blob trigger's source: EventGrid (the only one Flex Consumption "
        "supports) or LogsAndContainerScan (polling, for func start with Azurite).")

    # --- labeling: Label Studio (selector_timer hands tasks over, label_export_trigger takes answers back) ---
    # The token is a secret: in Azure a Key Vault reference in the app setting AL_LABEL_STUDIO_TOKEN; never logged.
    label_studio_url: str = Field("", pattern=r"^$|^https?://[^\s/]+(/[^\s]*)?$",
                                  description="Label Studio's base URL, e.g. https://labelstudio.<env>.azurecontainerapps.io")
    label_studio_token: SecretStr = Field(SecretStr(""), description="A Label Studio personal access token (JWT "
                                          "refresh token) or a legacy API token of the loop's service user.")
    label_studio_project_id: int | None = Field(None, ge=1, description="The Label Studio project of the model "
                                                "(printed by `al labeling setup`).")
    label_studio_timeout_seconds: float = Field(10.0, gt=0, le=300, description="Per-request timeout.")
    label_sync_schedule: str = Field("0 * * * * *", pattern=r"^\S+( \S+){5}$",
                                     description="NCRONTAB of the catch-up that reads annotations changed since "
                                     "its watermark (Label Studio sends each webhook once, never retried).")
    labeling_account_url: str = Field("", description="Azure: blob endpoint of the dedicated labeling account "
                                      "that holds only the items under labeling (AL_LABELING_CONTAINER) and that "
                                      "Label Studio reads with its account key; the loop's own accounts keep "
                                      "shared keys disabled.")

    # --- selector_timer ---
    # The timer binding reads the app setting AL_SELECTION_SCHEDULE itself (%AL_SELECTION_SCHEDULE%): set it
    # in the app settings too; this field validates it and documents the default (hourly, on the hour).
    selection_schedule: str = Field("0 0 * * * *", pattern=r"^\S+( \S+){5}$",
                                    description="NCRONTAB with seconds: 'sec min hour day month weekday'.")
    labels_per_day: int | None = Field(None, ge=1, description="At most this many items sent to labeling "
                                       "per UTC day; unset: no daily cap.")
    labels_total: int | None = Field(None, ge=1, description="At most this many items sent to labeling ever.")
    stop_uncertainty_below: float | None = Field(
        None, ge=0.0, le=1.0, description="Stop selecting when the picked batch's mean uncertainty (1 - margin) "
        "falls under this; unset: never stop.")
    selection_lock_container: str = Field("selection-lock", pattern=r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
    selection_lease_seconds: int = Field(60, ge=15, le=60)
    labeling_container: str = Field("labeling-input", pattern=r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$",
                                    description="Where the selector copies the items it hands to Label Studio "
                                    "(on the labeling account in Azure); Label Studio reads them from there.")

    @field_validator("strategy")
    @classmethod
    def _usable_strategy(cls, value: str) -> str:
        from shared.core.strategies import check_strategy
        from shared.errors import SelectionError

        try:
            return check_strategy(value)
        except SelectionError as exc:
            raise ValueError(str(exc)) from exc

    @field_validator("training_command")
    @classmethod
    def _usable_command(cls, value: str) -> str:
        from shared.training.contract import command_problem

        why = command_problem(value)
        if why:
            raise ValueError(why)
        return value.strip()

    @field_validator("github_token", "label_studio_token")
    @classmethod
    def _resolved(cls, value: SecretStr) -> SecretStr:
        """App Service hands the app the reference text itself while it cannot resolve a Key Vault
        reference (the secret does not exist yet, or the identity cannot read it), and fetches it again
        only every 24 hours or when the settings change: sent as a token, it fails far from its cause."""
        if value.get_secret_value().lstrip().startswith("@Microsoft.KeyVault("):
            raise ValueError("is an unresolved Key Vault reference: store the secret in Key Vault (and give the "
                             "app's identity Key Vault Secrets User on it), then restart the app or change a "
                             "setting so App Service fetches it again")
        return value

    @field_validator("stages")
    @classmethod
    def _known_stages(cls, value: str) -> str:
        names = [s.strip() for s in value.split(",") if s.strip()]
        if not names:
            raise ValueError("name at least one stage or 'all'")
        unknown = [n for n in names if n != "all" and n not in STAGES]
        if unknown:
            raise ValueError(f"unknown stage(s) {unknown}; known: all, {', '.join(STAGES)}")
        return ",".join(names)

    @field_validator("labels_per_day", "labels_total", "stop_uncertainty_below", "label_studio_project_id",
                     mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        """An empty app setting means "no limit" (app settings cannot be null)."""
        return None if isinstance(value, str) and not value.strip() else value

    @property
    def stage_names(self) -> tuple[str, ...]:
        names = self.stages.split(",")
        return STAGES if "all" in names else tuple(n for n in STAGES if n in names)


# What each stage needs on the Azure backend, beyond ADX and the loop's storage account. A missing
# setting stops the app at start-up, naming it: nothing falls back to a local file or queue.
_AZURE_NEEDS: dict[str, tuple[str, ...]] = {
    "scoring_collector": (),
    # Human labeling is Label Studio: no stage that hands over or takes back tasks starts without it.
    "selector_timer": ("label_studio_url", "label_studio_token", "label_studio_project_id"),
    "label_export_trigger": ("label_studio_url", "label_studio_token", "label_studio_project_id"),
    "github_dispatch": ("github_repository", "github_token", "aml_subscription_id", "aml_resource_group",
                        "aml_workspace", "aml_endpoint", "aml_deployment"),
}


def missing_azure_settings(settings: Settings, stages: tuple[str, ...] | None = None) -> list[str]:
    """The ``AL_*`` settings the given stages (default: the hosted ones) lack on the Azure backend."""
    if settings.backend != "azure":
        return []
    stages = settings.stage_names if stages is None else stages

    def empty(name: str) -> bool:
        value = getattr(settings, name)
        value = value.get_secret_value() if isinstance(value, SecretStr) else value
        return value is None or not str(value).strip()

    needs = ["adx_cluster_uri"]
    if empty("storage_connection_string"):  # a connection string is Azurite (development): one account
        needs.append("storage_account_url")
        if "label_export_trigger" in stages:
            needs.append("exports_account_url")
        if "selector_timer" in stages:
            needs.append("labeling_account_url")
    for stage in stages:
        needs += [n for n in _AZURE_NEEDS[stage] if n not in needs]
    return [f"{ENV_PREFIX}{n.upper()}" for n in needs if empty(n)]


def require_azure_settings(settings: Settings, stages: tuple[str, ...] | None = None) -> None:
    """Raise :class:`ConfigurationError` naming every setting the Azure backend lacks."""
    missing = missing_azure_settings(settings, stages)
    if missing:
        raise ConfigurationError(f"setting {', '.join(missing)} is missing (AL_BACKEND=azure, stages "
                                 f"{', '.join(stages or settings.stage_names)})")


def load_settings(**overrides: object) -> Settings:
    """Read and validate the settings; raise :class:`ConfigurationError` naming the variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        reasons = []
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"]) or "?"
            var = f"{ENV_PREFIX}{field.upper()}"
            got = f" (got {err['input']!r})" if "input" in err and err["type"] != "missing" else ""
            what = "is missing" if err["type"] == "missing" else f"is invalid: {err['msg']}{got}"
            reasons.append(f"setting {var} {what}")
        raise ConfigurationError("; ".join(reasons)) from exc


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once (function apps build their clients from it)."""
    return load_settings()
