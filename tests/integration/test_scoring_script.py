"""The Azure ML scoring script end to end: init() loads the ONNX model, run() scores through
score_items (the simulation's path), and the monitoring client posts to the real collector handler
served on a local HTTP server."""

from __future__ import annotations

import base64
import importlib.util
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

import azure.functions as func
import numpy as np
import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from functions.scoring_collector import handlers
from functions.scoring_collector.wiring import build_collector
from shared.core.records import ModelStatus, ModelVersion
from shared.model.features import FEATURE_DIM
from shared.model.head import to_onnx, train_head
from shared.model.items import Featurizer, encode_png
from shared.model.registry import OnnxScorer
from shared.model.scoring import score_items
from shared.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]
CLASSES = ("a", "b", "c")


def load_script():
    spec = importlib.util.spec_from_file_location("score_under_test", ROOT / "scoring" / "score.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def model_dir(tmp_path, rng):
    x = rng.normal(size=(60, FEATURE_DIM)).astype(np.float32)
    weights = train_head(x, rng.integers(0, 3, size=60), 3)
    folder = tmp_path / "model" / "glyphs" / "4"
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(to_onnx(weights))
    (folder / "meta.json").write_text(json.dumps({"class_names": list(CLASSES)}))
    return tmp_path / "model"


@pytest.fixture
def collector(tmp_path):
    col = build_collector(load_settings(data_dir=tmp_path / "data"))
    col.catalog.upsert_model_version(ModelVersion("glyphs", "4", CLASSES, status=ModelStatus.SERVING))
    return col


def serve_collector(http: HTTPServer, collector) -> list[int]:
    statuses: list[int] = []

    def handler(request: Request) -> Response:
        req = func.HttpRequest(method="POST", url=request.url, headers=dict(request.headers), body=request.data)
        resp = handlers.post_predictions(req, collector)
        statuses.append(resp.status_code)
        return Response(resp.get_body(), status=resp.status_code, content_type="application/json")

    http.expect_request("/api/predictions", method="POST").respond_with_handler(handler)
    return statuses


def test_score_and_collect_end_to_end(model_dir, collector, monkeypatch, rng, tmp_path):
    images = rng.integers(0, 256, size=(4, 20, 20), dtype=np.uint8)
    pngs = [encode_png(im) for im in images]
    with HTTPServer(host="127.0.0.1") as http:
        statuses = serve_collector(http, collector)
        monkeypatch.setenv("AZUREML_MODEL_DIR", str(model_dir))
        monkeypatch.setenv("AL_COLLECTOR_URL", http.url_for("/api/predictions"))
        script = load_script()
        script.init()
        items = [{"item_id": f"it-{i}", "data": base64.b64encode(b).decode()} for i, b in enumerate(pngs)]
        # an item already in the (embedded) object store, named by its file:// URI
        items[0]["item_uri"] = (tmp_path / "data" / "blobs" / "items" / "it-0.png").resolve().as_uri()
        answer = script.run(json.dumps({"items": items}))
        script._endpoint.client.flush(timeout=30)
        script.shutdown()

    assert statuses == [202]
    assert [p["item_id"] for p in answer["predictions"]] == [f"it-{i}" for i in range(4)]
    # The endpoint's numbers are the shared score_items path's numbers.
    scorer = OnnxScorer((model_dir / "glyphs" / "4" / "model.onnx").read_bytes(), CLASSES)
    expected = score_items(scorer, Featurizer(), ModelVersion("glyphs", "4", CLASSES), [f"it-{i}" for i in range(4)],
                           [""] * 4, pngs, scored_at=datetime.now(UTC))
    for got, want in zip(answer["predictions"], expected, strict=True):
        np.testing.assert_allclose(got["probabilities"], want["probabilities"], rtol=1e-6)
        assert got["predicted_label"] == want["predicted_label"]
    (count,) = collector.counts.counts_by_version()
    assert (count.model_name, count.model_version, count.predictions) == ("glyphs", "4", 4)
    assert len(collector.ingest._objects.list("items")) == 3  # inline items, content-addressed


def test_bad_requests_get_a_reason_and_nothing_is_logged(model_dir, monkeypatch):
    monkeypatch.setenv("AZUREML_MODEL_DIR", str(model_dir))
    monkeypatch.delenv("AL_COLLECTOR_URL", raising=False)
    script = load_script()
    script.init()
    assert script._endpoint.client is None
    assert "not JSON" in script.run("{nope")["error"]
    assert "base64" in script.run(json.dumps({"items": [{"item_id": "a", "data": "!!"}]}))["error"]
    assert "separators" in script.run(json.dumps({"items": [{"item_id": "../a", "data": "AA=="}]}))["error"]
    assert "items" in script.run(json.dumps({"items": []}))["error"]


def test_a_dead_collector_does_not_fail_scoring(model_dir, monkeypatch, rng):
    monkeypatch.setenv("AZUREML_MODEL_DIR", str(model_dir))
    monkeypatch.setenv("AL_COLLECTOR_URL", "http://127.0.0.1:9/api/predictions")  # discard port: refused
    script = load_script()
    script.init()
    png = encode_png(rng.integers(0, 256, size=(20, 20), dtype=np.uint8))
    answer = script.run(json.dumps({"items": [{"item_id": "x", "data": base64.b64encode(png).decode()}]}))
    assert len(answer["predictions"]) == 1
    script._endpoint.client.close(timeout=0.2)
    assert script._endpoint.client.stats.sent == 0


def test_the_model_identity_is_the_azure_ml_mount_path_not_the_registered_folder(tmp_path, monkeypatch):
    """Azure ML mounts ``<name>/<version>`` with the registered folder ``model/`` inside: the version is
    the mount's, and a redeploy of version 6 serves as 6 even with a stale AL_MODEL_VERSION."""
    script = load_script()
    mount = tmp_path / "var" / "azureml-app" / "azureml-models" / "glyphs" / "6"
    (mount / "model").mkdir(parents=True)
    onnx = mount / "model" / "model.onnx"
    monkeypatch.setenv("AL_MODEL_VERSION", "5")
    assert script.model_identity(mount, onnx, {"class_names": ["a"]}) == ("glyphs", "6")
    monkeypatch.delenv("AL_MODEL_VERSION")
    local = tmp_path / "models" / "m" / "3"
    assert script.model_identity(local, local / "model.onnx", {}) == ("m", "3")
