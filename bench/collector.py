"""Collector path and monitoring-client figures (issue 3's performance targets).

- ``collector_path``: parse (JSON body) -> validate (pydantic + semantic checks) -> score and
  serialize (``landing_jsonl`` computes least confidence, margin, entropy and the random key into the
  landing JSON lines), for 67-class records, on one core. Target: >= 20,000 predictions/s.
- ``client_log``: p99 cost of ``MonitoringClient.log()`` while the worker posts to a slow local
  collector, and the buffer bound with the collector down. Target: p99 <= 0.1 ms.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

CLASSES = 67


def _payload(n: int, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    proba = rng.dirichlet(np.full(CLASSES, 0.3), size=n)
    proba /= proba.sum(axis=1, keepdims=True)
    names = [f"class_{i:02d}" for i in range(CLASSES)]
    t0 = datetime(2026, 3, 1, tzinfo=UTC)
    records = [{"item_id": f"item-{i:07d}", "item_uri": f"https://acct.blob.core.windows.net/items/{i}.png",
                "model_name": "glyphs", "model_version": "12", "probabilities": proba[i].tolist(),
                "predicted_label": names[int(proba[i].argmax())],
                "scored_at": (t0 + timedelta(seconds=i)).isoformat()} for i in range(n)]
    return json.dumps(records).encode()


def collector_path(n: int = 1000, repeats: int = 20) -> dict[str, float]:
    """Predictions per second through parse, validate, score and serialize (batches of ``n``)."""
    from pydantic_core import from_json

    from shared.core.item_uris import ItemUriPolicy
    from shared.core.payload import landing_jsonl, records_from_json, validate_batch

    classes = tuple(f"class_{i:02d}" for i in range(CLASSES))
    body = _payload(n)
    landed_at = datetime(2026, 3, 1, 12, tzinfo=UTC)
    # What the Azure collector checks item URIs against (AL_ALLOWED_ITEM_HOSTS and its own account).
    item_uris = ItemUriPolicy.of(https_hosts=["acct.blob.core.windows.net"],
                                 roots=["https://loop.blob.core.windows.net/"])
    timings = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        # What the HTTP handler does: the one-pass path for a clean body, else parse then validate.
        payload = records_from_json(body, max_records=n)
        if payload is None:
            payload = from_json(body, allow_inf_nan=True)
        checked = validate_batch(payload, classes_of=lambda *_: classes, max_records=n,
                                 max_item_bytes=1, now=landed_at, max_future=timedelta(minutes=5),
                                 item_uris=item_uris)
        records = [r for r, _, _ in checked]
        landing_jsonl(records, [r.item_uri or "" for r in records], landed_at, seed=0)
        timings.append(time.perf_counter() - t0)
    best, median = min(timings), float(np.median(timings))
    figures = {"batch": n, "classes": CLASSES, "predictions_per_s_median": n / median,
               "predictions_per_s_best": n / best, "target_per_s": 20_000}
    print(f"collector path: {n / median:,.0f} predictions/s median ({n / best:,.0f} best), "
          f"{CLASSES} classes, batches of {n}; target 20,000/s")
    return figures


class _SlowCollector(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        time.sleep(0.005)
        self.send_response(202)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def client_log(calls: int = 50_000) -> dict[str, float]:
    """p99 of ``log()`` while the worker posts to a local collector; buffer bound with it down."""
    from shared.monitoring import MonitoringClient

    record = json.loads(_payload(1))[0]
    server = ThreadingHTTPServer(("127.0.0.1", 0), _SlowCollector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/api/predictions"
        client = MonitoringClient.for_collector(url, max_batch=500, max_interval=0.05, register_atexit=False)
        costs = np.empty(calls)
        for i in range(calls):
            t0 = time.perf_counter_ns()
            client.log(record)
            costs[i] = time.perf_counter_ns() - t0
        client.flush(timeout=60)
        client.close()
        sent = client.stats.sent
    finally:
        server.shutdown()
        server.server_close()
    down = MonitoringClient.for_collector("http://127.0.0.1:9/api/predictions", timeout=0.2, max_buffer=10_000,
                                          max_batch=500, backoff=0.01, register_atexit=False)
    for _ in range(calls):
        down.log(record)
    held = down.pending()
    down.close(timeout=0.1)
    p99_ms = float(np.percentile(costs, 99)) / 1e6
    figures = {"calls": calls, "log_p50_ms": float(np.percentile(costs, 50)) / 1e6, "log_p99_ms": p99_ms,
               "sent": sent, "held_with_collector_down": held, "buffer_bound": 10_000 + 500,
               "dropped_with_collector_down": down.stats.dropped, "target_p99_ms": 0.1}
    print(f"client log(): p99 {p99_ms * 1000:.1f} µs while posting ({sent} sent); collector down: "
          f"{held} held (bound 10,500), {down.stats.dropped} dropped")
    return figures


def main() -> dict[str, object]:
    return {"collector_path": collector_path(), "client_log": client_log()}


if __name__ == "__main__":
    main()
