"""Selection at scale in the DuckDB store: 1M and 10M stored predictions of 67 classes.

Two figures per size, each measured in a fresh process so its peak memory (max RSS) is its own:
- top-1,000 by each ranked strategy (the store's SQL alone);
- the select service end to end (issue 4): serving version -> candidates -> strategy -> record ->
  copy 100 items to the labeling folder of a local object store, for ``margin`` and the default
  ``distance_margin`` (which picks from a margin shortlist of the candidates, with 16-d embeddings).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

CLASSES = 67
CHUNK = 500_000
EMBED = 16
ITEM_FILES = 1000  # item URIs cycle over this many real files, so hand-off copies real bytes


def item_files(root: Path) -> list[str]:
    from shared.adapters.local_objects import LocalFolderObjectStore

    store = LocalFolderObjectStore(root)
    return [store.put("items", f"bench/{i:04d}.png", b"\x89PNG fake item %d" % i) for i in range(ITEM_FILES)]


def build(path: Path, n: int, uris: list[str], seed: int = 0) -> float:
    from shared.adapters.duckdb_store import DuckDBStore
    from shared.core.records import ModelStatus, ModelVersion, PredictionBatch

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
        emb = rng.normal(size=(m, EMBED)).astype(np.float32)
        store.add_predictions(PredictionBatch(
            prediction_ids=tuple(f"p{r:09d}" for r in rows), item_ids=tuple(f"item{i:09d}" for i in items),
            item_uris=tuple(uris[i % ITEM_FILES] for i in items),
            model_name=("m",) * m, model_version=tuple(versions.tolist()), predicted_labels=("c",) * m,
            scored_at=at, probabilities=proba, embeddings=emb,
        ))
        print(f"  loaded {start + m:,}/{n:,} rows", file=sys.stderr, flush=True)
    store.upsert_model_version(ModelVersion("m", "2", tuple(f"c{i:02d}" for i in range(CLASSES)),
                                            status=ModelStatus.SERVING))
    store.close()
    return time.perf_counter() - t0


PEAK_RSS = r"""
def peak_rss_gib():
    # VmHWM: this process image's own peak. ru_maxrss would carry the parent's peak across exec.
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20
    return float("nan")
"""

QUERY = PEAK_RSS + r"""
import json, sys, time

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
print(json.dumps({"seconds": times, "peak_rss_gib": peak_rss_gib()}))
"""

END_TO_END = PEAK_RSS + r"""
import json, sys, time

from datetime import UTC, datetime, timedelta
from pathlib import Path
from shared.adapters.duckdb_store import DuckDBStore
from shared.adapters.local_objects import LocalFolderObjectStore
from shared.services.select import SelectService
db, items_root, out_root, strategy = sys.argv[1:5]
store = DuckDBStore(db, threads=2)
objects = LocalFolderObjectStore(out_root, read_roots=(Path(items_root),))
service = SelectService(store, objects, model_name="m", strategy=strategy, batch_size=100,
                        window=timedelta(days=3650), seed=1)
runs = []
for _ in range(3):
    t0 = time.perf_counter()
    result = service.run(now=datetime(2026, 6, 1, tzinfo=UTC))
    runs.append(time.perf_counter() - t0)
    assert result.selection is not None and len(result.selection.items) == 100, result.reason
copied = len(objects.list("labeling-input"))
assert copied == 300, copied
print(json.dumps({"seconds": sorted(runs)[1], "runs": runs, "copied": copied,
                  "peak_rss_gib": peak_rss_gib()}))
"""


def main(sizes: tuple[int, ...] = (1_000_000, 10_000_000)) -> list[dict[str, object]]:
    out = []
    root = Path("runs/bench")
    root.mkdir(parents=True, exist_ok=True)
    items_root = root / "items"
    uris = item_files(items_root)
    for n in sizes:
        path = root / f"predictions-{n}.duckdb"
        load = build(path, n, uris)
        res = subprocess.run([sys.executable, "-c", QUERY, str(path)], capture_output=True, text=True, check=True)
        figures = json.loads(res.stdout)
        for strategy in ("margin", "distance_margin"):
            work = root / f"select-{n}-{strategy}"
            shutil.rmtree(work, ignore_errors=True)
            e2e = subprocess.run([sys.executable, "-c", END_TO_END, str(path), str(items_root), str(work), strategy],
                                 capture_output=True, text=True, check=True)
            figures[f"service_{strategy}"] = json.loads(e2e.stdout)
            shutil.rmtree(work, ignore_errors=True)
            print(f"select service end to end over {n:,} predictions, {strategy}: "
                  f"{figures[f'service_{strategy}']['seconds']:.2f}s per run (median of 3) incl. recording and "
                  f"copying 100 items; peak RSS {figures[f'service_{strategy}']['peak_rss_gib']:.2f} GiB", flush=True)
        figures |= {"rows": n, "load_seconds": round(load, 1), "db_gib": round(path.stat().st_size / 2**30, 2)}
        secs = ", ".join(f"{k} {v:.3f}s" for k, v in figures["seconds"].items())
        print(f"selection top-1000 of {n:,} predictions x {CLASSES} classes: {secs}; "
              f"peak RSS {figures['peak_rss_gib']:.2f} GiB (goal: <= 1 s, <= 4 GiB at 10M); "
              f"load {load:.0f}s, file {figures['db_gib']} GiB", flush=True)
        out.append(figures)
        path.unlink()
    return out
