"""Run every (strategy, seed) of a simulation, in parallel worker processes, with progress."""

from __future__ import annotations

import multiprocessing as mp
import os
import shutil
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from shared.core.strategies import check_strategy
from shared.errors import DatasetError, Problem
from shared.sim.runner import Prepared, RunResult, SimConfig, run_simulation

_PREPARED: Prepared | None = None  # set before the workers fork; read-only afterwards
_TICKS = None


@dataclass(frozen=True)
class Plan:
    strategies: tuple[str, ...]
    seeds: tuple[int, ...]
    config: SimConfig
    workdir: Path
    workers: int


def check_plan(prepared: Prepared, plan: Plan) -> None:
    """Refuse a plan the data cannot serve, naming the numbers, before any work starts."""
    for s in plan.strategies:
        check_strategy(s)
    c = plan.config
    n = len(prepared.targets)
    pool = n - c.test_size - c.val_size
    need = c.initial + c.rounds * c.batch
    problems = []
    if pool <= 0:
        problems.append(f"test ({c.test_size}) and validation ({c.val_size}) sets leave no pool of {n} items")
    elif need > pool:
        problems.append(f"{c.initial} initial + {c.rounds} rounds x {c.batch} = {need} labels, "
                        f"more than the pool of {pool} items (lower --initial, --rounds or --batch)")
    if c.batch > c.scored:
        problems.append(f"a batch of {c.batch} is larger than the {c.scored} items scored per round")
    if c.initial < 2:
        problems.append("--initial must be at least 2")
    if problems:
        raise DatasetError(problems[0], [Problem(None, "plan", p) for p in problems])


def _init_worker(prepared: Prepared, ticks: object) -> None:
    global _PREPARED, _TICKS
    _PREPARED, _TICKS = prepared, ticks
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:  # pragma: no cover - threadpoolctl ships with scikit-learn
        pass


def _job(strategy: str, seed: int, config: SimConfig, workdir: str) -> RunResult:
    assert _PREPARED is not None
    path = Path(workdir)
    shutil.rmtree(path, ignore_errors=True)
    ticks = _TICKS
    return run_simulation(_PREPARED, strategy, seed, config, path,
                          on_round=lambda: ticks.put(1) if ticks is not None else None)  # type: ignore[attr-defined]


def run_plan(prepared: Prepared, plan: Plan, on_tick: Callable[[], None]) -> list[RunResult]:
    """Every (strategy, seed) run; ``on_tick`` is called once per finished round."""
    check_plan(prepared, plan)
    jobs = [(s, seed) for seed in plan.seeds for s in plan.strategies]
    ctx = mp.get_context("fork")
    ticks = ctx.Queue()
    stop = threading.Event()

    def pump() -> None:
        while not stop.is_set():
            try:
                ticks.get(timeout=0.2)
            except Exception:
                continue
            on_tick()

    pumper = threading.Thread(target=pump, daemon=True)
    pumper.start()
    results: list[RunResult] = []
    try:
        with ProcessPoolExecutor(max_workers=plan.workers, mp_context=ctx, initializer=_init_worker,
                                 initargs=(prepared, ticks)) as pool:
            futures = [
                pool.submit(_job, s, seed, plan.config, str(plan.workdir / f"{s}-seed{seed}"))
                for s, seed in jobs
            ]
            for f in as_completed(futures):
                results.append(f.result())
    finally:
        stop.set()
        pumper.join(timeout=2)
    return results


def default_workers() -> int:
    return max(1, min(os.cpu_count() or 1, 8))


def order(strategies: Sequence[str], default: str) -> tuple[str, ...]:
    rest = [s for s in strategies if s != default]
    return tuple([default] if default in strategies else []) + tuple(rest)
