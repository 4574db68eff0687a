"""A team's own training step, written only against docs/your-model.md: a scikit-learn MLP.

Not the project's head: one hidden ReLU layer of 32 units (the logged embedding), trained with Adam, exported
to ONNX by hand (no skl2onnx). It reads the manifest and items as the contract describes, features the items
with the loop's featurizer (the scoring side feeds the model those rows), holds out a quarter of the items by
a hash of their id, and scores the checkpoint's ``model.onnx`` on the same held-out items when there is one.

    python -m tests.support.own_trainer --manifest M --classes JSON --checkpoint DIR --items DIR \
        --metric accuracy --out DIR
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np

HIDDEN = 32


def _path(url: str, items: Path | None) -> Path:
    if url.startswith("azureml://"):
        if items is None:
            raise SystemExit("azureml:// items need --items")
        return items / unquote(url.partition("/paths/")[2])
    parsed = urlparse(url)
    return Path(unquote(parsed.path)) if parsed.scheme == "file" else Path(url)


def _held_out(item_id: str) -> bool:
    return hashlib.sha256(item_id.encode()).digest()[0] < 64  # a quarter, the same every round


def to_onnx(coefs: list[np.ndarray], intercepts: list[np.ndarray], columns: np.ndarray, n_classes: int) -> bytes:
    """features -> relu(x W1 + b1) = embedding -> softmax(h W2 + b2) = probabilities, one column per class
    of the project (classes the MLP never saw get a very low bias)."""
    from onnx import TensorProto, helper, numpy_helper

    w1, b1 = coefs[0].astype(np.float32), intercepts[0].astype(np.float32)
    w_out, b_out = coefs[1], intercepts[1]
    if w_out.shape[1] == 1:  # binary MLP: one logistic unit; softmax([-z/2, z/2]) == sigmoid(z)
        w_out, b_out = np.hstack([-w_out / 2, w_out / 2]), np.array([-b_out[0] / 2, b_out[0] / 2])
    w2 = np.zeros((w1.shape[1], n_classes), np.float32)
    b2 = np.full(n_classes, -30.0, np.float32)
    w2[:, columns], b2[columns] = w_out, b_out
    nodes = [
        helper.make_node("MatMul", ["features", "w1"], ["h0"]),
        helper.make_node("Add", ["h0", "b1"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["embedding"]),
        helper.make_node("MatMul", ["embedding", "w2"], ["z0"]),
        helper.make_node("Add", ["z0", "b2"], ["z1"]),
        helper.make_node("Softmax", ["z1"], ["probabilities"], axis=1),
    ]
    graph = helper.make_graph(
        nodes, "own-mlp",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, [None, w1.shape[0]])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, n_classes]),
         helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [None, w1.shape[1]])],
        [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2"))],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def _run(onnx_bytes: bytes, features: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    return np.asarray(session.run(["probabilities"], {"features": features.astype(np.float32)})[0])


def train(manifest: Path, out: Path, *, class_names: list[str], checkpoint: Path | None, items: Path | None,
          metric: str = "accuracy") -> dict[str, float | None]:
    from sklearn.neural_network import MLPClassifier

    from shared.model.items import Featurizer

    if metric != "accuracy":
        raise SystemExit(f"this trainer measures accuracy, not {metric}")
    rows = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    index = {c: i for i, c in enumerate(class_names)}
    x = Featurizer().features([_path(r["image_url"], items).read_bytes() for r in rows])
    y = np.array([index[r["label"]] for r in rows])
    test = np.array([_held_out(r["item_id"]) for r in rows])
    if test.all() or not test.any():
        test = np.ones(len(rows), bool)
        fit = test
    else:
        fit = ~test
    mlp = MLPClassifier(hidden_layer_sizes=(HIDDEN,), alpha=1e-3, max_iter=400, random_state=0)
    mlp.fit(x[fit], y[fit])
    onnx_bytes = to_onnx(mlp.coefs_, mlp.intercepts_, mlp.classes_, len(class_names))
    proba = _run(onnx_bytes, x[test])
    baseline = None
    found = next(iter(sorted(checkpoint.rglob("model.onnx"))), None) if checkpoint is not None else None
    if found is not None and json.loads((found.parent / "meta.json").read_text())["class_names"] == class_names:
        baseline = float(np.mean(_run(found.read_bytes(), x[test]).argmax(axis=1) == y[test]))
    metrics = {
        "accuracy": float(np.mean(proba.argmax(axis=1) == y[test])),
        "confidence": float(proba.max(axis=1).mean()),
        "train_accuracy": float(np.mean(_run(onnx_bytes, x[fit]).argmax(axis=1) == y[fit])),
        "baseline_accuracy": baseline,
        "trainer": "own-mlp",
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "model.onnx").write_bytes(onnx_bytes)
    (out / "meta.json").write_text(json.dumps({"class_names": class_names, "trainer": "own-mlp"}))
    (out / "metrics.json").write_text(json.dumps(metrics))
    np.savez(out / "mlp.npz", *mlp.coefs_, *mlp.intercepts_)  # its own checkpoint format, kept by the loop
    return metrics


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.support.own_trainer")
    p.add_argument("--manifest", type=Path, required=True)
    p.add_argument("--classes", required=True)
    p.add_argument("--checkpoint", type=Path, default=None)
    p.add_argument("--items", type=Path, default=None)
    p.add_argument("--metric", default="accuracy")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    metrics = train(args.manifest, args.out, class_names=json.loads(args.classes), checkpoint=args.checkpoint,
                    items=args.items, metric=args.metric)
    print(json.dumps(metrics), file=sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
