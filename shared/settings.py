"""One settings object, read from ``AL_*`` environment variables and validated once at start-up.

Every error names the environment variable and what is wrong with it, so that a function app that
fails to start says which app setting to fix.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.errors import ConfigurationError

ENV_PREFIX = "AL_"
STAGES = ("scoring_collector", "selector_timer", "label_export_trigger", "github_dispatch")


class Settings(BaseSettings):
    """The product's configuration. Field ``x`` is read from ``AL_X``."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="ignore")

    backend: Literal["embedded", "azure"] = "embedded"
    data_dir: Path = Path("data")
    stages: str = Field("all", description="Comma-separated stages this app hosts, or 'all'.")

    model_name: str = Field("classifier", min_length=1, max_length=128)
    strategy: str = "distance_margin"
    batch_size: int = Field(100, ge=1, le=100_000)
    window_hours: float = Field(24 * 7, gt=0)
    selection_seed: int = 0

    retrain_threshold: int = Field(100, ge=1)
    gate_metric: str = "accuracy"
    gate_tolerance: float = Field(0.0, ge=0.0, le=1.0)

    max_records: int = Field(1000, ge=1)
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    max_item_bytes: int = Field(2 * 1024 * 1024, ge=1)

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

    @property
    def stage_names(self) -> tuple[str, ...]:
        names = self.stages.split(",")
        return STAGES if "all" in names else tuple(n for n in STAGES if n in names)


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
