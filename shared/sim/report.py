"""Learning curves -> the per-round table, summary lines, summary.json, curves.png and rounds.csv."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shared.sim.runner import RunResult


@dataclass(frozen=True)
class Curve:
    strategy: str
    labels: list[int]
    per_seed: np.ndarray  # (seeds, rounds + 1)

    @property
    def mean(self) -> np.ndarray:
        return self.per_seed.mean(axis=0)

    @property
    def std(self) -> np.ndarray:
        return self.per_seed.std(axis=0)

    def aulc(self) -> float:
        """Area under the mean learning curve, normalised by the label range (a mean accuracy)."""
        x = np.asarray(self.labels, dtype=float)
        if len(x) < 2 or x[-1] == x[0]:
            return float(self.mean[-1])
        return float(np.trapezoid(self.mean, x) / (x[-1] - x[0]))

    def labels_to_reach(self, target: float) -> int | None:
        """Labels at the first round whose mean accuracy reaches ``target`` (None: never)."""
        hits = np.flatnonzero(self.mean >= target - 1e-12)
        return int(self.labels[hits[0]]) if hits.size else None

    def labels_to_reach_interpolated(self, target: float) -> float | None:
        """The same, linearly interpolated between the two rounds around the crossing."""
        hits = np.flatnonzero(self.mean >= target - 1e-12)
        if not hits.size:
            return None
        i = int(hits[0])
        if i == 0:
            return float(self.labels[0])
        a0, a1 = self.mean[i - 1], self.mean[i]
        x0, x1 = self.labels[i - 1], self.labels[i]
        return float(x0 + (x1 - x0) * (target - a0) / (a1 - a0)) if a1 > a0 else float(x1)


def curves(results: Sequence[RunResult], strategies: Sequence[str]) -> dict[str, Curve]:
    out = {}
    for s in strategies:
        runs = sorted((r for r in results if r.strategy == s), key=lambda r: r.seed)
        labels = [round(float(np.mean(col))) for col in zip(*(r.labels for r in runs), strict=True)]
        out[s] = Curve(s, labels, np.asarray([r.accuracy for r in runs], dtype=float))
    return out


def summarise(cs: dict[str, Curve], default: str, baseline: str = "random") -> dict[str, object]:
    base = cs.get(baseline)
    strategies: dict[str, object] = {}
    for name, c in cs.items():
        entry: dict[str, object] = {
            "labels": c.labels,
            "accuracy": {"mean": c.mean.round(5).tolist(), "per_seed": c.per_seed.round(5).tolist()},
            "aulc": round(c.aulc(), 5),
            "final_accuracy": round(float(c.mean[-1]), 5),
            "labels_to_random_final": c.labels_to_reach(float(base.mean[-1])) if base else None,
        }
        if base is not None:
            interp = c.labels_to_reach_interpolated(float(base.mean[-1]))
            entry["labels_to_random_final_interpolated"] = round(interp, 1) if interp is not None else None
        if base is not None:
            gap = (c.mean - base.mean) * 100
            # Round 0 is the same initial model for every strategy: the gain is over the selection rounds.
            entry["gain_over_random_points"] = round(float(gap[1:].mean() if len(gap) > 1 else 0.0), 3)
            entry["min_gap_from_round_3_points"] = round(float(gap[3:].min()), 3) if len(gap) > 3 else None
        strategies[name] = entry
    return {"default_strategy": default, "baseline": baseline if base else None, "strategies": strategies}


def write_files(out: Path, summary: dict[str, object], cs: dict[str, Curve],
                results: Sequence[RunResult], title: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    with (out / "rounds.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["strategy", "seed", "round", "labels", "accuracy", "round_seconds", "deployed"])
        for r in sorted(results, key=lambda r: (r.strategy, r.seed)):
            for i, (n, acc) in enumerate(zip(r.labels, r.accuracy, strict=True)):
                secs = f"{r.round_seconds[i - 1]:.4f}" if i else ""
                w.writerow([r.strategy, r.seed, i, n, f"{acc:.5f}", secs, r.deployed[i]])
    plot(out / "curves.png", cs, str(summary["default_strategy"]), title)


def plot(path: Path, cs: dict[str, Curve], default: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    for name, c in cs.items():
        x = np.asarray(c.labels)
        lo, hi = c.per_seed.min(axis=0), c.per_seed.max(axis=0)
        (line,) = ax.plot(
            x, c.mean * 100, marker="o", markersize=3, label=name,
            linewidth=2.6 if name == default else 1.4,
            color="black" if name == "random" else None,
            linestyle="--" if name == "random" else "-",
        )
        ax.fill_between(x, lo * 100, hi * 100, alpha=0.15, color=line.get_color())
    ax.set_xlabel("labels")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(title="strategy (mean, band = min-max over seeds)", fontsize=8, title_fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
