"""The selector_timer app as the Functions host sees it: indexed in a fresh interpreter (get_functions()
may run once per process), its bindings checked, and each function's user function called with real
``azure.functions`` objects against an embedded store prepared here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from shared.adapters.duckdb_store import DuckDBStore
from shared.adapters.local_objects import LocalFolderObjectStore
from shared.core.records import ModelStatus, ModelVersion, PredictionBatch

ROOT = Path(__file__).resolve().parents[2]

HOST_SCRIPT = textwrap.dedent("""
    import json, sys
    import azure.functions as func
    from azure.functions.timer import TimerRequest
    import function_app

    fns = {f.get_function_name(): f for f in function_app.app.get_functions()}
    out = {"bindings": {n: json.loads(f.get_function_json())["bindings"] for n, f in fns.items()}, "calls": {}}

    def http(name, method, params):
        req = func.HttpRequest(method=method, url=f"http://localhost/api/selection/{name}", params=params, body=b"")
        resp = fns[f"selection_{name}"].get_user_function()(req)
        return {"status": resp.status_code, "body": json.loads(resp.get_body())}

    calls = out["calls"]
    calls["preview"] = http("preview", "GET", {"strategy": "entropy", "k": "3"})
    calls["preview_bad_k"] = http("preview", "GET", {"k": "lots"})
    calls["preview_bad_strategy"] = http("preview", "GET", {"strategy": "loudest"})
    calls["run"] = http("run", "POST", {"k": "4"})
    fns["selection_timer"].get_user_function()(TimerRequest(past_due=True))
    from functions.selector_timer.wiring import select_service
    from shared.adapters.selection_lock import FileLock
    with FileLock(select_service()._lock._path).hold():  # another run holds the lock
        calls["run_busy"] = http("run", "POST", {})
    calls["run_after_timer"] = http("run", "POST", {"k": "100"})
    print(json.dumps(out))
""")


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    """Prepare AL_DATA_DIR (a serving model, 12 scored items with bytes), then run the host script."""
    data = tmp_path_factory.mktemp("selector-app")
    objects = LocalFolderObjectStore(data / "blobs")
    store = DuckDBStore(data / "loop.duckdb")
    store.upsert_model_version(ModelVersion("m", "v1", ("a", "b", "c"), status=ModelStatus.SERVING))
    n = 12
    uris = tuple(objects.put("items", f"{i}.png", bytes([i])) for i in range(n))
    proba = np.random.default_rng(3).dirichlet(np.ones(3), size=n).astype(np.float32)
    at = np.datetime64(datetime.now(UTC).replace(tzinfo=None) - timedelta(hours=1), "us")
    store.add_predictions(PredictionBatch(
        tuple(f"p{i}" for i in range(n)), tuple(f"item-{i:02d}" for i in range(n)), uris, ("m",) * n,
        ("v1",) * n, ("a",) * n, np.full(n, at), proba))
    store.close()
    env = os.environ | {"AL_STAGES": "selector_timer", "AL_BACKEND": "embedded", "AL_DATA_DIR": str(data),
                        "AL_MODEL_NAME": "m", "AL_STRATEGY": "margin", "AL_BATCH_SIZE": "5",
                        "AL_SELECTION_SCHEDULE": "0 30 * * * *"}
    proc = subprocess.run([sys.executable, "-c", HOST_SCRIPT], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1]), data


def test_the_app_indexes_the_timer_and_two_admin_routes(host):
    out, _ = host
    bindings = out["bindings"]
    assert set(bindings) == {"selection_timer", "selection_preview", "selection_run"}
    [timer] = bindings["selection_timer"]
    assert timer["type"] == "timerTrigger" and timer["schedule"] == "%AL_SELECTION_SCHEDULE%"
    assert timer["runOnStartup"] is False
    for name, route, method in (("selection_preview", "selection/preview", "GET"),
                                ("selection_run", "selection/run", "POST")):
        trigger = next(b for b in bindings[name] if b["type"] == "httpTrigger")
        assert trigger["route"] == route and trigger["methods"] == [method]
        assert trigger["authLevel"].lower() == "admin"


def test_preview_returns_scored_candidates_and_records_nothing(host):
    out, _ = host
    preview = out["calls"]["preview"]
    assert preview["status"] == 200 and preview["body"]["status"] == "preview"
    items = preview["body"]["items"]
    assert len(items) == 3 and "batch_id" not in preview["body"]
    assert [i["score"] for i in items] == sorted((i["score"] for i in items), reverse=True)


@pytest.mark.parametrize(("call", "field"), [("preview_bad_k", "k"), ("preview_bad_strategy", "strategy")])
def test_bad_input_is_a_400_naming_the_field(host, call, field):
    out, _ = host
    got = out["calls"][call]
    assert got["status"] == 400
    [problem] = got["body"]["problems"]
    assert problem["field"] == field and problem["reason"]


def test_run_now_and_the_timer_take_the_same_path_without_duplicates(host):
    out, data = host
    calls = out["calls"]
    assert calls["run"]["status"] == 200 and calls["run"]["body"]["count"] == 4
    assert calls["run_busy"]["status"] == 409 and calls["run_busy"]["body"]["status"] == "busy"
    last = calls["run_after_timer"]["body"]
    assert last["count"] == 12 - 4 - 5  # the timer took a batch of AL_BATCH_SIZE=5 in between
    files = sorted(p.relative_to(data / "blobs" / "labeling-input").as_posix()
                   for p in (data / "blobs" / "labeling-input").rglob("*.png"))
    assert len(files) == 12 and len({f.split("/")[1] for f in files}) == 12
