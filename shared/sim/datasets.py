"""Datasets for the simulation: glyphs67 (default), scikit-learn's digits, a folder of images with
one sub-folder per class, or an ``.npz`` of ``images`` or ``features`` plus ``labels``."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from shared.errors import DatasetError, Problem

BUILTIN = ("glyphs67", "digits")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
MIN_PER_CLASS = 2  # readable images a class folder needs
MAX_SIDE = 256  # folder images are shrunk to this longer side when read
_REPR = re.compile(r"<[^<>]* at 0x[0-9a-fA-F]+>")  # an object's repr, as some of Pillow's messages hold


_SUFFIXES = ", ".join(sorted(s.lstrip(".") for s in IMAGE_SUFFIXES))
_GIVE = f"give {', '.join(BUILTIN)}, a folder with one sub-folder of images per class, or an .npz file"


@dataclass(frozen=True)
class Skipped:
    """A file in a class folder that was left out, and why."""

    path: Path
    reason: str


@dataclass(frozen=True)
class Dataset:
    """Items (uint8 images N×H×W[×C], or float feature rows N×D) with integer labels."""

    name: str
    items: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    skipped: tuple[Skipped, ...] = ()  # files of a class folder that were left out

    @property
    def is_images(self) -> bool:
        return self.items.dtype == np.uint8

    def __len__(self) -> int:
        return len(self.labels)


def _fail(reason: str, field: str = "dataset") -> DatasetError:
    return DatasetError(reason, [Problem(None, field, reason)])


def load_dataset(spec: str, *, seed: int = 0, per_class: int = 200,
                 on_skip: Callable[[Skipped], None] = lambda skipped: None) -> Dataset:
    """Resolve a dataset name or path; raise :class:`DatasetError` naming the problem. A file of a class
    folder that is not a readable image is left out: ``on_skip`` hears of it at once (before an error it
    may cause) and the dataset's ``skipped`` lists them all."""
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
        try:
            return _load_folder(path, on_skip)
        except OSError as exc:  # a folder this user cannot list
            raise _fail(f"cannot read {exc.filename or path}: {exc.strerror or exc} (check that you may read "
                        "it)") from None
    if path.suffix == ".npz" and path.is_file():
        return _load_npz(path)
    if path.exists():
        raise _fail(f"{spec!r} is neither a folder nor an .npz file ({_GIVE})")
    raise _fail(f"unknown dataset {spec!r}: no such file or folder ({_GIVE})")


def _load_folder(root: Path, on_skip: Callable[[Skipped], None]) -> Dataset:
    subfolders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(subfolders) < 2:
        loose = sum(1 for f in root.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        found = (f"{root} holds {loose} images but no class sub-folders" if loose and not subfolders
                 else f"{root} has {len(subfolders)} class sub-folder{'' if len(subfolders) == 1 else 's'}")
        raise _fail(f"{found}; at least two are needed (put each class's images in its own sub-folder, "
                    f"e.g. {root / 'cats'} and {root / 'dogs'})")
    images, labels, skipped = [], [], []
    for index, folder in enumerate(subfolders):
        read = 0
        files = sorted(f for f in folder.iterdir() if f.is_file() and not f.name.startswith("."))
        for f in files:
            reason = None if f.suffix.lower() in IMAGE_SUFFIXES else f"not an image file ({f.suffix or 'no suffix'})"
            if reason is None:
                image_or_reason = _read_image(f)
                if isinstance(image_or_reason, str):
                    reason = image_or_reason
                else:
                    images.append(image_or_reason)
                    labels.append(index)
                    read += 1
            if reason is not None:
                skipped.append(Skipped(f, reason))
                on_skip(skipped[-1])
        if read < MIN_PER_CLASS:
            others = len(files) - read
            also = f" and {others} skipped file{'' if others == 1 else 's'}" if others else ""
            raise _fail(f"class folder {folder} has {read} readable image{'' if read == 1 else 's'}{also}; each class "
                        f"needs at least {MIN_PER_CLASS} (add images to it, {_SUFFIXES}, or move it out of {root})")
    shapes = {g.shape for g in images}
    if len(shapes) > 1:  # resize to the most common size so the array is rectangular
        from skimage.transform import resize

        target = max(shapes, key=[g.shape for g in images].count)
        images = [g if g.shape == target else (resize(g, target, anti_aliasing=True) * 255).astype(np.uint8)
                  for g in images]
    return Dataset(root.name, np.stack(images), np.asarray(labels, np.int64), tuple(p.name for p in subfolders),
                   tuple(skipped))


def _read_image(path: Path) -> np.ndarray | str:
    """A grey uint8 array of the image at ``path``, its longer side at most :data:`MAX_SIDE` (the features
    see 32 x 32, and a folder of camera photos would otherwise take gigabytes); else why it cannot be read."""
    try:
        with Image.open(path) as opened:
            if max(opened.size) > MAX_SIDE:
                opened.draft(None, (2 * MAX_SIDE, 2 * MAX_SIDE))  # JPEG: decode at a fraction of the size
            gray = opened.mode in ("1", "L", "I", "I;16", "F", "P", "LA")
            image = opened.convert("L" if gray else "RGB")
        image.thumbnail((MAX_SIDE, MAX_SIDE))
        array = np.asarray(image, dtype=np.uint8)
    except UnidentifiedImageError:  # before OSError, its base; its message shows the file object's repr
        return "not an image Pillow can read"
    except OSError as exc:  # a truncated or damaged file, or one this user cannot read
        return f"unreadable image: {exc.strerror or _REPR.sub('the file', str(exc))}"
    except (ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        return f"unreadable image: {_REPR.sub('the file', str(exc)) or type(exc).__name__}"
    return array if array.ndim == 2 else array.mean(axis=2).astype(np.uint8)


def _load_npz(path: Path) -> Dataset:
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise _fail(f"cannot read {path}: {_REPR.sub('the file', str(exc))} (save it with numpy.savez)") from exc
    with data:
        keys = set(data.files)
        if "labels" not in keys:
            raise _fail(f"{path} has no 'labels' array, only {sorted(keys)} (save one label per item as 'labels')")
        labels = data["labels"]
        if "images" in keys:
            items = data["images"]
            if items.dtype != np.uint8 or items.ndim not in (3, 4):
                raise _fail(f"{path}: 'images' is {items.dtype} {items.shape} (save uint8 N×H×W or N×H×W×C)")
        elif "features" in keys:
            items = data["features"]
            if items.ndim != 2 or not np.issubdtype(items.dtype, np.number):
                raise _fail(f"{path}: 'features' is {items.dtype} {items.shape} (save a numeric N×D array)")
            items = items.astype(np.float32)
            if not np.isfinite(items).all():
                raise _fail(f"{path}: 'features' holds NaN or infinite values (replace or drop those rows)")
        else:
            raise _fail(f"{path} has neither an 'images' nor a 'features' array, only {sorted(keys)} "
                        "(save the items under one of these names)")
        if labels.ndim != 1 or len(labels) != len(items):
            raise _fail(f"{path}: 'labels' has shape {labels.shape} for {len(items)} items "
                        "(save a 1-D array, one label per item)")
        names = sorted({str(v) for v in labels.tolist()})
    if len(names) < 2:
        raise _fail(f"{path} has {len(names)} class{'' if len(names) == 1 else 'es'} in 'labels'; at least two "
                    "are needed (add items of another class)")
    index = {n: i for i, n in enumerate(names)}
    targets = np.asarray([index[str(v)] for v in labels.tolist()], np.int64)
    return Dataset(path.stem, items, targets, tuple(names))
