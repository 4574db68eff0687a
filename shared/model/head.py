"""The classifier head: multinomial logistic regression, warm-started, exported to ONNX.

The head always covers every class of the project, also those with no label yet (their rows get
a zero weight and a very low bias), so every model version emits probability vectors of the same
length and order.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import LogisticRegression

from shared.errors import TrainingError
from shared.model.embedding import EMBEDDING_WIDTH, make_projection

_UNSEEN_BIAS = -30.0  # softmax weight e^-30 relative: effectively zero probability


@dataclass(frozen=True)
class HeadWeights:
    """The whole state of a head: (classes, features) weights, (classes,) biases, and the
    (features, width) projection of the logged embedding (None: the model logs none of its own)."""

    coef: np.ndarray
    intercept: np.ndarray
    projection: np.ndarray | None = None

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        arrays = {"coef": self.coef, "intercept": self.intercept}
        if self.projection is not None:
            arrays["projection"] = self.projection
        np.savez(buf, **arrays)  # type: ignore[arg-type]
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> HeadWeights:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            return cls(z["coef"], z["intercept"], z["projection"] if "projection" in z.files else None)


def _projection(dim: int, base: HeadWeights | None, width: int | None) -> np.ndarray | None:
    """The base version's projection when it fits (embeddings stay comparable across versions),
    else a new one of ``width`` (None or 0: no projection)."""
    if base is not None and base.projection is not None and base.projection.shape[0] == dim:
        return base.projection
    return make_projection(dim, width) if width else None


def train_head(
    features: np.ndarray,
    targets: np.ndarray,
    n_classes: int,
    *,
    base: HeadWeights | None = None,
    c: float = 100.0,
    max_iter: int = 300,
    embedding_width: int | None = EMBEDDING_WIDTH,
) -> HeadWeights:
    """Fit the head on ``features`` and class indices ``targets``; warm-start from ``base``, whose
    embedding projection is kept (else one of ``embedding_width`` is made)."""
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(targets, dtype=np.int64)
    if len(x) != len(y) or len(x) == 0:
        raise TrainingError(f"need as many targets as feature rows (got {len(x)} and {len(y)})")
    present = np.unique(y)
    if present.min() < 0 or present.max() >= n_classes:
        raise TrainingError(f"class index out of range 0..{n_classes - 1}")
    coef = np.zeros((n_classes, x.shape[1]))
    intercept = np.full(n_classes, _UNSEEN_BIAS)
    projection = _projection(x.shape[1], base, embedding_width)
    if len(present) == 1:  # one class: nothing to separate, predict it
        intercept[present[0]] = 0.0
        return HeadWeights(coef.astype(np.float32), intercept.astype(np.float32), projection)
    model = LogisticRegression(C=c, max_iter=max_iter, warm_start=base is not None, tol=1e-4)
    # sklearn warm-starts multinomial fits from (classes, features) shaped weights
    if base is not None and base.coef.shape == coef.shape and len(present) > 2:
        model.coef_ = base.coef[present].astype(np.float64)
        model.intercept_ = base.intercept[present].astype(np.float64)
    model.fit(x, y)
    if len(present) == 2:  # binary: sklearn keeps one row for the positive class
        w, b = model.coef_[0], model.intercept_[0]
        coef[present[0]], coef[present[1]] = -w / 2, w / 2
        intercept[present[0]], intercept[present[1]] = -b / 2, b / 2
    else:
        coef[present] = model.coef_
        intercept[present] = model.intercept_
    return HeadWeights(coef.astype(np.float32), intercept.astype(np.float32), projection)


def predict_proba(weights: HeadWeights, features: np.ndarray) -> np.ndarray:
    """Softmax probabilities in NumPy (the ONNX model computes the same)."""
    z = np.asarray(features, dtype=np.float32) @ weights.coef.T + weights.intercept
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def accuracy(weights: HeadWeights, features: np.ndarray, targets: np.ndarray) -> float:
    """The share of rows whose top class is their target index."""
    return float(np.mean(predict_proba(weights, features).argmax(axis=1) == targets))


def to_onnx(weights: HeadWeights) -> bytes:
    """Convert with skl2onnx: input ``features`` (n, d) float32 -> ``probabilities`` (n, classes),
    plus ``embedding`` (n, width) = features @ projection when the head has a projection."""
    from skl2onnx import to_onnx as skl_to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    n_classes, dim = weights.coef.shape
    model = LogisticRegression()
    model.classes_ = np.arange(n_classes)
    coef, intercept = weights.coef.astype(np.float64), weights.intercept.astype(np.float64)
    if n_classes == 2:  # sklearn's binary form: one row, softmax of two == sigmoid of the difference
        coef, intercept = (coef[1] - coef[0])[None, :], intercept[1:] - intercept[:1]
    model.coef_ = coef
    model.intercept_ = intercept
    model.n_features_in_ = dim
    onx = skl_to_onnx(
        model,
        initial_types=[("features", FloatTensorType([None, dim]))],
        options={id(model): {"zipmap": False}},
        target_opset=17,
    )
    if weights.projection is not None:
        from onnx import TensorProto, helper, numpy_helper

        width = weights.projection.shape[1]
        onx.graph.initializer.append(numpy_helper.from_array(weights.projection.astype(np.float32), "projection"))
        onx.graph.node.append(helper.make_node("MatMul", ["features", "projection"], ["embedding"]))
        onx.graph.output.append(helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [None, width]))
    return onx.SerializeToString()
