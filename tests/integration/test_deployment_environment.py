"""The scoring and training environments as Azure ML builds them: a fresh venv from exactly the pip
list of ``training/environment/conda.yaml`` (nothing from the project's venv), then the online
deployment's ``scoring/score.py`` ``init()`` + ``run()`` on a model folder the trainer made, posting to
a collector on loopback, and the training job's entry point (``python -m shared.training.train``, the
command of ``training/job.yml``) on a small manifest. Issue 20, item 1: without ``tenacity`` in that
list ``import scoring.score`` fails, and the deployment never starts.

The venv is built once per content of the list (``.venv-deploy-env``, about 2-3 minutes the first
time) and reused while the list is unchanged.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml
from werkzeug import Request, Response

from shared.model.items import encode_png
from shared.training.train import train
from tests.support.venvs import built_venv

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
CONDA = ROOT / "training" / "environment" / "conda.yaml"
VENV = ROOT / ".venv-deploy-env"
CLASSES = ["dark", "light"]


def pip_list() -> list[str]:
    deps = yaml.safe_load(CONDA.read_text())["dependencies"]
    return next(d["pip"] for d in deps if isinstance(d, dict) and "pip" in d)


@pytest.fixture(scope="module")
def env_python() -> Path:
    wanted = pip_list()
    return built_venv(VENV, f".stamp-{hashlib.sha256(chr(10).join(wanted).encode()).hexdigest()[:16]}", wanted)


def images(n: int, seed: int = 0) -> tuple[list[bytes], list[str]]:
    rng = np.random.default_rng(seed)
    labels = [CLASSES[i % 2] for i in range(n)]
    pngs = [encode_png(np.clip(rng.normal(60 if lb == "dark" else 190, 20, (32, 32)), 0, 255).astype(np.uint8))
            for lb in labels]
    return pngs, labels


def manifest(folder: Path, n: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    pngs, labels = images(n)
    rows = []
    for i, (png, label) in enumerate(zip(pngs, labels, strict=True)):
        (folder / f"i{i}.png").write_bytes(png)
        rows.append(json.dumps({"image_url": str(folder / f"i{i}.png"), "label": label, "item_id": f"i{i}"}))
    path = folder / "manifest.jsonl"
    path.write_text("\n".join(rows) + "\n")
    return path


def code_dir(tmp: Path) -> Path:
    """What `al bootstrap` uploads as the deployment's code: scoring/ and shared/ only."""
    code = tmp / "code"
    for part in ("scoring", "shared"):
        shutil.copytree(ROOT / part, code / part, ignore=shutil.ignore_patterns("__pycache__"))
    return code


def test_the_scoring_script_starts_and_scores_in_the_deployment_environment(env_python, tmp_path, httpserver):
    posts: list[dict] = []

    def collect(request: Request) -> Response:
        posts.append(json.loads(request.get_data()))
        return Response(json.dumps({"accepted": len(posts[-1])}), 202, content_type="application/json")

    httpserver.expect_request("/api/predictions", method="POST").respond_with_handler(collect)
    mount = tmp_path / "azureml-models" / "m" / "1"
    train(manifest(tmp_path / "train", 20), mount / "model", class_names=CLASSES, checkpoint=None, items=None)
    pngs, _ = images(4, seed=1)
    body = {"items": [{"item_id": f"s{i}", "data": base64.b64encode(p).decode()}
                      for i, p in enumerate(pngs)]}
    script = textwrap.dedent(f"""
        import json, sys
        import scoring.score as score
        score.init()
        out = score.run({json.dumps(json.dumps(body))})
        ok = score._endpoint.client.flush(timeout=30)
        score.shutdown()
        print(json.dumps({{"out": out, "flushed": ok}}))
    """)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "AZUREML_MODEL_DIR": str(mount),
           "AL_COLLECTOR_URL": httpserver.url_for("/api/predictions")}
    run = subprocess.run([str(env_python), "-c", script], cwd=code_dir(tmp_path), env=env, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-4000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["flushed"] is True
    assert "error" not in result["out"], result["out"]
    assert [r["item_id"] for r in result["out"]["predictions"]] == [f"s{i}" for i in range(4)]
    records = [r for post in posts for r in post]
    assert sorted(r["item_id"] for r in records) == [f"s{i}" for i in range(4)]
    assert all(r["model_name"] == "m" and r["model_version"] == "1" for r in records)


def test_the_training_job_runs_in_its_environment(env_python, tmp_path):
    out = tmp_path / "out"
    run = subprocess.run([str(env_python), "-m", "shared.training.train", "--manifest",
                          str(manifest(tmp_path / "train", 20)), "--classes", json.dumps(CLASSES),
                          "--out", str(out)],
                         cwd=code_dir(tmp_path), env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-4000:]
    assert (out / "model.onnx").is_file() and (out / "meta.json").is_file()
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"accuracy", "confidence", "train_accuracy"} <= set(metrics)
