"""bootstrap: make a model version the first serving one — in the endpoint and in the loop's store.

Nothing else does it: the selector needs a serving version to select under, the collector its
classes to check scoring results against, the gate a baseline. ``al bootstrap`` runs this once per
deployment (docs/deploy.md), from a local model folder made by the project's trainer (the
simulation's, or ``python -m shared.training.train``) or from a model already registered in Azure ML.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shared.core.records import ModelStatus, ModelVersion
from shared.errors import ConfigurationError, TrainingError
from shared.ports import PredictionStore

log = logging.getLogger(__name__)


def read_model_dir(model_dir: Path) -> dict[str, Any]:
    """The folder's ``meta.json`` (class names, metrics), after checking the files scoring needs."""
    for name in ("model.onnx", "meta.json"):
        if not (model_dir / name).is_file():
            raise ConfigurationError(f"{model_dir} has no {name}: give the folder the trainer wrote")
    meta = json.loads((model_dir / "meta.json").read_text())
    if not meta.get("class_names"):
        raise ConfigurationError(f"{model_dir}/meta.json names no class_names")
    return meta


def bootstrap(
    store: PredictionStore, azureml: Any, *, model_name: str, model_dir: Path | None = None,
    aml_version: str | None = None, class_names: tuple[str, ...] | None = None,
    deployment: dict[str, Any], timeout_s: float = 3600, poll_s: float = 15,
    sleep: Callable[[float], None] = time.sleep,
) -> ModelVersion:
    """Register ``model_dir`` (or take registered version ``aml_version``), deploy it to the endpoint
    (creating the deployment the first time), wait until it serves, and record it as serving."""
    if (model_dir is None) == (aml_version is None):
        raise ConfigurationError("give either a model folder or a registered Azure ML model version")
    metrics: dict[str, float] = {}
    if model_dir is not None:
        meta = read_model_dir(model_dir)
        classes = tuple(class_names or meta["class_names"])
        metrics = {k: float(v) for k, v in (meta.get("metrics") or {}).items()
                   if isinstance(v, int | float) and not isinstance(v, bool) and not k.startswith("n_")}
        version = azureml.register_model(model_name, str(model_dir), tags={"al_bootstrap": "true"},
                                         description="the first serving version (al bootstrap)")
    else:
        if not class_names:
            raise ConfigurationError("--classes is needed with --aml-model (the model's class order)")
        classes, version = tuple(class_names), str(aml_version)
    azureml.ensure_deployment(model_name, version, **deployment)
    waited = 0.0
    while True:
        state = azureml.deploy_state(model_name, version)
        if state["state"] == "Succeeded":
            break
        if state["state"] in ("Failed", "Canceled") or waited >= timeout_s:
            raise TrainingError(f"deploying {model_name}:{version} did not succeed: {state}")
        sleep(poll_s)
        waited += poll_s
    mv = ModelVersion(name=model_name, version=version, class_names=classes, metrics=metrics,
                      artifact_uri=f"azureml:{model_name}:{version}", status=ModelStatus.SERVING,
                      created_at=datetime.now(UTC), trained_on_labels=0)
    store.upsert_model_version(mv)
    log.info("bootstrap: %s:%s serves %d classes", model_name, version, len(classes))
    return mv
