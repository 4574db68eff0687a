"""Register the trained model folder as a model version with the tags the orchestrator looks for.

Run by the workflow after the Azure ML job (``az ml job download`` brought its ``model`` output here),
with the workflow's OIDC login (``DefaultAzureCredential`` picks up the Azure CLI session).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from shared.core.calibration import CONFIDENCE, TRAIN_ACCURACY
from shared.core.orchestration import TAG_CORRELATION, TAG_METRIC_NAME, baseline_tag, metric_tag


def model_tags(metrics: dict[str, Any], *, correlation_id: str, metric: str, job_name: str = "") -> dict[str, str]:
    """The tags: correlation id, the candidate's metric and the checkpoint's on the same split, and
    the candidate's confidence on that split and its accuracy on its training rows (the default
    strategy compares them with the accuracy)."""
    tags = {TAG_CORRELATION: correlation_id, TAG_METRIC_NAME: metric, metric_tag(metric): str(metrics[metric])}
    baseline = metrics.get(f"baseline_{metric}")
    if baseline is not None:
        tags[baseline_tag(metric)] = str(baseline)
    for figure in (CONFIDENCE, TRAIN_ACCURACY):
        if metrics.get(figure) is not None:
            tags[metric_tag(figure)] = str(metrics[figure])
    if job_name:
        tags["al_job"] = job_name
    return tags


def register(ml_client: Any, model_dir: Path, *, name: str, correlation_id: str, metric: str,
             job_name: str = "") -> str:
    from azure.ai.ml.constants import AssetTypes
    from azure.ai.ml.entities import Model

    metrics = json.loads((model_dir / "metrics.json").read_text())
    model = Model(name=name, path=str(model_dir), type=AssetTypes.CUSTOM_MODEL,
                  tags=model_tags(metrics, correlation_id=correlation_id, metric=metric, job_name=job_name),
                  description=f"trained for retraining {correlation_id}")
    created = ml_client.models.create_or_update(model)
    return str(created.version)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m shared.training.register")
    p.add_argument("--model-dir", type=Path, required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--correlation-id", required=True)
    p.add_argument("--metric", default="accuracy")
    p.add_argument("--job-name", default="")
    p.add_argument("--subscription", required=True)
    p.add_argument("--resource-group", required=True)
    p.add_argument("--workspace", required=True)
    args = p.parse_args(argv)
    from shared.adapters.azureml import build_ml_client

    ml = build_ml_client(subscription_id=args.subscription, resource_group=args.resource_group,
                         workspace=args.workspace)
    version = register(ml, args.model_dir, name=args.name, correlation_id=args.correlation_id, metric=args.metric,
                       job_name=args.job_name)
    print(f"registered {args.name}:{version}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
