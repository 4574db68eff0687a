"""The training step's contract: what a training command receives and what it must produce.

``docs/your-model.md`` is the prose. A training step (``python -m shared.training.train``, or a team's own
command set by ``AL_TRAINING_COMMAND`` / the ``command:`` of ``training/job.yml``) is called as::

    <command> --manifest M.jsonl --classes '["a", "b"]' --checkpoint DIR --items DIR --metric accuracy --out DIR

and must leave in ``--out``: ``model.onnx`` (input ``features`` (n, d) float32, the rows
:class:`shared.model.items.Featurizer` makes of an item's bytes; output ``probabilities`` (n, classes) in the
order of ``--classes``; optional output ``embedding`` (n, width)), ``meta.json`` (``class_names``, the same
list) and ``metrics.json`` (the metric, ``confidence`` and ``train_accuracy``, each in [0, 1]; optional
``baseline_<metric>``: the checkpoint's metric on the same held-out split).

:func:`check_model_folder` checks a produced folder and raises :class:`ContractError` naming everything
that is missing or wrong; ``python -m shared.training.contract check DIR --classes ...`` does the same from
a shell (a job can run it after its training command).
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from shared.core.calibration import CONFIDENCE, TRAIN_ACCURACY
from shared.errors import TrainingError

MODEL_FILE = "model.onnx"
META_FILE = "meta.json"
METRICS_FILE = "metrics.json"
INPUT_NAME = "features"
PROBABILITIES = "probabilities"
EMBEDDING = "embedding"
MAX_EMBEDDING_WIDTH = 4096  # the collector's default AL_MAX_EMBEDDING_DIM
DEFAULT_COMMAND = "python -m shared.training.train"

# One line of the manifest (JSON Lines). The loop writes all three keys; a trainer should ignore keys it
# does not know (later versions may add some).
MANIFEST_LINE_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "Training manifest line",
    "description": "One labeled item per line of the manifest (the Azure ML image classification JSON Lines "
                   "schema plus item_id).",
    "type": "object",
    "required": ["item_id", "image_url", "label"],
    "properties": {
        "item_id": {"type": "string", "minLength": 1, "maxLength": 256,
                    "description": "The loop's id of the item; stable across rounds (use it to split)."},
        "image_url": {"type": "string", "minLength": 1,
                      "description": "azureml://datastores/<ds>/paths/<path>: <path> under the --items mount "
                                     "(in the embedded loop too); file:// or a plain path: read as it is."},
        "label": {"type": "string", "minLength": 1, "description": "One of the --classes."},
    },
    "additionalProperties": True,
}


def metrics_schema(metric: str = "accuracy") -> dict[str, Any]:
    """The JSON Schema of ``metrics.json`` for gate metric ``metric``."""
    unit = {"type": "number", "minimum": 0, "maximum": 1}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Training metrics",
        "type": "object",
        "required": [metric, CONFIDENCE, TRAIN_ACCURACY],
        "properties": {
            metric: {**unit, "description": "The candidate's gate metric on items it was not trained on."},
            CONFIDENCE: {**unit, "description": "Mean top-class probability on those same items."},
            TRAIN_ACCURACY: {**unit, "description": "Accuracy on the items it was trained on."},
            f"baseline_{metric}": {"anyOf": [unit, {"type": "null"}],
                                   "description": "The checkpoint's metric on the same held-out items; "
                                                  "null or absent without a checkpoint."},
        },
        "additionalProperties": True,
    }


class ContractError(TrainingError):
    """A training step's output (or input) breaks the contract; ``problems`` lists every breach."""

    def __init__(self, where: str, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        super().__init__(f"{where} breaks the training contract (docs/your-model.md): " + "; ".join(problems))


@dataclass(frozen=True)
class ModelFolder:
    """A model folder that passed :func:`check_model_folder`."""

    path: Path
    class_names: tuple[str, ...]
    metrics: dict[str, Any]
    embedding_width: int | None

    def metric(self, name: str) -> float:
        return float(self.metrics[name])

    def baseline(self, name: str) -> float | None:
        value = self.metrics.get(f"baseline_{name}")
        return None if value is None else float(value)


def manifest_line_problems(data: Any) -> list[str]:
    """What is wrong with one parsed manifest line (empty: it fits :data:`MANIFEST_LINE_SCHEMA`)."""
    if not isinstance(data, dict):
        return ["is not a JSON object"]
    return [f"{key} must be a non-empty string" for key in MANIFEST_LINE_SCHEMA["required"]
            if not isinstance(data.get(key), str) or not data[key]]


def write_manifest(path: Path, rows: Sequence[tuple[str, str, str]]) -> Path:
    """``(item_id, image_url, label)`` rows as the manifest file, checked line by line."""
    lines = []
    for n, (item_id, url, label) in enumerate(rows, start=1):
        data = {"item_id": item_id, "image_url": url, "label": label}
        problems = manifest_line_problems(data)
        if problems:
            raise ContractError(f"manifest line {n}", problems)
        lines.append(json.dumps(data, ensure_ascii=False))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _unit(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) \
        and 0.0 <= value <= 1.0


def metrics_problems(metrics: Any, metric: str = "accuracy") -> list[str]:
    """What is wrong with a parsed ``metrics.json`` (empty: it fits :func:`metrics_schema`)."""
    if not isinstance(metrics, dict):
        return [f"{METRICS_FILE} is not a JSON object"]
    problems = []
    for key in (metric, CONFIDENCE, TRAIN_ACCURACY):
        if key not in metrics:
            problems.append(f"{METRICS_FILE} lacks {key!r}")
        elif not _unit(metrics[key]):
            problems.append(f"{METRICS_FILE} {key!r} is {metrics[key]!r}, not a number in [0, 1]")
    baseline = metrics.get(f"baseline_{metric}")
    if baseline is not None and not _unit(baseline):
        problems.append(f"{METRICS_FILE} 'baseline_{metric}' is {baseline!r}, not a number in [0, 1] or null")
    return problems


def _read_json(path: Path, problems: list[str]) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        problems.append(f"{path.name} is not readable JSON ({exc})")
        return None


def onnx_problems(onnx_bytes: bytes, n_classes: int, feature_dim: int | None) -> tuple[list[str], int | None]:
    """Open the model with onnxruntime and run it on two probe rows: (problems, embedding width)."""
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        return [f"{MODEL_FILE} does not open with onnxruntime ({str(exc).splitlines()[0][:200]})"], None
    problems: list[str] = []
    inputs = {i.name: i for i in session.get_inputs()}
    outputs = {o.name for o in session.get_outputs()}
    if set(inputs) != {INPUT_NAME}:
        problems.append(f"{MODEL_FILE} must take exactly one input {INPUT_NAME!r} (n, d) float32, "
                        f"not {sorted(inputs)}")
    if PROBABILITIES not in outputs:
        problems.append(f"{MODEL_FILE} has no output {PROBABILITIES!r} (outputs: {sorted(outputs)})")
    if problems:
        return problems, None
    shape = inputs[INPUT_NAME].shape
    if inputs[INPUT_NAME].type != "tensor(float)" or len(shape) != 2:
        return [f"input {INPUT_NAME!r} is {inputs[INPUT_NAME].type} {shape}, not a (n, d) float32 tensor"], None
    declared = shape[1] if isinstance(shape[1], int) else None
    dim = feature_dim or declared
    if dim is None:
        return [f"input {INPUT_NAME!r} does not declare its width and none was given to check it"], None
    if declared is not None and feature_dim is not None and declared != feature_dim:
        return [f"input {INPUT_NAME!r} takes {declared} features; the loop's featurizer makes {feature_dim}"], None
    probe = np.random.default_rng(0).random((2, dim), dtype=np.float32)
    probe /= np.linalg.norm(probe, axis=1, keepdims=True)
    names = [PROBABILITIES] + ([EMBEDDING] if EMBEDDING in outputs else [])
    try:
        results = session.run(names, {INPUT_NAME: probe})
    except Exception as exc:
        return [f"{MODEL_FILE} fails on two rows of {dim} features ({str(exc).splitlines()[0][:200]})"], None
    proba = np.asarray(results[0])
    if proba.shape != (2, n_classes):
        problems.append(f"output {PROBABILITIES!r} is {proba.shape} for 2 rows, not (2, {n_classes}) "
                        "(one column per class, in the order of --classes)")
    elif not np.all(np.isfinite(proba)) or proba.min() < 0 or np.abs(proba.sum(axis=1) - 1).max() > 1e-3:
        problems.append(f"output {PROBABILITIES!r} rows are not probabilities (each in [0, 1], summing to 1)")
    width = None
    if len(results) > 1:
        emb = np.asarray(results[1])
        if emb.ndim != 2 or emb.shape[0] != 2 or not 1 <= emb.shape[1] <= MAX_EMBEDDING_WIDTH:
            problems.append(f"output {EMBEDDING!r} is {emb.shape} for 2 rows, not (2, width) with "
                            f"1 <= width <= {MAX_EMBEDDING_WIDTH}")
        elif not np.all(np.isfinite(emb)):
            problems.append(f"output {EMBEDDING!r} has non-finite values")
        else:
            width = int(emb.shape[1])
    return problems, width


def check_model_folder(folder: Path, *, class_names: Sequence[str], metric: str = "accuracy",
                       feature_dim: int | None = None) -> ModelFolder:
    """Check what a training step left in ``folder``; raise :class:`ContractError` naming every breach.

    ``feature_dim``: the width of the loop's feature rows (default: the model's declared input width).
    """
    folder = Path(folder)
    classes = tuple(class_names)
    if not folder.is_dir():
        raise ContractError(str(folder), ["the output folder does not exist"])
    problems = [f"{name} is missing" for name in (MODEL_FILE, META_FILE, METRICS_FILE)
                if not (folder / name).is_file()]
    meta = _read_json(folder / META_FILE, problems) if (folder / META_FILE).is_file() else None
    if meta is not None:
        got = meta.get("class_names") if isinstance(meta, dict) else None
        if got is None:
            problems.append(f"{META_FILE} lacks 'class_names'")
        elif list(got) != list(classes):
            problems.append(f"{META_FILE} class_names {got!r} differ from the class list {list(classes)!r} "
                            "(same names, same order)")
    metrics = _read_json(folder / METRICS_FILE, problems) if (folder / METRICS_FILE).is_file() else None
    if metrics is not None:
        problems += metrics_problems(metrics, metric)
    width = None
    if (folder / MODEL_FILE).is_file():
        found, width = onnx_problems((folder / MODEL_FILE).read_bytes(), len(classes), feature_dim)
        problems += found
    if problems:
        raise ContractError(f"the model folder {folder}", problems)
    return ModelFolder(folder, classes, dict(metrics or {}), width)


# A training step in-process: the signature of shared.training.train.train.
TrainingCallable = Callable[..., Any]


def command_problem(command: str) -> str | None:
    """Why ``command`` cannot be a training command (None: it can)."""
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        return f"is not a shell-quoted command line ({exc})"
    if not argv:
        return "is empty; the default is " + repr(DEFAULT_COMMAND)
    given = sorted({a.split("=", 1)[0] for a in argv} & {f"--{k}" for k in ARGUMENTS})
    if given:
        return f"sets {given} itself; the loop appends them (docs/your-model.md)"
    return None


ARGUMENTS = ("manifest", "classes", "checkpoint", "items", "metric", "out")


def run_training(step: str | TrainingCallable, *, manifest: Path, out: Path, class_names: Sequence[str],
                 checkpoint: Path, items: Path, metric: str = "accuracy", timeout_s: float | None = None,
                 cwd: Path | None = None, env: Mapping[str, str] | None = None) -> None:
    """Run one training step: a command line (with the contract's arguments appended; a leading ``python``
    is this interpreter) or a callable ``step(manifest, out, *, class_names, checkpoint, items, metric)``."""
    if callable(step):
        step(manifest, out, class_names=list(class_names), checkpoint=checkpoint, items=items, metric=metric)
        return
    why = command_problem(step)
    if why:
        raise TrainingError(f"the training command {step!r} {why}")
    argv = shlex.split(step)
    if argv[0] in ("python", "python3"):
        argv[0] = sys.executable
    argv += ["--manifest", str(manifest), "--classes", json.dumps(list(class_names), ensure_ascii=False),
             "--checkpoint", str(checkpoint), "--items", str(items), "--metric", metric, "--out", str(out)]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, cwd=cwd,
                              env=dict(env) if env is not None else None, check=False)
    except FileNotFoundError as exc:
        raise TrainingError(f"the training command {step!r} cannot start ({exc})") from None
    except subprocess.TimeoutExpired:
        raise TrainingError(f"the training command {step!r} ran over {timeout_s} s") from None
    if done.returncode != 0:
        tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-5:])
        raise TrainingError(f"the training command {step!r} exited with {done.returncode}: {tail}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m shared.training.contract", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="what", required=True)
    check = sub.add_parser("check", help="check a model folder a training step produced")
    check.add_argument("folder", type=Path)
    check.add_argument("--classes", required=True, help="JSON list of class names, in the model's order")
    check.add_argument("--metric", default="accuracy")
    check.add_argument("--feature-dim", type=int, default=None)
    sub.add_parser("schema", help="print the manifest line's and metrics.json's JSON Schemas")
    args = p.parse_args(argv)
    if args.what == "schema":
        print(json.dumps({"manifest_line": MANIFEST_LINE_SCHEMA, "metrics": metrics_schema()}, indent=2))
        return 0
    try:
        found = check_model_folder(args.folder, class_names=json.loads(args.classes), metric=args.metric,
                                   feature_dim=args.feature_dim)
    except ContractError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    print(json.dumps({"ok": True, "metrics": found.metrics, "embedding_width": found.embedding_width}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
