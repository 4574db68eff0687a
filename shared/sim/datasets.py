"""Datasets for the simulation: glyphs67 (default), scikit-learn's digits, a folder of images with
one sub-folder per class, or an ``.npz`` of ``images`` or ``features`` plus ``labels``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shared.errors import DatasetError, Problem
from shared.model.items import decode_image

BUILTIN = ("glyphs67", "digits")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


@dataclass(frozen=True)
class Dataset:
    """Items (uint8 images N×H×W[×C], or float feature rows N×D) with integer labels."""

    name: str
    items: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]

    @property
    def is_images(self) -> bool:
        return self.items.dtype == np.uint8

    def __len__(self) -> int:
        return len(self.labels)


def _fail(reason: str, field: str = "dataset") -> DatasetError:
    return DatasetError(reason, [Problem(None, field, reason)])


def load_dataset(spec: str, *, seed: int = 0, per_class: int = 200) -> Dataset:
    """Resolve a dataset name or path; raise :class:`DatasetError` naming the problem."""
    if spec == "glyphs67":
        from shared.sim.glyphs import GLYPH_CLASSES, render_glyphs67

        images, labels = render_glyphs67(per_class, seed=seed)
        return Dataset("glyphs67", images, labels.astype(np.int64), tuple(GLYPH_CLASSES))
    if spec == "digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        images = np.clip(d.images * 16, 0, 255).astype(np.uint8)  # 0..16 -> 0..255
        return Dataset("digits", images, d.target.astype(np.int64), tuple(f"digit_{i}" for i in range(10)))
    path = Path(spec)
    if path.is_dir():
        return _load_folder(path)
    if path.suffix == ".npz" and path.is_file():
        return _load_npz(path)
    if path.exists():
        raise _fail(f"{spec!r} is neither a folder of class sub-folders nor an .npz file")
    raise _fail(f"unknown dataset {spec!r}: use {', '.join(BUILTIN)}, a folder, or an .npz file")


def _load_folder(root: Path) -> Dataset:
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise _fail(f"{root} has {len(classes)} class sub-folder(s); at least two are needed")
    images, labels = [], []
    for index, name in enumerate(classes):
        files = sorted(f for f in (root / name).iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise _fail(f"class folder {root / name} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        for f in files:
            try:
                images.append(decode_image(f.read_bytes()))
            except Exception as exc:
                raise _fail(f"unreadable image {f}: {exc}") from exc
            labels.append(index)
    gray = [im if im.ndim == 2 else im.mean(axis=2).astype(np.uint8) for im in images]
    shapes = {g.shape for g in gray}
    if len(shapes) > 1:  # resize to the most common size so the array is rectangular
        from skimage.transform import resize

        target = max(shapes, key=[g.shape for g in gray].count)
        gray = [g if g.shape == target else (resize(g, target, anti_aliasing=True) * 255).astype(np.uint8)
                for g in gray]
    return Dataset(root.name, np.stack(gray), np.asarray(labels, np.int64), tuple(classes))


def _load_npz(path: Path) -> Dataset:
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise _fail(f"cannot read {path}: {exc}") from exc
    with data:
        keys = set(data.files)
        if "labels" not in keys:
            raise _fail(f"{path} has no 'labels' array (found {sorted(keys)})")
        labels = data["labels"]
        if "images" in keys:
            items = data["images"]
            if items.dtype != np.uint8 or items.ndim not in (3, 4):
                raise _fail(f"'images' must be uint8 N×H×W or N×H×W×C, got {items.dtype} {items.shape}")
        elif "features" in keys:
            items = data["features"]
            if items.ndim != 2 or not np.issubdtype(items.dtype, np.number):
                raise _fail(f"'features' must be a numeric N×D array, got {items.dtype} {items.shape}")
            items = items.astype(np.float32)
            if not np.isfinite(items).all():
                raise _fail("'features' holds NaN or infinite values")
        else:
            raise _fail(f"{path} needs an 'images' or a 'features' array (found {sorted(keys)})")
        if labels.ndim != 1 or len(labels) != len(items):
            raise _fail(f"'labels' must be 1-D with one entry per item ({len(items)}), got shape {labels.shape}")
        names = sorted({str(v) for v in labels.tolist()})
    if len(names) < 2:
        raise _fail(f"{path} has {len(names)} class(es); at least two are needed")
    index = {n: i for i, n in enumerate(names)}
    targets = np.asarray([index[str(v)] for v in labels.tolist()], np.int64)
    return Dataset(path.stem, items, targets, tuple(names))
