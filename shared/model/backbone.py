"""The frozen pretrained image backbone at run time: EfficientNet-Lite0 (ImageNet) in onnxruntime.

The ONNX file is made once by ``tools/export_backbone.py`` (in its own venv, the only place torch is
installed; see its docstring and the Makefile). Here only numpy, pillow and onnxruntime: no torch.

    backbone = Backbone("runs/models/backbone/efficientnet-lite0.onnx")
    feats = backbone.features(images)   # float32 N x 1280

``images`` are uint8 arrays of any size, grey (H x W, H x W x 1), grey+alpha, RGB or RGBA (alpha is
dropped), one at a time in a list or stacked N x H x W [x C]. Each is resized to 224 x 224 (bilinear,
aspect not kept) and scaled ``(x - 127) / 128`` in RGB order, the network's training preprocessing.
The features are the global-average-pooled output of the last convolution (after ReLU6).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["DEFAULT_PATH", "FEATURE_DIM", "INPUT_SIZE", "Backbone", "file_sha256", "preprocess"]

FEATURE_DIM = 1280
INPUT_SIZE = 224
MEAN, STD = 127.0, 128.0
DEFAULT_PATH = Path(__file__).resolve().parents[2] / "runs" / "models" / "backbone" / "efficientnet-lite0.onnx"
_BATCH = 32  # images per onnxruntime call (bounds memory: 32 x 3 x 224 x 224 float32 = 19 MB)


def file_sha256(path: Path | str) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _to_rgb(image: np.ndarray) -> Image.Image:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise ValueError(f"images must be uint8 numpy arrays, got {getattr(image, 'dtype', type(image).__name__)}")
    if image.ndim == 3 and image.shape[2] in (1, 2):
        image = image[..., 0]
    elif image.ndim == 3 and image.shape[2] == 4:
        image = image[..., :3]
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"an image must be H x W or H x W x 1-4 with H, W > 0, got shape {image.shape}")
    return Image.fromarray(np.ascontiguousarray(image))


def preprocess(images: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
    """uint8 images -> float32 N x 3 x 224 x 224, RGB, (x - 127) / 128."""
    if len(images) == 0:
        raise ValueError("images is empty")
    out = np.empty((len(images), 3, INPUT_SIZE, INPUT_SIZE), dtype=np.float32)
    for i, image in enumerate(images):
        rgb = _to_rgb(np.asarray(image)).resize((INPUT_SIZE, INPUT_SIZE), Image.Resampling.BILINEAR)
        x = np.asarray(rgb, dtype=np.float32)
        out[i] = ((x - MEAN) / STD).transpose(2, 0, 1)
    return out


class Backbone:
    """An onnxruntime session on the exported backbone. ``threads`` bounds onnxruntime's intra-op pool
    (None: onnxruntime's default, one per core). If ``<path>.sha256`` lies beside the file (the export
    writes it), the file must match it."""

    def __init__(self, path: Path | str | None = None, *, threads: int | None = None) -> None:
        import onnxruntime as ort

        self.path = Path(path or os.environ.get("AL_BACKBONE_ONNX") or DEFAULT_PATH)
        if not self.path.is_file():
            raise FileNotFoundError(
                f"backbone model {self.path} not found: make it once with `make backbone` "
                "(tools/export_backbone.py in its own venv)")
        self.sha256 = file_sha256(self.path)
        sidecar = self.path.with_name(self.path.name + ".sha256")
        if sidecar.is_file():
            expected = sidecar.read_text().split()[0]
            if expected != self.sha256:
                raise ValueError(f"{self.path} has sha256 {self.sha256}, but {sidecar.name} says {expected}")
        opts = ort.SessionOptions()
        if threads is not None:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        self._session = ort.InferenceSession(str(self.path), sess_options=opts, providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name
        out_shape = self._session.get_outputs()[0].shape
        if out_shape[-1] != FEATURE_DIM:
            raise ValueError(f"{self.path} outputs {out_shape}, expected N x {FEATURE_DIM}")

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Preprocessed float32 N x 3 x 224 x 224 -> float32 N x 1280."""
        (feats,) = self._session.run(None, {self._input: np.ascontiguousarray(batch, dtype=np.float32)})
        return np.asarray(feats, dtype=np.float32)

    def features(self, images: Sequence[np.ndarray] | np.ndarray, batch_size: int = _BATCH) -> np.ndarray:
        """uint8 images of any size -> float32 N x 1280."""
        if len(images) == 0:
            raise ValueError("images is empty")
        parts = [self.run(preprocess(images[i:i + batch_size])) for i in range(0, len(images), batch_size)]
        return np.concatenate(parts, axis=0)
