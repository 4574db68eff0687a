"""The compact embedding every prediction logs: the feature vector times a fixed projection.

Batch-aware strategies need an embedding per prediction, but logging the full feature vector (388
floats for the default features) makes every stored prediction about 4 KB. The model instead emits
``features @ P``, with P a (features × ``EMBEDDING_WIDTH``) matrix with orthonormal columns (or
rows, when there are fewer features than the width: then it is an exact isometry), drawn once from
a fixed seed. P travels with the model version (``head.npz``; the ONNX graph's second output) and is
carried forward unchanged when a version is warm-started from another, so embeddings logged by
different versions of one model stay comparable. A random projection keeps distances and angles up
to a small distortion (Johnson–Lindenstrauss) and needs no data; its cost to the default strategy is
measured in docs/label-efficiency.md.
"""

from __future__ import annotations

import numpy as np

EMBEDDING_WIDTH = 64
_SEED = 20260101


def make_projection(dim: int, width: int = EMBEDDING_WIDTH) -> np.ndarray:
    """A (dim, width) float32 matrix with orthonormal columns (dim >= width) or rows (dim < width)."""
    if dim < 1 or width < 1:
        raise ValueError(f"dim and width must be positive, got {dim} and {width}")
    g = np.random.default_rng(_SEED).standard_normal((max(dim, width), min(dim, width)))
    q, r = np.linalg.qr(g)
    q = q * np.sign(np.diag(r))  # a unique Q: the sign convention of QR is not fixed
    return (q if dim >= width else q.T).astype(np.float32)
