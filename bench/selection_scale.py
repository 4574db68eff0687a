"""Selection at scale in the DuckDB store: 1M and 10M stored predictions of 67 classes.

For every strategy (the four ranked ones; ``gradient_spaced`` and ``badge``, the two arms of the default
``calibration_switch``, which costs what the arm it takes costs; ``spaced_margin``, ``distance_margin``
and ``pair_capped_margin``) and every size, two figures, each measured in a fresh process so that
its peak memory (VmHWM) is its own:
- **top_k**: the best 1,000 candidates by the strategy, without the service. Ranked strategies: the
  store's SQL. Batch-aware ones: the store's shortlist for k = 1,000 (``max(50 k, 5000)`` candidates
  with probabilities and embeddings), the labeled set, and the strategy's NumPy pick of 1,000;
- **select_service**: the select service end to end (serving version -> candidates -> strategy ->
  record -> copy 100 items to the labeling folder of a local object store), median of 3 runs.

Embeddings are ``--embedding-dim`` floats wide (64 by default: the compact embedding production logs
by default, issue 11). The data: a fifth of the rows re-score
an item, a tenth belong to an older model version, 1,000 items are labeled (with embeddings), so
latest-per-item, the version filter, exclusions and the distance term all do real work. Each data
set is built once and kept under ``runs/bench/cache/`` (rebuilt when the schema or the builder
changes); the selections a run records are deleted before the next process starts.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

CLASSES = 67
CHUNK = 500_000
EMBED = 64
LABELED = 1000
ITEM_FILES = 1000  # item URIs cycle over this many real files, so hand-off copies real bytes
TOP_K = 1000
BATCH = 100
RANKED = ("least_confidence", "margin", "entropy", "random")
BATCH_AWARE = ("gradient_spaced", "badge", "spaced_margin", "distance_margin", "pair_capped_margin")
STRATEGIES = (*RANKED, *BATCH_AWARE)
SEED = 1  # the selection seed: the store keeps random keys for it, the service asks for it
ROOT = Path("runs/bench")
BUILDER_VERSION = "2"  # bump when build() changes what it writes


def item_files(root: Path) -> list[str]:
    from shared.adapters.local_objects import LocalFolderObjectStore

    store = LocalFolderObjectStore(root)
    return [store.put("items", f"bench/{i:04d}.png", b"\x89PNG fake item %d" % i) for i in range(ITEM_FILES)]


def cache_path(n: int, dim: int) -> Path:
    """A data set's file, named by what it holds and by the schema that wrote it."""
    from shared.core import sql

    # The rows name their items by file:// URI under ROOT: a checkout elsewhere builds its own set (the
    # selector refuses to copy from outside its object store).
    tag = hashlib.sha256((sql.SCHEMA + sql.STAGE_NEW_ROWS + BUILDER_VERSION + str(ROOT.resolve())).encode()
                         ).hexdigest()[:10]
    return ROOT / "cache" / f"predictions-{n}-d{dim}-{tag}.duckdb"


def build(path: Path, n: int, dim: int, uris: list[str], seed: int = 0) -> float:
    from shared.adapters.duckdb_store import DuckDBStore
    from shared.core.records import Label, ModelStatus, ModelVersion, PredictionBatch

    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    for stale in (partial, partial.with_name(partial.name + ".wal")):
        stale.unlink(missing_ok=True)
    store = DuckDBStore(partial, threads=2, random_seed=SEED)
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
        emb = rng.normal(size=(m, dim)).astype(np.float32)
        store.add_predictions(PredictionBatch(
            prediction_ids=tuple(f"p{r:09d}" for r in rows), item_ids=tuple(f"item{i:09d}" for i in items),
            item_uris=tuple(uris[i % ITEM_FILES] for i in items),
            model_name=("m",) * m, model_version=tuple(versions.tolist()), predicted_labels=("c",) * m,
            scored_at=at, probabilities=proba, embeddings=emb,
        ))
        print(f"  loaded {start + m:,}/{n:,} rows", file=sys.stderr, flush=True)
    labeled = rng.choice(n_items, LABELED, replace=False)
    store.add_labels([Label(f"item{i:09d}", f"c{i % CLASSES:02d}", "bench", "bench") for i in labeled])
    store.upsert_model_version(ModelVersion("m", "2", tuple(f"c{i:02d}" for i in range(CLASSES)),
                                            status=ModelStatus.SERVING))
    store.close()
    partial.rename(path)
    return time.perf_counter() - t0


def _peak_rss_gib() -> float:
    # VmHWM: this process image's own peak. ru_maxrss would carry the parent's peak across exec.
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20
    return float("nan")


def measure_top_k(db: str, strategy: str) -> dict[str, object]:
    """Best of 3: the top 1,000 by ``strategy`` (runs in a fresh process)."""
    from datetime import datetime

    from shared.adapters.duckdb_store import DuckDBStore
    from shared.core import strategies
    from shared.core.selection import CandidateFilter

    store = DuckDBStore(db, threads=2, random_seed=SEED)
    flt = CandidateFilter("m", "2", np.datetime64("2026-01-01"), np.datetime64("2027-01-01"))
    runs, parts = [], []
    for _ in range(3):
        t0 = time.perf_counter()
        if strategy in RANKED:
            got = len(store.top_k(flt, strategy, TOP_K, seed=SEED))
            parts.append({})
        else:
            spec = strategies.BATCH_STRATEGIES[strategies.check_strategy(strategy)]
            cands = store.candidates(flt, limit=spec.shortlist(TOP_K))
            labeled = store.labeled_set("m", "2")
            t1 = time.perf_counter()
            rng = np.random.default_rng([SEED, int(datetime(2026, 6, 1).timestamp())])
            got = len(spec.pick(cands, labeled, TOP_K, rng)[0])
            parts.append({"store_seconds": t1 - t0, "pick_seconds": time.perf_counter() - t1,
                          "shortlist": len(cands)})
        runs.append(time.perf_counter() - t0)
        assert got == TOP_K, got
    best = int(np.argmin(runs))
    return {"seconds": runs[best], "runs": runs, **parts[best], "peak_gib": _peak_rss_gib()}


def measure_select_service(db: str, items_root: str, out_root: str, strategy: str) -> dict[str, object]:
    """Median of 3: the select service end to end, 100 items recorded and copied (fresh process)."""
    from datetime import UTC, datetime, timedelta

    from shared.adapters.duckdb_store import DuckDBStore
    from shared.adapters.local_objects import LocalFolderObjectStore
    from shared.services.select import SelectService

    store = DuckDBStore(db, threads=2, random_seed=SEED)
    objects = LocalFolderObjectStore(out_root, read_roots=(Path(items_root),))
    service = SelectService(store, objects, model_name="m", strategy=strategy, batch_size=BATCH,
                            window=timedelta(days=3650), seed=SEED)
    runs = []
    for i in range(3):
        t0 = time.perf_counter()
        result = service.run(now=datetime(2026, 6, 1, 0, i, tzinfo=UTC))
        runs.append(time.perf_counter() - t0)
        assert result.selection is not None and len(result.selection.items) == BATCH, result.reason
    copied = len(objects.list("labeling-input"))
    assert copied == 3 * BATCH, copied
    return {"seconds": sorted(runs)[1], "runs": runs, "copied": copied, "peak_gib": _peak_rss_gib()}


def _child(*args: str) -> dict[str, object]:
    env = os.environ | {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-m", "bench.selection_scale", *args], capture_output=True, text=True,
                         env=env, check=False)
    if res.returncode:
        raise RuntimeError(f"bench worker {args} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.splitlines()[-1])


def _clear_selections(db: Path) -> None:
    from shared.adapters.duckdb_store import DuckDBStore

    store = DuckDBStore(db, random_seed=SEED)
    with store._cursor() as con:
        con.execute("DELETE FROM selections")
        con.execute("CHECKPOINT")
    store.close()


def main(sizes: tuple[int, ...] = (1_000_000, 10_000_000), embedding_dim: int = EMBED) -> dict[str, object]:
    """Measure every size and strategy; print the table; return (and write) figures-selection.json's
    document: ``{"embedding_dim", "sizes": {n: {"top_k": {s: {seconds, peak_gib}}, "select_service": ...}}}``."""
    ROOT.mkdir(parents=True, exist_ok=True)
    items_root = ROOT / "items"
    uris = item_files(items_root)
    doc: dict[str, object] = {"embedding_dim": embedding_dim, "sizes": {}}
    details: dict[int, dict[str, object]] = {}
    for n in sizes:
        path = cache_path(n, embedding_dim)
        load = None
        if not path.exists():
            print(f"building {n:,} predictions with {embedding_dim}-d embeddings into {path}", flush=True)
            load = build(path, n, embedding_dim, uris)
        _clear_selections(path)
        top_k, service, extra = {}, {}, {}
        for strategy in STRATEGIES:
            got = _child("top_k", str(path), strategy)
            top_k[strategy] = {"seconds": round(float(got["seconds"]), 4), "peak_gib": round(float(got["peak_gib"]), 3)}
            extra[strategy] = got
            work = ROOT / f"select-{n}-{strategy}"
            shutil.rmtree(work, ignore_errors=True)
            got = _child("select_service", str(path), str(items_root), str(work), strategy)
            service[strategy] = {"seconds": round(float(got["seconds"]), 4),
                                 "peak_gib": round(float(got["peak_gib"]), 3)}
            shutil.rmtree(work, ignore_errors=True)
            _clear_selections(path)
            print(f"  {n:>11,} {strategy:<18} top-{TOP_K} {top_k[strategy]['seconds']:.3f}s "
                  f"{top_k[strategy]['peak_gib']:.2f} GiB{_breakdown(extra[strategy])}; select service "
                  f"{service[strategy]['seconds']:.3f}s {service[strategy]['peak_gib']:.2f} GiB", flush=True)
        doc["sizes"][str(n)] = {"top_k": top_k, "select_service": service}  # type: ignore[index]
        details[n] = {"load_seconds": load, "db_gib": round(path.stat().st_size / 2**30, 2)}
        print(f"  {n:,} predictions: file {details[n]['db_gib']} GiB"
              + (f", built in {load:.0f}s" if load else " (cached)"), flush=True)
    print(table(doc))
    (ROOT / "figures-selection.json").write_text(json.dumps(doc, indent=2) + "\n")
    return doc


def _breakdown(got: dict[str, object]) -> str:
    if "store_seconds" not in got:
        return ""
    return (f" (store {float(got['store_seconds']):.3f}s for {got['shortlist']:,} shortlisted, "  # type: ignore[arg-type]
            f"NumPy pick {float(got['pick_seconds']):.3f}s)")  # type: ignore[arg-type]


def table(doc: dict[str, object]) -> str:
    """Seconds and peak GiB per size and strategy, and the growth from the smallest size to the largest."""
    sizes = doc["sizes"]
    assert isinstance(sizes, dict)
    ns = sorted(sizes, key=int)
    lo, hi = ns[0], ns[-1]
    head = ["strategy", *[f"{kind} {int(n) / 1e6:g}M" for kind in ("top_k", "service") for n in ns]]
    if len(ns) > 1:
        head += [f"growth {int(hi) // int(lo)}x rows: top_k s / GiB", "service s / GiB"]
    lines = [" | ".join(head)]
    for s in STRATEGIES:
        cells = [s]
        for kind in ("top_k", "select_service"):
            for n in ns:
                f = sizes[n][kind][s]
                cells.append(f"{f['seconds']:.3f}s {f['peak_gib']:.2f}GiB")
        if len(ns) > 1:
            for kind in ("top_k", "select_service"):
                a, b = sizes[lo][kind][s], sizes[hi][kind][s]
                cells.append(f"{b['seconds'] / a['seconds']:.1f}x / {b['peak_gib'] / a['peak_gib']:.1f}x")
        lines.append(" | ".join(cells))
    return f"embedding {doc['embedding_dim']}-d, {os.cpu_count()} cores\n" + "\n".join(lines)


if __name__ == "__main__":  # a worker: one figure, one fresh process, JSON on the last stdout line
    kind, *rest = sys.argv[1:]
    if kind == "top_k":
        out = measure_top_k(*rest)
    elif kind == "select_service":
        out = measure_select_service(*rest)
    else:
        raise SystemExit(f"unknown measurement {kind!r}")
    print(json.dumps(out))
