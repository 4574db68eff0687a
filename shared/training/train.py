"""Train the head from the serving checkpoint on the JSON Lines manifest; write ONNX, weights, metrics.

Runs inside the Azure ML command job (``training/job.yml``). The manifest is in the Azure ML image
classification schema (one ``{"image_url": ..., "label": ...}`` per line). A deterministic share of
the items (by a hash of the item id) is held out: the candidate *and* the checkpoint are scored on it,
so the orchestrator's gate compares the two models on the same data.

Output folder: ``model.onnx``, ``head.npz``, ``meta.json`` (classes, metrics; the registry's
layout) and ``metrics.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np

from shared.core.calibration import CONFIDENCE, TRAIN_ACCURACY, mean_confidence
from shared.errors import TrainingError
from shared.model.head import HeadWeights, accuracy, predict_proba, to_onnx, train_head
from shared.model.items import Featurizer


def read_manifest(path: Path) -> list[tuple[str, str, str]]:
    """``(item_id, image_url, label)`` per line; every bad line is reported with its number."""
    rows, problems = [], []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
            url, label = data["image_url"], data["label"]
            if not isinstance(url, str) or not isinstance(label, str) or not url or not label:
                raise ValueError("image_url and label must be non-empty strings")
        except (ValueError, KeyError, TypeError) as exc:
            problems.append(f"line {n}: {exc}")
            continue
        rows.append((str(data.get("item_id") or url), url, label))
    if problems:
        raise TrainingError(f"{path}: {len(problems)} bad lines ({'; '.join(problems[:5])})")
    if not rows:
        raise TrainingError(f"{path}: the manifest is empty")
    return rows


def resolve(url: str, items_root: Path | None) -> Path:
    """A local path for ``url``: ``azureml://datastores/<ds>/paths/<p>`` under the mounted items root,
    ``file://`` URIs and plain paths as they are."""
    if url.startswith("azureml://"):
        if items_root is None:
            raise TrainingError("the manifest names azureml:// items; mount them and pass --items")
        _, _, rest = url.partition("/paths/")
        return items_root / unquote(rest)
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme in ("", None):
        return Path(url)
    raise TrainingError(f"cannot read item {url!r}: use azureml:// or file:// URLs")


def held_out(item_id: str, fraction: float) -> bool:
    """Deterministic split: the same item is always on the same side, whatever the run."""
    digest = hashlib.sha256(item_id.encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < fraction


def train(manifest: Path, out: Path, *, class_names: list[str], checkpoint: Path | None, items: Path | None,
          holdout: float = 0.2, metric: str = "accuracy") -> dict[str, float | int | None]:
    if metric != "accuracy":
        raise TrainingError(f"this trainer measures 'accuracy', not {metric!r}")
    rows = read_manifest(manifest)
    index = {c: i for i, c in enumerate(class_names)}
    unknown = sorted({label for _, _, label in rows if label not in index})
    if unknown:
        raise TrainingError(f"labels outside the model's classes: {unknown[:5]}")
    feats = Featurizer().features([resolve(url, items).read_bytes() for _, url, _ in rows])
    targets = np.array([index[label] for _, _, label in rows])
    test = np.array([held_out(item_id, holdout) for item_id, _, _ in rows])
    if test.all() or not test.any():  # too few items to split: evaluate on what we trained on
        test = np.ones(len(rows), bool)
        train_rows = test
    else:
        train_rows = ~test
    base = None
    found = next(iter(sorted(checkpoint.rglob("head.npz"))), None) if checkpoint is not None else None
    if found is not None:  # a downloaded model may nest its files one folder down
        base = HeadWeights.from_bytes(found.read_bytes())
        if base.coef.shape[0] != len(class_names):
            raise TrainingError(f"the checkpoint has {base.coef.shape[0]} classes, the manifest {len(class_names)}")
    weights = train_head(feats[train_rows], targets[train_rows], len(class_names), base=base)
    proba = predict_proba(weights, feats[test])
    metrics: dict[str, float | int | None] = {
        metric: float(np.mean(proba.argmax(axis=1) == targets[test])),
        CONFIDENCE: mean_confidence(proba),
        TRAIN_ACCURACY: accuracy(weights, feats[train_rows], targets[train_rows]),
        f"baseline_{metric}": accuracy(base, feats[test], targets[test]) if base is not None else None,
        "n_train": int(train_rows.sum()), "n_eval": int(test.sum()),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "model.onnx").write_bytes(to_onnx(weights))
    (out / "head.npz").write_bytes(weights.to_bytes())
    (out / "meta.json").write_text(json.dumps({"class_names": class_names, "metrics": metrics}))
    (out / "metrics.json").write_text(json.dumps(metrics))
    return metrics


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m shared.training.train", description=__doc__.split("\n")[0])
    p.add_argument("--manifest", type=Path, required=True, help="JSON Lines file (or a folder holding one)")
    p.add_argument("--classes", required=True, help="JSON list of class names, in the model's order")
    p.add_argument("--checkpoint", type=Path, default=None, help="folder of the serving version (head.npz)")
    p.add_argument("--items", type=Path, default=None, help="mounted root of the items datastore")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--metric", default="accuracy")
    p.add_argument("--holdout", type=float, default=0.2)
    args = p.parse_args(argv)
    manifest = args.manifest
    if manifest.is_dir():
        found = sorted(manifest.glob("*.jsonl"))
        if not found:
            raise SystemExit(f"no .jsonl file in {manifest}")
        manifest = found[0]
    try:
        metrics = train(manifest, args.out, class_names=json.loads(args.classes), checkpoint=args.checkpoint,
                        items=args.items, holdout=args.holdout, metric=args.metric)
    except TrainingError as exc:
        print(f"training failed: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(metrics))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
