"""A mini Azure Functions host for tests: runs a Python v2-model app in its own OS process.

Test support only (the real Core Tools cannot be installed here). ``python -m tests.support.funchost
--port P [--task-hub NAME] [--app module:attr]`` imports the app, indexes ``app.get_functions()``
once, prints one ready line (JSON) on stdout and serves on 127.0.0.1:P (threaded) until SIGTERM or
SIGINT. Configuration comes from the environment, as app settings do: ``%NAME%`` in a binding is
resolved from it, a binding's ``connection`` names a setting holding a storage connection string
(Azurite), ``AzureWebJobsStorage`` holds the Durable task hub and the blob receipts.

Endpoints (``code``/``x-functions-key`` only checked when keys are given, see ``--function-key``):

* ``GET /admin/host/status``, ``GET /admin/functions``: the host and the indexed functions;
* ``/<routePrefix>/<route>`` (host.json ``extensions.http.routePrefix``, ``api`` by default): HTTP
  triggers, with their methods and route parameters; the function's HttpResponse is returned;
* ``POST /admin/functions/<name>`` ``{"input": "..."}``: runs a timer (a real ``TimerRequest``,
  ``past_due`` false), queue (the input is the message body) or blob (the input is
  ``container/path``) function. Answers 200 when the function returned, 500 with the error text when
  it raised: synchronous, where the real host answers 202 and runs it in the background;
* ``POST /runtime/webhooks/blobs?functionName=Host.Functions.<name>``: the blobs extension's Event
  Grid webhook (``aeg-event-type`` SubscriptionValidation / Notification); BlobCreated events whose
  blob matches the binding's path run the function with a real ``InputStream``, once per blob ETag
  (blob receipts); 200 when done, 500 when the function raised (Event Grid retries);
* ``/runtime/webhooks/durabletask/...``: the Durable extension's HTTP API (:class:`DurableApi`);
  ``durable_client_input`` bindings get a binding JSON whose ``rpcBaseUrl`` points there.

Queue triggers are polled (base64 messages, as the queue extension expects by default): a message
is deleted when the function returns, made visible again when it raises, and moved to
``<queue>-poison`` after ``maxDequeueCount`` (host.json, 5) attempts. Timer triggers never fire on
their schedule here: tests invoke them through the admin API.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hmac
import importlib
import inspect
import json
import logging
import os
import re
import signal
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

log = logging.getLogger("funchost")

TRIGGERS = ("httpTrigger", "timerTrigger", "queueTrigger", "blobTrigger", "activityTrigger",
            "orchestrationTrigger")
_SETTING = re.compile(r"%([^%]+)%")


class SettingError(Exception):
    pass


def resolve(value: str, env: Mapping[str, str]) -> str:
    """``%NAME%`` binding expressions, from the app settings (the environment)."""
    def one(m: re.Match[str]) -> str:
        if m.group(1) not in env:
            raise SettingError(f"'{m.group(0)}' does not resolve to a value (app setting {m.group(1)} is missing)")
        return env[m.group(1)]

    return _SETTING.sub(one, value)


def connection_string(name: str | None, env: Mapping[str, str]) -> str:
    """A binding's ``connection``: the setting of that name (or ``AzureWebJobs<name>``)."""
    name = name or "AzureWebJobsStorage"
    for key in (name, f"AzureWebJobs{name}"):
        if env.get(key):
            return env[key]
    raise SettingError(f"connection setting '{name}' is missing (a connection string is needed here; "
                       f"identity-based '{name}__serviceUri' settings are not supported by the stand-in host)")


# -- the indexed app ----------------------------------------------------------------------------------


@dataclass
class Function:
    name: str
    fn: Callable[..., Any]
    bindings: list[dict[str, Any]]
    trigger: dict[str, Any]
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # resolved queue name, route regex, ...

    @property
    def kind(self) -> str:
        return str(self.trigger.get("type"))


def index(app: Any) -> dict[str, Function]:
    """``app.get_functions()`` (once: a second call raises), as the worker indexes the app."""
    out: dict[str, Function] = {}
    for f in app.get_functions():
        bindings = [json.loads(raw) for raw in f.get_raw_bindings()]  # the metadata the host gets
        trigger = next((b for b in bindings if str(b.get("type", "")).endswith("Trigger")), {})
        fn = Function(f.get_function_name(), f.get_user_function(), bindings, trigger)
        if trigger.get("type") not in TRIGGERS:
            fn.error = f"trigger type {trigger.get('type')!r} is not supported by the stand-in host"
        for b in bindings:
            if b is trigger or b["type"] == "durableClient" or (b["type"] == "http" and b["name"] == "$return"):
                continue
            fn.error = f"binding type {b['type']!r} ({b['name']}) is not supported by the stand-in host"
        out[fn.name] = fn
    return out


class _Loop:
    """One event loop for the process, as the Python worker has: async functions run on it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="asyncio", daemon=True).start()

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()


@dataclass
class InvocationContext:
    """What a ``context`` parameter receives (the worker's func.Context)."""

    invocation_id: str
    function_name: str
    function_directory: str
    trace_context: Any = None
    retry_context: Any = None
    thread_local_storage: Any = field(default_factory=threading.local)


# -- HTTP routes --------------------------------------------------------------------------------------

_TOKEN = re.compile(r"\{(\*?)([A-Za-z_][A-Za-z0-9_]*)(?::([^}?=]+))?(\?)?\}")


def compile_route(template: str) -> re.Pattern[str]:
    """An ASP.NET-style route template (``a/{b}/{c?}/{*rest}``, ``{id:int}``) as a regex."""
    regex = ""
    for seg in [s for s in template.strip("/").split("/") if s]:
        whole = _TOKEN.fullmatch(seg)
        if whole and (whole.group(1) or whole.group(4)):
            star, name = whole.group(1), whole.group(2)
            regex += f"(?:/(?P<{name}>.*))?" if star else f"(?:/(?P<{name}>[^/]+))?"
            continue
        part, pos = "/", 0
        for m in _TOKEN.finditer(seg):
            part += re.escape(seg[pos:m.start()])
            constraint = (m.group(3) or "").lower()
            pattern = r"-?\d+" if constraint in ("int", "long") else "[^/]+?" if pos or m.end() < len(seg) else "[^/]+"
            part += f"(?P<{m.group(2)}>{pattern})"
            pos = m.end()
        regex += part + re.escape(seg[pos:])
    return re.compile(f"^{regex}/?$", re.IGNORECASE)


def _literal_weight(template: str) -> tuple[int, int]:
    segs = [s for s in template.strip("/").split("/") if s]
    literals = sum(1 for s in segs if "{" not in s)
    return (-literals, len(segs))


# -- the host -----------------------------------------------------------------------------------------


class FunctionHost:
    def __init__(self, app: Any, *, port: int, task_hub: str | None = None, function_key: str | None = None,
                 master_key: str | None = None, queue_polling: bool = True, queue_poll_interval: float = 0.5,
                 durable_poll_interval: float = 0.25, blob_any_source: bool = False, root: Path | None = None,
                 env: Mapping[str, str] | None = None) -> None:
        self.env = dict(os.environ if env is None else env)
        self.root = root or Path.cwd()
        host_json = self._host_json()
        ext = host_json.get("extensions", {})
        self.route_prefix = str(ext.get("http", {}).get("routePrefix", "api")).strip("/")
        self.max_dequeue = int(ext.get("queues", {}).get("maxDequeueCount", 5))
        self.queue_visibility = _timespan(ext.get("queues", {}).get("visibilityTimeout", "00:00:00"))
        self.task_hub = task_hub or ext.get("durableTask", {}).get("hubName") or "TestHubName"
        self.function_key, self.master_key = function_key, master_key
        self.queue_polling, self.queue_poll_interval = queue_polling, queue_poll_interval
        self.durable_poll_interval = durable_poll_interval
        self.blob_any_source = blob_any_source
        self.started = time.monotonic()
        self.stopping = threading.Event()
        self.loop = _Loop()
        self.functions = index(app)
        self.server = ThreadingHTTPServer(("127.0.0.1", port), _handler(self))
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.routes: list[tuple[re.Pattern[str], Function]] = []
        self.threads: list[threading.Thread] = []
        self.durable_api: Any = None
        self.durable_worker: Any = None
        self._prepare()

    def _host_json(self) -> dict[str, Any]:
        path = self.root / "host.json"
        return json.loads(path.read_text()) if path.exists() else {}

    # -- start-up -----------------------------------------------------------------------------------------

    def _prepare(self) -> None:
        http = []
        for f in self.functions.values():
            if f.error:
                continue
            try:
                if f.kind == "httpTrigger":
                    route = f.trigger.get("route") or f.name
                    http.append((route, f))
                elif f.kind == "queueTrigger":
                    f.extra["queue"] = resolve(f.trigger["queueName"], self.env).lower()
                    f.extra["connection"] = connection_string(f.trigger.get("connection"), self.env)
                elif f.kind == "blobTrigger":
                    path = resolve(f.trigger["path"], self.env)
                    f.extra["path"] = path
                    f.extra["connection"] = connection_string(f.trigger.get("connection"), self.env)
                    f.extra["regex"] = _blob_path_regex(path)
                elif f.kind == "timerTrigger":
                    f.extra["schedule"] = resolve(str(f.trigger.get("schedule", "")), self.env)
            except SettingError as exc:
                f.error = str(exc)
        http.sort(key=lambda rf: _literal_weight(rf[0]))
        self.routes = [(compile_route(route), f) for route, f in http]
        if any(f.kind in ("orchestrationTrigger", "activityTrigger") or
               any(b["type"] == "durableClient" for b in f.bindings) for f in self.functions.values()):
            self._start_durable()

    def _start_durable(self) -> None:
        from tests.support.durable import BlobInstanceStore, DurableApi, DurableWorker, OrchestratorFunction

        store = BlobInstanceStore(connection_string("AzureWebJobsStorage", self.env), self.task_hub)
        orchestrators = {}
        activities = {}
        for f in self.functions.values():
            if f.error:
                continue
            if f.kind == "orchestrationTrigger":
                name = f.trigger.get("orchestration") or f.name
                orchestrators[name] = OrchestratorFunction(getattr(f.fn, "orchestrator_function", f.fn),
                                                           getattr(f.fn, "_df_input_type", None))
            elif f.kind == "activityTrigger":
                activities[f.trigger.get("activity") or f.name] = self._activity_runner(f)
        self.durable_worker = DurableWorker(store, orchestrators, activities, poll_interval=self.durable_poll_interval)
        self.durable_api = DurableApi(store, self.durable_worker, f"{self.url}/runtime/webhooks/durabletask/")

    def _activity_runner(self, f: Function) -> Callable[[str | None], str | None]:
        from azure.functions.durable_functions import ActivityTriggerConverter
        from azure.functions.meta import Datum

        def run(input_json: str | None) -> str | None:
            value = ActivityTriggerConverter.decode(Datum(input_json if input_json is not None else "null", "json"),
                                                    trigger_metadata={})
            result = self.call(f, value)
            return ActivityTriggerConverter.encode(result, expected_type=None).value

        return run

    def start(self) -> None:
        t = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.2}, name="http",
                             daemon=True)
        t.start()
        self.threads.append(t)
        if self.durable_worker is not None:
            self.durable_worker.start()
        if self.queue_polling:
            for f in self.functions.values():
                if f.kind == "queueTrigger" and not f.error:
                    p = threading.Thread(target=self._poll_queue, args=(f,), name=f"queue-{f.name}", daemon=True)
                    p.start()
                    self.threads.append(p)

    def stop(self) -> None:
        self.stopping.set()
        if self.durable_worker is not None:
            self.durable_worker.stop()
        self.server.shutdown()
        self.server.server_close()

    def ready_line(self) -> dict[str, Any]:
        return {"ready": True, "pid": os.getpid(), "port": self.port, "url": self.url, "taskHub": self.task_hub,
                "functions": sorted(self.functions),
                "triggers": {f.name: f.kind for f in self.functions.values()},
                "errors": {f.name: f.error for f in self.functions.values() if f.error}}

    # -- invoking a function --------------------------------------------------------------------------------

    def call(self, f: Function, trigger_value: Any) -> Any:
        """Run the user function with its trigger value and bindings, as the worker does."""
        if f.error:
            raise RuntimeError(f"function {f.name} is in error: {f.error}")
        kwargs: dict[str, Any] = {}
        for b in f.bindings:
            if b.get("direction", "IN") not in ("IN", "INOUT"):
                continue
            if b is f.trigger:
                kwargs[b["name"]] = trigger_value
            elif b["type"] == "durableClient":
                kwargs[b["name"]] = self.durable_api.binding(b.get("taskHub"), b.get("connectionName") or "Storage")
        params = inspect.signature(f.fn).parameters
        if "context" in params and "context" not in kwargs:
            kwargs["context"] = InvocationContext(str(uuid.uuid4()), f.name, str(self.root))
        if inspect.iscoroutinefunction(f.fn):
            return self.loop.run(f.fn(**kwargs))
        return f.fn(**kwargs)

    # -- HTTP ----------------------------------------------------------------------------------------------------

    def authorized(self, level: str, headers: Mapping[str, str], query: Mapping[str, str]) -> bool:
        """No keys configured: every request passes. Otherwise FUNCTION takes the function or master
        key, ADMIN (and the admin API) only the master key, from ``x-functions-key`` or ``?code=``."""
        if self.function_key is None and self.master_key is None:
            return True
        level = level.upper()
        if level == "ANONYMOUS":
            return True
        given = headers.get("x-functions-key") or query.get("code") or ""
        accepted = [k for k in ((self.function_key if level == "FUNCTION" else None), self.master_key) if k]
        return any(hmac.compare_digest(given, k) for k in accepted)

    def dispatch(self, method: str, raw_path: str, headers: Mapping[str, str],
                 body: bytes) -> tuple[int, dict[str, str], bytes]:
        split = urlsplit(raw_path)
        path, query = unquote(split.path), dict(parse_qsl(split.query, keep_blank_values=True))
        if path.startswith("/runtime/webhooks/durabletask/") or path == "/runtime/webhooks/durabletask":
            if self.durable_api is None:
                return _text(404, "this app has no Durable functions")
            rest = split.path[len("/runtime/webhooks/durabletask"):]
            return self.durable_api.handle(method, rest, query, headers, body)
        if path.startswith("/admin/"):
            if not self.authorized("ADMIN", headers, query):
                return _text(401, "the admin API needs the master key")
            return self._admin(method, path, body)
        if path == "/runtime/webhooks/blobs":
            if not self.authorized("ADMIN", headers, query):
                return _text(401, "the blobs extension webhook needs a system key (the master key here)")
            if method != "POST":
                return _text(405, "POST only")
            return self._blob_webhook(query, headers, body)
        prefix = f"/{self.route_prefix}" if self.route_prefix else ""
        if path == prefix or path.startswith(prefix + "/"):
            return self._http_trigger(method, path[len(prefix):], split, headers, query, body)
        return _text(404, f"no route {path}")

    def _http_trigger(self, method: str, sub: str, split: Any, headers: Mapping[str, str],
                      query: Mapping[str, str], body: bytes) -> tuple[int, dict[str, str], bytes]:
        import azure.functions as func

        for regex, f in self.routes:
            m = regex.match(sub or "/")
            if not m:
                continue
            methods = [x.upper() for x in (f.trigger.get("methods") or [])]
            if methods and method not in methods:
                continue
            if not self.authorized(str(f.trigger.get("authLevel", "FUNCTION")), headers, query):
                return _text(401, "")
            route_params = {k: v for k, v in m.groupdict().items() if v is not None}
            url = f"http://{headers.get('host', f'127.0.0.1:{self.port}')}{split.path}"
            url += f"?{split.query}" if split.query else ""
            req = func.HttpRequest(method=method, url=url, headers=dict(headers), params=dict(query),
                                   route_params=route_params, body=body)
            try:
                result = self.call(f, req)
            except Exception as exc:
                log.exception("function %s failed", f.name)
                return _text(500, f"Exception while executing function: {f.name}: {type(exc).__name__}: {exc}")
            return _http_result(result)
        return _text(404, f"no HTTP function for {method} /{self.route_prefix}{sub}")

    def _admin(self, method: str, path: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
        if path == "/admin/host/status" and method == "GET":
            return _json(200, {"id": "funchost", "state": "Running", "version": "4.0.0-standin",
                               "processUptime": int((time.monotonic() - self.started) * 1000),
                               "taskHub": self.task_hub, "functions": sorted(self.functions),
                               "errors": {f.name: f.error for f in self.functions.values() if f.error}})
        if path == "/admin/functions" and method == "GET":
            return _json(200, [{"name": f.name, "trigger": f.kind, "bindings": f.bindings, "error": f.error}
                               for f in self.functions.values()])
        m = re.fullmatch(r"/admin/functions/([^/]+)", path)
        if not m or method != "POST":
            return _text(404, f"no admin endpoint {method} {path}")
        f = self.functions.get(m.group(1))
        if f is None:
            return _text(404, f"no function {m.group(1)!r}")
        try:
            payload = json.loads(body or b"{}")
            text = payload.get("input", "") if isinstance(payload, dict) else ""
        except ValueError:
            return _text(400, "the body must be JSON: {\"input\": \"...\"}")
        try:
            self.call(f, self._admin_trigger_value(f, str(text if text is not None else "")))
        except _NotInvokable as exc:
            return _text(400, str(exc))
        except Exception as exc:
            log.exception("function %s failed", f.name)
            return _text(500, f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}")
        return _json(200, {"function": f.name, "status": "succeeded"})

    def _admin_trigger_value(self, f: Function, text: str) -> Any:
        from azure.functions.queue import QueueMessage
        from azure.functions.timer import TimerRequest

        now = datetime.now(UTC)
        if f.kind == "timerTrigger":
            return TimerRequest(past_due=False, schedule={"AdjustForDST": True},
                                schedule_status={"Last": now.isoformat(), "Next": now.isoformat(),
                                                 "LastUpdated": now.isoformat()})
        if f.kind == "queueTrigger":
            return QueueMessage(id=str(uuid.uuid4()), body=text.encode(), dequeue_count=1, insertion_time=now,
                                expiration_time=now + timedelta(days=7), time_next_visible=now,
                                pop_receipt=uuid.uuid4().hex)
        if f.kind == "blobTrigger":
            container, _, name = text.partition("/")
            stream = self._read_blob(f, container, name)
            if stream is None:
                raise _NotInvokable(f"no blob {text!r}")
            return stream
        raise _NotInvokable(f"{f.name} is a {f.kind} function: the admin API runs timer, queue and blob functions")

    # -- blob trigger (Event Grid source) ----------------------------------------------------------------

    def _blob_webhook(self, query: Mapping[str, str], headers: Mapping[str, str],
                      body: bytes) -> tuple[int, dict[str, str], bytes]:
        name = query.get("functionName", "")
        f = self.functions.get(name.removeprefix("Host.Functions."))
        if f is None or f.kind != "blobTrigger" or not name.startswith("Host.Functions."):
            return _text(404, f"no blob trigger function {name!r} (functionName=Host.Functions.<name>)")
        if f.error:
            return _text(500, f"function {f.name} is in error: {f.error}")
        if str(f.trigger.get("source", "")).lower() != "eventgrid" and not self.blob_any_source:
            return _text(400, f"{f.name}'s blob trigger does not have source=EventGrid (the polling source is not "
                              "served by the stand-in host; --blob-any-source accepts it anyway)")
        kind = headers.get("aeg-event-type", "").lower()
        try:
            token = json.loads(body)
        except ValueError:
            return _text(400, "the body is not JSON")
        events = token if isinstance(token, list) else [token]
        if kind == "subscriptionvalidation":
            code = (events[0].get("data") or {}).get("validationCode") if events else None
            return _json(200, {"validationResponse": code})
        if kind == "unsubscribe":
            return 202, {}, b""
        if kind != "notification":
            return _text(400, "missing or unknown aeg-event-type header")
        outcomes = []
        for ev in events:
            outcome = self._blob_event(f, ev)
            outcomes.append(outcome)
            if outcome["status"] == "failed":
                return _json(500, {"error": outcome["error"], "events": outcomes})
        return _json(200, {"events": outcomes})

    def _blob_event(self, f: Function, ev: Mapping[str, Any]) -> dict[str, Any]:
        kind = ev.get("eventType") or ev.get("type")
        subject = str(ev.get("subject", ""))
        where = _blob_of_event(ev)
        if kind != "Microsoft.Storage.BlobCreated" or where is None:
            return {"subject": subject, "status": "ignored", "reason": f"{kind} event"}
        container, blob = where
        if not f.extra["regex"].fullmatch(f"{container}/{blob}"):
            return {"subject": subject, "status": "ignored", "reason": f"does not match {f.extra['path']}"}
        stream = self._read_blob(f, container, blob)
        if stream is None:
            return {"subject": subject, "status": "skipped", "reason": "the blob no longer exists"}
        receipt = self._receipt(f, container, blob, str(stream.blob_properties.get("ETag", "")))
        if receipt is not None and receipt.exists():
            return {"subject": subject, "status": "skipped", "reason": "already processed (blob receipt)"}
        try:
            self.call(f, stream)
        except Exception as exc:
            log.exception("function %s failed on %s/%s", f.name, container, blob)
            return {"subject": subject, "status": "failed", "error": f"{type(exc).__name__}: {exc}"}
        if receipt is not None:
            receipt.upload_blob(b"", overwrite=True, metadata={"InvocationId": uuid.uuid4().hex})
        return {"subject": subject, "status": "succeeded"}

    def _read_blob(self, f: Function, container: str, name: str) -> Any:
        from azure.core.exceptions import ResourceNotFoundError
        from azure.functions.blob import InputStream
        from azure.storage.blob import BlobClient

        client = BlobClient.from_connection_string(f.extra["connection"], container, name)
        try:
            downloader = client.download_blob()
        except ResourceNotFoundError:
            return None
        data = downloader.readall()
        p = downloader.properties
        props = {"Length": p.size, "ETag": str(p.etag).strip('"'), "ContentType": p.content_settings.content_type,
                 "LastModified": p.last_modified.isoformat() if p.last_modified else None,
                 "BlobType": str(p.blob_type)}
        return InputStream(data=data, name=f"{container}/{name}", uri=client.url, length=p.size,
                           blob_properties=props, metadata=dict(p.metadata or {}))

    def _receipt(self, f: Function, container: str, blob: str, etag: str) -> Any:
        """The blobs extension's receipt (one per function, blob and ETag) in the host storage."""
        if not self.env.get("AzureWebJobsStorage"):
            return None
        from azure.storage.blob import BlobServiceClient

        service = BlobServiceClient.from_connection_string(self.env["AzureWebJobsStorage"])
        hosts = service.get_container_client("azure-webjobs-hosts")
        try:
            hosts.create_container()
        except Exception as exc:
            if getattr(exc, "status_code", None) != 409:
                raise
        return hosts.get_blob_client(f"blobreceipts/funchost/Host.Functions.{f.name}/{etag}/{container}/{blob}")

    # -- queue trigger polling ----------------------------------------------------------------------------

    def _poll_queue(self, f: Function) -> None:
        from azure.core.exceptions import ResourceNotFoundError
        from azure.storage.queue import QueueClient

        client = QueueClient.from_connection_string(f.extra["connection"], f.extra["queue"])
        while not self.stopping.is_set():
            try:
                messages = list(client.receive_messages(messages_per_page=16, max_messages=16,
                                                        visibility_timeout=600))
            except ResourceNotFoundError:
                messages = []
            except Exception:
                log.exception("polling queue %s failed", f.extra["queue"])
                messages = []
            for message in messages:
                if self.stopping.is_set():
                    return
                self._queue_message(f, client, message)
            if not messages:
                self.stopping.wait(self.queue_poll_interval)

    def _queue_message(self, f: Function, client: Any, message: Any) -> None:
        from azure.functions.queue import QueueMessage
        from azure.storage.queue import QueueClient

        try:
            body = base64.b64decode(message.content or "", validate=True)
            msg = QueueMessage(id=message.id, body=body, dequeue_count=message.dequeue_count,
                               insertion_time=message.inserted_on, expiration_time=message.expires_on,
                               time_next_visible=message.next_visible_on, pop_receipt=message.pop_receipt)
            self.call(f, msg)
        except Exception:
            log.exception("function %s failed on message %s (dequeue count %s)", f.name, message.id,
                          message.dequeue_count)
            try:
                if (message.dequeue_count or 0) >= self.max_dequeue:
                    poison = QueueClient.from_connection_string(f.extra["connection"], f"{f.extra['queue']}-poison")
                    try:
                        poison.create_queue()
                    except Exception as exc:
                        if getattr(exc, "status_code", None) != 409:
                            raise
                    poison.send_message(message.content)
                    client.delete_message(message.id, message.pop_receipt)
                    log.warning("message %s reached maxDequeueCount %d: moved to %s-poison", message.id,
                                self.max_dequeue, f.extra["queue"])
                else:
                    client.update_message(message.id, pop_receipt=message.pop_receipt,
                                          visibility_timeout=self.queue_visibility)
            except Exception:
                log.exception("could not release message %s", message.id)
            return
        try:
            client.delete_message(message.id, message.pop_receipt)
        except Exception:
            log.exception("could not delete message %s", message.id)


class _NotInvokable(Exception):
    pass


def _blob_of_event(ev: Mapping[str, Any]) -> tuple[str, str] | None:
    """(container, blob) from ``data.url``, as the blobs extension reads it (account in the host name,
    or in the path for an IP/localhost endpoint such as Azurite's); else from the subject."""
    url = str((ev.get("data") or {}).get("url") or "")
    if url:
        split = urlsplit(url)
        parts = split.path.lstrip("/").split("/")
        host = split.hostname or ""
        if re.fullmatch(r"[\d.]+|localhost|\[.*\]", host) or ":" in host:
            parts = parts[1:]  # path-style: /<account>/<container>/<blob>
        if len(parts) >= 2 and parts[0] and parts[1]:
            return unquote(parts[0]), unquote("/".join(parts[1:]))
    m = re.fullmatch(r"/blobServices/default/containers/([^/]+)/blobs/(.+)", str(ev.get("subject", "")))
    return (m.group(1), m.group(2)) if m else None


def _blob_path_regex(path: str) -> re.Pattern[str]:
    """``container/prefix{name}.{ext}`` -> a regex over ``container/blob``."""
    regex, pos = "", 0
    for m in re.finditer(r"\{([^}]+)\}", path):
        regex += re.escape(path[pos:m.start()]) + ".+?"
        pos = m.end()
    return re.compile(regex + re.escape(path[pos:]), re.DOTALL)


def _timespan(text: Any) -> int:
    h, m, s = (float(x) for x in str(text).split(":"))
    return int(h * 3600 + m * 60 + s)


def _text(status: int, text: str) -> tuple[int, dict[str, str], bytes]:
    return status, {"Content-Type": "text/plain; charset=utf-8"}, text.encode()


def _json(status: int, body: Any) -> tuple[int, dict[str, str], bytes]:
    return status, {"Content-Type": "application/json; charset=utf-8"}, json.dumps(body, default=str).encode()


def _http_result(result: Any) -> tuple[int, dict[str, str], bytes]:
    import azure.functions as func

    if isinstance(result, func.HttpResponse):
        headers = {k: v for k, v in result.headers.items()}
        if not any(k.lower() == "content-type" for k in headers):
            headers["Content-Type"] = f"{result.mimetype}; charset={result.charset}"
        return result.status_code, headers, result.get_body() or b""
    if result is None:
        return 204, {}, b""
    if isinstance(result, str | bytes):
        data = result.encode() if isinstance(result, str) else result
        return 200, {"Content-Type": "text/plain; charset=utf-8"}, data
    return _text(500, f"an HTTP function returned {type(result).__name__}, not an HttpResponse")


def _handler(host: FunctionHost) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "funchost/1"

        def _serve(self) -> None:
            try:
                body = self._body()
                headers = {k.lower(): v for k, v in self.headers.items()}
                status, out_headers, data = host.dispatch(self.command, self.path, headers, body)
            except Exception as exc:
                log.exception("request %s %s failed", self.command, self.path)
                status, out_headers, data = _text(500, f"{type(exc).__name__}: {exc}")
            self.send_response(status, HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "")
            for k, v in out_headers.items():
                if k.lower() not in ("content-length", "transfer-encoding", "connection"):
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def _body(self) -> bytes:
            if self.headers.get("transfer-encoding", "").lower() == "chunked":
                out = b""
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        self.rfile.readline()
                        return out
                    out += self.rfile.read(size)
                    self.rfile.readline()
            length = int(self.headers.get("content-length") or 0)
            return self.rfile.read(length) if length else b""

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _serve

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("%s %s", self.address_string(), format % args)

    return Handler


def load_app(spec: str) -> Any:
    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr or "app")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.support.funchost", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True, help="0: any free port (reported in the ready line)")
    parser.add_argument("--task-hub", default=None, help="Durable task hub (default: host.json's, or TestHubName)")
    parser.add_argument("--app", default="function_app:app", help="module:attribute of the FunctionApp")
    parser.add_argument("--function-key", default=None, help="require this key for FUNCTION-level routes")
    parser.add_argument("--master-key", default=None, help="require this key for ADMIN routes and /admin")
    parser.add_argument("--no-queue-polling", action="store_true", help="do not poll queue triggers")
    parser.add_argument("--queue-poll-interval", type=float, default=0.5, help="seconds between empty polls")
    parser.add_argument("--durable-poll-interval", type=float, default=0.25, help="seconds between task hub scans")
    parser.add_argument("--blob-any-source", action="store_true",
                        help="serve the Event Grid webhook for blob triggers without source=EventGrid too")
    parser.add_argument("--log-level", default=os.environ.get("FUNCHOST_LOG_LEVEL", "INFO"))
    args = parser.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("azure").setLevel(logging.WARNING)
    sys.path.insert(0, str(Path.cwd()))

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    host = FunctionHost(load_app(args.app), port=args.port, task_hub=args.task_hub, function_key=args.function_key,
                        master_key=args.master_key, queue_polling=not args.no_queue_polling,
                        queue_poll_interval=args.queue_poll_interval, durable_poll_interval=args.durable_poll_interval,
                        blob_any_source=args.blob_any_source)
    host.start()
    for name, error in host.ready_line()["errors"].items():
        log.error("function %s is in error: %s", name, error)
    print(json.dumps(host.ready_line()), flush=True)
    while not stop.wait(0.5):
        pass
    log.info("stopping")
    # Daemon threads only; a function still running is abandoned, as when a real host instance stops.
    done = threading.Thread(target=host.stop, daemon=True)
    done.start()
    done.join(5)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
