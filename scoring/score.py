"""Azure ML managed online endpoint: ``init()`` once per worker, ``run()`` per request.

The deployment's code folder holds this file and the project's ``shared`` package; the model folder
(``AZUREML_MODEL_DIR``) holds the registry's files for one version: ``model.onnx`` and
``meta.json`` (class names). The name and version come from the mount path
``.../azureml-models/<name>/<version>`` (see :func:`model_identity`). Scoring goes through
:func:`shared.model.scoring.score_items`, the path the simulation uses, and every result is handed
to the monitoring client (``AL_COLLECTOR_URL``, function key ``AL_COLLECTOR_KEY``), which never
blocks or fails the request.

Request: ``{"items": [{"item_id": "...", "data": "<base64>", "item_uri": "optional"}],
"embeddings": true}``. Response: ``{"predictions": [{"item_id", "predicted_label", "probabilities"}]}``.
Every logged result carries the model's compact embedding (64 floats, ``shared/model/embedding.py``)
unless the request says ``"embeddings": false``: the default selection strategy needs it.
An item without ``item_uri`` is logged with its bytes inline; the collector stores it content-addressed.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shared.core.naming import item_id_problem
from shared.core.records import ModelVersion
from shared.model.items import Featurizer
from shared.model.registry import OnnxScorer
from shared.model.scoring import score_items
from shared.monitoring import MonitoringClient

log = logging.getLogger(__name__)
MAX_ITEMS = 256


@dataclass
class _Endpoint:
    model: ModelVersion
    scorer: OnnxScorer
    featurizer: Featurizer
    client: MonitoringClient | None


_endpoint: _Endpoint | None = None


def init() -> None:
    """Load the ONNX model once and start the monitoring client."""
    global _endpoint
    model_dir = Path(os.environ.get("AZUREML_MODEL_DIR", "."))
    onnx_path = next(iter(sorted(model_dir.rglob("model.onnx"))), None)
    if onnx_path is None:
        raise FileNotFoundError(f"no model.onnx under AZUREML_MODEL_DIR={model_dir}")
    meta = json.loads((onnx_path.parent / "meta.json").read_text())
    name, version = model_identity(model_dir, onnx_path, meta)
    model = ModelVersion(name=name, version=version, class_names=tuple(meta["class_names"]))
    url = os.environ.get("AL_COLLECTOR_URL", "")
    client = MonitoringClient.for_collector(url, key=os.environ.get("AL_COLLECTOR_KEY") or None) if url else None
    if client is None:
        log.warning("AL_COLLECTOR_URL is not set: scoring results are not collected")
    _endpoint = _Endpoint(model, OnnxScorer(onnx_path.read_bytes(), model.class_names), Featurizer(), client)


def model_identity(model_dir: Path, onnx_path: Path, meta: dict[str, Any]) -> tuple[str, str]:
    """(name, version) of the model this container serves.

    Azure ML mounts a registered model at ``AZUREML_MODEL_DIR=.../azureml-models/<name>/<version>``,
    with the registered folder inside it (``.../<version>/model/model.onnx``): the mount path is the
    truth, and it changes with every redeploy of a new version. Outside Azure ML (tests, a local
    folder) ``meta.json`` or ``AL_MODEL_NAME``/``AL_MODEL_VERSION`` name it, else the folders
    ``<name>/<version>/model.onnx``.
    """
    parts = model_dir.resolve().parts
    if len(parts) >= 3 and parts[-3] == "azureml-models":
        return parts[-2], parts[-1]
    name = meta.get("name") or os.environ.get("AL_MODEL_NAME") or onnx_path.parent.parent.name
    version = str(meta.get("version") or os.environ.get("AL_MODEL_VERSION") or onnx_path.parent.name)
    return str(name), version


def run(raw_data: str | bytes) -> dict[str, Any]:
    """Score a batch of items; log each result through the monitoring client."""
    if _endpoint is None:
        raise RuntimeError("init() was not called")
    try:
        ids, uris, blobs, embeddings = _parse(raw_data)
    except ValueError as exc:
        return {"error": str(exc)}
    records = score_items(_endpoint.scorer, _endpoint.featurizer, _endpoint.model, ids, uris, blobs,
                          scored_at=datetime.now(UTC), embeddings=embeddings)
    if _endpoint.client is not None:
        for record, data in zip(records, blobs, strict=True):
            if not record["item_uri"]:
                del record["item_uri"]
                record["item_base64"] = base64.b64encode(data).decode()
            _endpoint.client.log(record)
    return {"predictions": [{"item_id": r["item_id"], "predicted_label": r["predicted_label"],
                             "probabilities": r["probabilities"]} for r in records]}


def shutdown() -> None:
    """Flush what the client still holds (also registered with atexit)."""
    if _endpoint is not None and _endpoint.client is not None:
        _endpoint.client.close()


def _parse(raw_data: str | bytes) -> tuple[list[str], list[str], list[bytes], bool]:
    try:
        body = json.loads(raw_data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"the request is not JSON: {exc}") from None
    items = body.get("items") if isinstance(body, dict) else None
    if not isinstance(items, list) or not items:
        raise ValueError("send {\"items\": [{\"item_id\": ..., \"data\": <base64>}, ...]}")
    if len(items) > MAX_ITEMS:
        raise ValueError(f"{len(items)} items; at most {MAX_ITEMS} per request")
    ids, uris, blobs = [], [], []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("item_id"), str):
            raise ValueError(f"items[{i}]: needs a string item_id")
        why = item_id_problem(item["item_id"])
        if why:
            raise ValueError(f"items[{i}].item_id {why}")
        try:
            data = base64.b64decode(str(item.get("data", "")), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"items[{i}].data is not valid base64") from None
        if not data:
            raise ValueError(f"items[{i}].data is empty")
        ids.append(item["item_id"])
        uris.append(str(item.get("item_uri") or ""))
        blobs.append(data)
    return ids, uris, blobs, bool(body.get("embeddings", True))
