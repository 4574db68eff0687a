"""Label efficiency and round time: `al simulate` with its defaults on glyphs67, then on digits,
checked against the targets (default above random from round 3 on, mean gain >= 3 points,
random's final accuracy with <= 70% of its labels; on digits never more than 1 point below)."""

from __future__ import annotations

import csv
import json
import statistics
import time
from pathlib import Path

from shared.cli import main as al


def _check(summary: dict, name: str) -> dict[str, object]:
    default = summary["default_strategy"]
    s, r = summary["strategies"][default], summary["strategies"]["random"]
    gaps = [(a - b) * 100 for a, b in zip(s["accuracy"]["mean"], r["accuracy"]["mean"], strict=True)]
    reach = s["labels_to_random_final"]
    share = reach / r["labels"][-1] if reach else None
    return {"dataset": name, "default": default, "gaps_points": [round(g, 2) for g in gaps],
            "mean_gain_points": round(sum(gaps[1:]) / (len(gaps) - 1), 2),
            "min_gap_from_round_3": round(min(gaps[3:]), 2), "labels_to_random_final": reach,
            "share_of_random_labels": round(share, 3) if share else None}


def main(out: Path = Path("runs/bench")) -> list[dict[str, object]]:
    results = []
    for dataset in ("glyphs67", "digits"):
        target = out / dataset
        t0 = time.perf_counter()
        code = al(["simulate", "--dataset", dataset, "--out", str(target), "--quiet"])
        wall = time.perf_counter() - t0
        if code != 0:
            raise SystemExit(f"al simulate failed on {dataset} (exit {code})")
        summary = json.loads((target / "summary.json").read_text())
        with (target / "rounds.csv").open() as fh:
            secs = [float(r["round_seconds"]) for r in csv.DictReader(fh) if r["round_seconds"]]
        fig = _check(summary, dataset) | {"wall_seconds": round(wall, 1),
                                          "median_round_seconds": round(statistics.median(secs), 3)}
        for name, s in summary["strategies"].items():
            print(f"  {dataset:>8} {name:>20}: final {s['final_accuracy'] * 100:.2f}  "
                  f"gain {s.get('gain_over_random_points', 0):+.2f} pts  "
                  f"labels to random's final {s['labels_to_random_final']}")
        ok = (fig["min_gap_from_round_3"] > 0 and fig["mean_gain_points"] >= 3
              and (fig["share_of_random_labels"] or 9) <= 0.70) if dataset == "glyphs67" else \
            min(fig["gaps_points"]) >= -1.0
        print(f"label efficiency {dataset}: default {fig['default']} mean gain {fig['mean_gain_points']:+.2f} pts, "
              f"min gap from round 3 {fig['min_gap_from_round_3']:+.2f}, random's final with "
              f"{fig['labels_to_random_final']} labels ({fig['share_of_random_labels']}); "
              f"median round {fig['median_round_seconds']:.2f}s; whole run {wall:.0f}s -> "
              f"{'meets' if ok else 'MISSES'} the target", flush=True)
        results.append(fig | {"meets_target": ok})
    return results
