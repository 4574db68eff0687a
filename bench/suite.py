"""The strategy suite: ``al simulate`` with the CLI's defaults for each data set's size, 3 seeds,
the default strategy against the published ones, on eleven data sets of different character
(bench/suite_data.py): the eight the default was chosen on, and three held out from that choice.
Prints one table and writes ``runs/bench/suite.json`` (the issue's schema) and
``runs/bench/suite-details.json`` (plus the lowest gap at any round, wall times, verdicts).

Each data set's curves are kept per strategy under ``runs/bench/suite/<data set>/<strategy>.json``;
``--reuse`` takes them from there instead of running again (the loop is deterministic per seed).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np

from shared.cli import main as al
from shared.core.strategies import BatchStrategy, register
from shared.ports import CandidateSet, LabeledSet
from shared.settings import Settings
from shared.sim.report import Curve

# The sets the default was chosen on: the five its calibration arms were chosen on, and three added
# after that choice (its fit-limited arm was then chosen on the three tabular ones among them); then
# three defined after the fit-limited arm, before any strategy ran on them.
CHOSEN_ON = ("glyphs67", "digits", "photos17", "glyphs67_ocr", "blobs10_noisy",
             "blobs20_clean", "tab5_imbalanced", "photos17_ocr")
HELD_OUT = ("seattle_weather", "blobs12_uneven", "multimodal6")
DATASETS = CHOSEN_ON + HELD_OUT
# The single strategies the default is judged against (the list), then references: the
# default's greedy arm and the two defaults before it, random, and random drawn again.
SINGLES = ("least_confidence", "margin", "entropy", "badge", "k_center", "typiclust", "cluster_margin")
REFERENCES = ("gradient_spaced", "spaced_margin", "distance_margin", "random", "random_redraw")


def _uniform(cands: CandidateSet, labeled: LabeledSet, k: int,
             rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    return rng.choice(len(cands), size=k, replace=False), np.zeros(k)


# The suite's yardstick, not a strategy to use: random picking again, from the same candidates as
# ``random`` but by another draw (the selection's generator instead of the seeded item-id hash; the
# simulation's candidates are one round's scored items, all inside the shortlist). How far it lands
# from ``random`` is how far two equally good strategies can land apart with this many seeds: the
# noise every verdict below is read against.
RANDOM_REDRAW = register(BatchStrategy(
    "random_redraw", _uniform, needs_embeddings=False,
    description="uniform over the candidates by the selection's generator (bench yardstick)",
))


def _curve(name: str, entry: dict) -> Curve:
    return Curve(name, list(entry["labels"]), np.asarray(entry["accuracy"]["per_seed"], dtype=float))


def figures(c: Curve, random: Curve) -> dict[str, float | int | None]:
    """AULC, mean gain over random (rounds 1..n), labels to random's final, min gap from round 3;
    accuracy points (0-100)."""
    gap = (c.mean - random.mean) * 100
    return {"aulc": round(c.aulc() * 100, 2), "gain": round(float(gap[1:].mean()), 2),
            "labels_to_random_final": c.labels_to_reach(float(random.mean[-1])),
            "min_gap_from_round3": round(float(gap[3:].min()), 2),
            "min_gap_any_round": round(float(gap.min()), 2)}


def run_dataset(name: str, spec: str, strategies: list[str], seeds: int, out: Path, reuse: bool,
                workers: int | None) -> tuple[dict[str, Curve], dict[str, int], float]:
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    todo = [s for s in strategies if not (reuse and (folder / f"{s}.json").exists())]
    if "random" not in strategies:
        raise SystemExit("the suite needs random (gains are measured against it)")
    wall = 0.0
    if todo:
        run_dir = folder / f"run-{os.getpid()}"
        argv = ["simulate", "--dataset", spec, "--strategies", ",".join(todo), "--seeds", str(seeds),
                "--default-strategy", todo[0], "--out", str(run_dir), "--quiet"]
        if workers:
            argv += ["--workers", str(workers)]
        t0 = time.perf_counter()
        if al(argv) != 0:
            raise SystemExit(f"al simulate failed on {name}")
        wall = time.perf_counter() - t0
        summary = json.loads((run_dir / "summary.json").read_text())
        for s, entry in summary["strategies"].items():
            (folder / f"{s}.json").write_text(json.dumps({"labels": entry["labels"], "accuracy": entry["accuracy"],
                                                         "wall_seconds": round(wall, 1)}))
        # The run's item files and stores (about 1 GB a set) are spent once the curves are kept; the
        # summary, rounds.csv and curves.png stay. Kept, a full suite filled 37 GB of disk.
        shutil.rmtree(run_dir / "work", ignore_errors=True)
    meta = json.loads((folder / "meta.json").read_text()) if (folder / "meta.json").exists() else {}
    if not meta:
        from shared.sim.datasets import load_dataset

        d = load_dataset(spec, seed=0)
        meta = {"n_items": len(d), "n_classes": len(d.class_names)}
        (folder / "meta.json").write_text(json.dumps(meta))
    curves = {s: _curve(s, json.loads((folder / f"{s}.json").read_text())) for s in strategies}
    return curves, meta, wall


def main(*, datasets: tuple[str, ...] = DATASETS, strategies: tuple[str, ...] | None = None, seeds: int = 3,
         out: Path = Path("runs/bench"), reuse: bool = False, workers: int | None = None) -> dict:
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    from bench.suite_data import build

    warnings.filterwarnings("ignore", category=ConvergenceWarning)  # inherited by the forked workers
    default = Settings.model_fields["strategy"].default
    names = list(strategies) if strategies else [default, *SINGLES, *REFERENCES]
    names = list(dict.fromkeys(n for n in names))
    specs = {"glyphs67": "glyphs67", "digits": "digits"} | {k: str(v) for k, v in build(out / "data").items()}
    result: dict = {"default_strategy": default, "seeds": seeds, "datasets": {}}
    # The suite is 3 seeds; a run with more (to see through the noise of the small sets) keeps
    # its curves and its documents apart, so --reuse never mixes seed counts.
    tag = "" if seeds == 3 else f"-{seeds}seeds"
    t_all = time.perf_counter()
    every: dict[str, dict[str, Curve]] = {}
    for name in datasets:
        curves, meta, wall = run_dataset(name, specs[name], names, seeds, out / f"suite{tag}", reuse, workers)
        every[name] = curves
        random = curves["random"]
        table = {s: figures(c, random) for s, c in curves.items()}
        result["datasets"][name] = {**meta, "random_final_labels": random.labels[-1], "wall_seconds": round(wall, 1),
                                    "strategies": table}
        _print(name, meta, table, default, wall)
    result["wall_seconds"] = round(time.perf_counter() - t_all, 1)
    _check(result, every)
    (out / f"suite{tag}.json").write_text(json.dumps(_as_specified(result), indent=2) + "\n")
    (out / f"suite{tag}-details.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"suite written to {out / f'suite{tag}.json'} (details: suite{tag}-details.json) "
          f"in {result['wall_seconds']:.0f}s")
    return result


def _as_specified(result: dict) -> dict:
    """suite.json in the issue's schema, no more: the lowest gap at any round, wall times and the
    target verdicts go to suite-details.json."""
    keep = ("aulc", "gain", "labels_to_random_final", "min_gap_from_round3")
    return {"default_strategy": result["default_strategy"], "datasets": {
        name: {"n_items": d["n_items"], "n_classes": d["n_classes"],
               "strategies": {s: {k: f[k] for k in keep} for s, f in d["strategies"].items()}}
        for name, d in result["datasets"].items()}}


def _print(name: str, meta: dict, table: dict, default: str, wall: float) -> None:
    print(f"\n{name}: {meta['n_items']} items, {meta['n_classes']} classes"
          + (f" ({wall:.0f}s)" if wall else " (reused)"))
    print(f"  {'strategy':<18} {'AULC':>6} {'gain':>6} {'labels→rnd final':>17} {'min gap r3+':>11} {'min gap':>8}")
    for s, f in sorted(table.items(), key=lambda kv: -kv[1]["aulc"]):
        mark = "*" if s == default else " "
        reach = f["labels_to_random_final"] if f["labels_to_random_final"] is not None else "never"
        print(f" {mark}{s:<18} {f['aulc']:6.2f} {f['gain']:+6.2f} {reach!s:>17} {f['min_gap_from_round3']:+11.2f} "
              f"{f['min_gap_any_round']:+8.2f}")


def paired_aulc(a: Curve, b: Curve) -> tuple[float, float]:
    """The mean over seeds of ``a``'s AULC minus ``b``'s, in points, and the half-width of its 95 %
    confidence interval (Student's t over the per-seed differences; the loop is seeded, so seed i of
    both ran on the same split and initial labels). NaN half-width with one seed."""
    from scipy import stats

    x = np.asarray(a.labels, dtype=float)
    width = x[-1] - x[0]
    diff = (np.trapezoid(a.per_seed, x, axis=1) - np.trapezoid(b.per_seed, x, axis=1)) / width * 100
    n = len(diff)
    half = float(stats.t.ppf(0.975, n - 1) * diff.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
    return float(diff.mean()), half


def _check(result: dict, curves: dict[str, dict[str, Curve]]) -> None:
    """The issue's targets, judged and printed (not raised: the numbers are the report), each beside
    the same test applied to ``random_redraw``: a target that random drawn again misses is below what
    this many seeds can tell apart."""
    default = result["default_strategy"]
    verdicts = []
    for name, d in result["datasets"].items():
        t, c = d["strategies"], curves[name]
        if default not in t:
            continue
        best = max((s for s in SINGLES if s in t), key=lambda s: t[s]["aulc"])
        short = t[default]["aulc"] - t[best]["aulc"]
        floor = t[default]["min_gap_any_round"]
        held = " [held out]" if name in HELD_OUT else ""
        diff, half = paired_aulc(c[default], c[best])
        verdicts.append(f"{name}{held}: AULC {short:+.2f} vs best single ({best}) {'ok' if short >= -0.3 else 'MISS'} "
                        f"(per seed {diff:+.2f} ± {half:.2f}); "
                        f"lowest gap to random {floor:+.2f} {'ok' if floor >= -1.0 else 'MISS'}")
        if "random_redraw" in t:
            r = t["random_redraw"]
            rdiff, rhalf = paired_aulc(c["random_redraw"], c["random"])
            verdicts.append(f"  noise: random drawn again vs random: AULC {r['aulc'] - t['random']['aulc']:+.2f} "
                            f"(per seed {rdiff:+.2f} ± {rhalf:.2f}); lowest gap {r['min_gap_any_round']:+.2f} "
                            f"({'ok' if r['min_gap_any_round'] >= -1.0 else 'MISS'})")
        if name == "glyphs67":
            gain, reach, last = t[default]["gain"], t[default]["labels_to_random_final"], d["random_final_labels"]
            share = f"{reach / last:.0%}" if reach else "never"
            verdicts.append(f"glyphs67: gain {gain:+.2f} ({'ok' if gain >= 5 else 'MISS'}); random's final with "
                            f"{reach} of {last} labels = {share} ({'ok' if reach and reach <= 0.6 * last else 'MISS'})")
    result["targets"] = verdicts
    print("\ntargets:\n  " + "\n  ".join(verdicts))
