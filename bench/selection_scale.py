"""Top-1,000 selection from 1M and 10M stored predictions of 67 classes in the DuckDB store.

The table is built once per size under ``runs/bench/``; each query runs in a fresh process so its
peak memory (max RSS) is the query's own, not the loader's.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

CLASSES = 67
CHUNK = 500_000


def build(path: Path, n: int, seed: int = 0) -> float:
    from shared.adapters.duckdb_store import DuckDBStore
    from shared.core.records import PredictionBatch

    if path.exists():
        path.unlink()
    store = DuckDBStore(path)
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    n_items = int(n * 0.8)  # a fifth of the rows re-score an item: latest-per-item matters
    for start in range(0, n, CHUNK):
        m = min(CHUNK, n - start)
        rows = np.arange(start, start + m)
        items = np.where(rows < n_items, rows, rng.integers(0, n_items, m))
        conc = rng.gamma(0.05, size=(m, CLASSES)).astype(np.float32) + 1e-7
        proba = conc / conc.sum(axis=1, keepdims=True)
        versions = np.where(rng.random(m) < 0.9, "2", "1")
        at = np.datetime64("2026-03-01T00:00", "us") + (rows * 1000).astype("timedelta64[us]")
        store.add_predictions(PredictionBatch(
            prediction_ids=tuple(f"p{r:09d}" for r in rows), item_ids=tuple(f"item{i:09d}" for i in items),
            item_uris=tuple(f"https://acct.blob.core.windows.net/items/{i}" for i in items),
            model_name=("m",) * m, model_version=tuple(versions.tolist()), predicted_labels=("c",) * m,
            scored_at=at, probabilities=proba,
        ))
        print(f"  loaded {start + m:,}/{n:,} rows", file=sys.stderr, flush=True)
    store.close()
    return time.perf_counter() - t0


QUERY = r"""
import json, resource, sys, time
import numpy as np
from shared.adapters.duckdb_store import DuckDBStore
from shared.core.selection import CandidateFilter
store = DuckDBStore(sys.argv[1], threads=2)
flt = CandidateFilter("m", "2", np.datetime64("2026-01-01"), np.datetime64("2027-01-01"))
times = {}
for strategy in ("margin", "entropy", "least_confidence", "random"):
    runs = []
    for _ in range(3):
        t0 = time.perf_counter(); got = store.top_k(flt, strategy, 1000, seed=1); runs.append(time.perf_counter() - t0)
    assert len(got) == 1000
    times[strategy] = min(runs)
print(json.dumps({"seconds": times, "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}))
"""


def main(sizes: tuple[int, ...] = (1_000_000, 10_000_000)) -> list[dict[str, object]]:
    out = []
    root = Path("runs/bench")
    root.mkdir(parents=True, exist_ok=True)
    for n in sizes:
        path = root / f"predictions-{n}.duckdb"
        load = build(path, n)
        res = subprocess.run([sys.executable, "-c", QUERY, str(path)], capture_output=True, text=True, check=True)
        figures = json.loads(res.stdout)
        figures |= {"rows": n, "load_seconds": round(load, 1), "db_gib": round(path.stat().st_size / 2**30, 2)}
        secs = ", ".join(f"{k} {v:.3f}s" for k, v in figures["seconds"].items())
        print(f"selection top-1000 of {n:,} predictions x {CLASSES} classes: {secs}; "
              f"peak RSS {figures['peak_rss_gib']:.2f} GiB (goal: <= 1 s, <= 4 GiB at 10M); "
              f"load {load:.0f}s, file {figures['db_gib']} GiB", flush=True)
        out.append(figures)
        path.unlink()
    return out
