"""Item bytes <-> arrays, and the featurizer both training and scoring call.

Images travel as PNG (or any format Pillow reads); feature vectors (an ``.npz`` dataset of
``features``) travel as ``.npy``. Features are a pure function of the item bytes, so they are cached
by content hash: a scored item that is later labeled is not featurised twice.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from shared.errors import InvalidInputError, Problem
from shared.model.features import extract_features

NPY_MAGIC = b"\x93NUMPY"


def encode_png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def encode_vector(vector: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.asarray(vector, dtype=np.float32), allow_pickle=False)
    return buf.getvalue()


def decode_image(data: bytes) -> np.ndarray:
    """An 8-bit grayscale or RGB array from encoded image bytes."""
    try:
        with Image.open(io.BytesIO(data)) as opened:
            gray = opened.mode in ("1", "L", "I", "I;16", "F", "P", "LA")
            return np.asarray(opened.convert("L" if gray else "RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InvalidInputError("unreadable image", [Problem(None, "item", str(exc))]) from exc


class Featurizer:
    """Item bytes -> feature rows with :func:`extract_features`, cached by SHA-256 of the bytes."""

    def __init__(self) -> None:
        self._cache: dict[str, np.ndarray] = {}

    @staticmethod
    def key(data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()

    def prime(self, keys: Sequence[str], features: np.ndarray) -> None:
        """Seed the cache with features already computed by :func:`extract_features`."""
        for k, row in zip(keys, features, strict=True):
            self._cache[k] = row

    def features(self, items: Sequence[bytes]) -> np.ndarray:
        keys = [self.key(b) for b in items]
        missing = [i for i, k in enumerate(keys) if k not in self._cache]
        if missing:
            computed = self._compute([items[i] for i in missing])
            for i, row in zip(missing, computed, strict=True):
                self._cache[keys[i]] = row
        return np.stack([self._cache[k] for k in keys]) if keys else np.zeros((0, 0), np.float32)

    @staticmethod
    def _compute(items: Sequence[bytes]) -> np.ndarray:
        if all(b.startswith(NPY_MAGIC) for b in items):
            return np.stack([np.load(io.BytesIO(b), allow_pickle=False) for b in items]).astype(np.float32)
        images = [decode_image(b) for b in items]
        shapes = {im.shape for im in images}
        if len(shapes) == 1:
            return extract_features(np.stack(images))
        return np.concatenate([extract_features(im[None]) for im in images])
