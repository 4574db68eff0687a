"""A Durable Functions "extension" for tests: the replay engine, and its Azure Storage backed host.

The real extension (DTFx) keeps each orchestration instance as a history of events. An *episode*
appends ``OrchestratorStarted`` and the messages that arrived (``ExecutionStarted``,
``TaskCompleted``/``TaskFailed``, ``TimerFired``, ``EventRaised``), replays the orchestrator
function from the start over the whole history, records what the orchestrator now waits on
(``TaskScheduled``, ``TimerCreated``), appends ``OrchestratorCompleted``, persists the history, and
only then dispatches the new work (activity calls; timer messages that become visible at their due
time). :class:`ReplayEngine` does exactly that on one instance document (a JSON-able dict), with the
durable library's own executor (``Orchestrator.handle``) doing the replay, so a non-deterministic
orchestrator fails here as in production. It performs no I/O and takes the time as an argument.

Two drivers use it:

* :class:`LocalRunner`: in memory, a simulated clock and canned activity responders (unit tests);
* :class:`DurableWorker` with :class:`BlobInstanceStore` and :class:`DurableApi`: one blob per
  instance in Azure Storage (Azurite), updated under ETag conditions, real activity functions, real
  due times, and the extension's HTTP API that ``DurableOrchestrationClient`` calls. Nothing lives
  only in the process: a host killed at any point resumes, in a new process on the same task hub,
  every running orchestration; an activity that ran but whose completion was not persisted runs
  again (at-least-once, as in real Durable).

Supported orchestrator APIs: activities (with and without retry), durable timers, external events,
``task_any``/``task_all``, custom status, ``continue_as_new``. Sub-orchestrations, entities and
``call_http`` fail the orchestration with a message saying they are not supported here.
"""

from __future__ import annotations

import json
import logging
import threading
import traceback
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, unquote

from azure.durable_functions import Orchestrator
from azure.durable_functions.models import DurableOrchestrationContext
from azure.durable_functions.models.actions.CallActivityAction import CallActivityAction
from azure.durable_functions.models.actions.CallActivityWithRetryAction import CallActivityWithRetryAction
from azure.durable_functions.models.actions.CreateTimerAction import CreateTimerAction
from azure.durable_functions.models.actions.NoOpAction import NoOpAction
from azure.durable_functions.models.history import HistoryEventType as E

log = logging.getLogger("funchost.durable")

PENDING, RUNNING, COMPLETED, FAILED, TERMINATED, CONTINUED = (
    "Pending", "Running", "Completed", "Failed", "Terminated", "ContinuedAsNew")
TERMINAL = frozenset({COMPLETED, FAILED, TERMINATED, "Canceled"})
_CONTINUE_AS_NEW = 4  # ActionType.CONTINUE_AS_NEW


class UnsupportedAction(Exception):
    """The orchestrator asked for something this stand-in does not implement."""


class OrchestrationFailed(AssertionError):
    """Raised by :class:`LocalRunner` when the orchestration ends Failed."""


def utcnow() -> datetime:
    return datetime.now(UTC)


def _iso(t: datetime) -> str:
    return (t if t.tzinfo else t.replace(tzinfo=UTC)).isoformat()


def _parse(text: str) -> datetime:
    t = datetime.fromisoformat(text)
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def event(kind: E, when: datetime, event_id: int = -1, **fields: Any) -> dict[str, Any]:
    """A history event as the extension sends it to the Python worker."""
    return {"EventType": int(kind), "EventId": event_id, "IsPlayed": False, "Timestamp": _iso(when), **fields}


def activity_failure(name: str, exc: BaseException) -> tuple[str, str]:
    """(Reason, Details) of a failed activity, shaped like the extension's TaskFailed event:
    ``Activity function '<name>' failed: <Type>: <message>``, the traceback as details."""
    reason = f"Activity function '{name}' failed: {type(exc).__name__}: {exc}"
    details = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return reason, details


def _flatten(actions: Any) -> Iterator[dict[str, Any]]:
    if isinstance(actions, list):
        for a in actions:
            yield from _flatten(a)
    elif isinstance(actions, dict):
        yield actions
        yield from _flatten(actions.get("compoundActions", []))


@dataclass
class Episode:
    """What one episode did. ``state`` is the orchestrator's own answer (isDone, actions, output,
    customStatus), ``None`` when the episode did not replay (termination)."""

    outcome: str  # Running, Completed, Failed, Terminated, ContinuedAsNew
    state: dict[str, Any] | None = None
    activities: list[dict[str, Any]] = field(default_factory=list)
    timers: list[datetime] = field(default_factory=list)
    error: str | None = None
    context: DurableOrchestrationContext | None = None


class ReplayEngine:
    """The extension's part for one instance document; pure (no I/O, the time is an argument).

    An instance document holds the instance's status fields as the HTTP API reports them, the
    current execution's ``history``, its ``inbox`` (messages not yet in the history, each visible
    from ``visibleAt``: timers wait there until due) and its ``work`` (activities scheduled and not
    yet completed).
    """

    def __init__(self, *, schema_version: int = 0) -> None:
        self.schema_version = schema_version  # ReplaySchema V1, as the unit tests always used
        self.replays = 0

    # -- instance document ---------------------------------------------------------------------------

    @staticmethod
    def new_instance(name: str, instance_id: str, input_json: str | None, now: datetime) -> dict[str, Any]:
        execution = uuid.uuid4().hex
        return {
            "instanceId": instance_id, "name": name, "executionId": execution, "input": input_json,
            "createdTime": _iso(now), "lastUpdatedTime": _iso(now), "runtimeStatus": PENDING,
            "customStatus": None, "output": None, "history": [], "work": [],
            "inbox": [_message(event(E.EXECUTION_STARTED, now, Name=name, Input=input_json, Version=""), now,
                               execution)],
        }

    @staticmethod
    def raise_event(doc: dict[str, Any], name: str, input_json: str | None, now: datetime) -> None:
        """An external event for whichever execution is current when it is processed."""
        doc["inbox"].append(_message(event(E.EVENT_RAISED, now, Name=name, Input=input_json), now, None))

    @staticmethod
    def terminate(doc: dict[str, Any], reason: str, now: datetime) -> None:
        doc["inbox"].append(_message(event(E.EXECUTION_TERMINATED, now, Input=reason), now, None))

    @staticmethod
    def complete_activity(doc: dict[str, Any], item: Mapping[str, Any], now: datetime, *,
                          result_json: str | None = None, failure: tuple[str, str] | None = None) -> bool:
        """Turn a finished activity into a TaskCompleted/TaskFailed message. False if the work item
        is gone (the instance was terminated, restarted or continued as new meanwhile)."""
        key = (item["executionId"], item["taskId"])
        if not any((w["executionId"], w["taskId"]) == key for w in doc["work"]):
            return False
        doc["work"] = [w for w in doc["work"] if (w["executionId"], w["taskId"]) != key]
        if failure is None:
            done = event(E.TASK_COMPLETED, now, TaskScheduledId=item["taskId"], Result=result_json)
        else:
            done = event(E.TASK_FAILED, now, TaskScheduledId=item["taskId"], Reason=failure[0], Details=failure[1])
        doc["inbox"].append(_message(done, now, item["executionId"]))
        return True

    @staticmethod
    def next_due(doc: Mapping[str, Any]) -> datetime | None:
        """When the earliest inbox message becomes visible (None: nothing to do)."""
        if doc["runtimeStatus"] in TERMINAL or not doc["inbox"]:
            return None
        return min(_parse(m["visibleAt"]) for m in doc["inbox"])

    # -- one episode ------------------------------------------------------------------------------------

    def run_episode(self, doc: dict[str, Any], orchestrator: Callable[..., Any] | None, now: datetime, *,
                    input_type: type | None = None) -> Episode | None:
        """Apply the messages visible at ``now``, replay, record the new work. None if none is visible.

        Mutates ``doc``; the caller persists it before dispatching ``Episode.activities``.
        """
        if doc["runtimeStatus"] in TERMINAL:
            return None
        execution = doc["executionId"]
        ready = [m for m in doc["inbox"] if _parse(m["visibleAt"]) <= now and m["executionId"] in (None, execution)]
        # messages of an earlier execution (a timer of a continued or restarted instance) are dropped
        doc["inbox"] = [m for m in doc["inbox"] if m not in ready and m["executionId"] in (None, execution)]
        if not ready:
            return None
        ready.sort(key=lambda m: m["event"]["EventType"] != E.EXECUTION_STARTED)  # ExecutionStarted first
        doc["lastUpdatedTime"] = _iso(now)
        history: list[dict[str, Any]] = doc["history"]
        for e in history:
            e["IsPlayed"] = True
        terminated = next((m["event"] for m in ready if m["event"]["EventType"] == E.EXECUTION_TERMINATED), None)
        if terminated is not None:
            history += [event(E.ORCHESTRATOR_STARTED, now), {**terminated, "IsPlayed": False},
                        event(E.ORCHESTRATOR_COMPLETED, now)]
            self._finish(doc, TERMINATED, terminated.get("Input") or "")
            return Episode(TERMINATED)
        if not history and ready[0]["event"]["EventType"] != E.EXECUTION_STARTED:
            doc["inbox"] = ready + doc["inbox"]  # not started yet: keep the messages for later
            return None
        history.append(event(E.ORCHESTRATOR_STARTED, now))
        history += [{**m["event"], "IsPlayed": False} for m in ready]
        if orchestrator is None:
            error = f"The function '{doc['name']}' doesn't exist, is disabled, or is not an orchestrator function."
            return self._fail(doc, Episode(FAILED, error=error), now, {})

        ctx, state, error = self._replay(doc, orchestrator, input_type)
        ep = Episode(RUNNING, state=state, error=error, context=ctx)
        if error is not None:
            return self._fail(doc, ep, now, state)
        if "customStatus" in state:
            doc["customStatus"] = state["customStatus"]
        continued = [a for a in _flatten(state.get("actions", [])) if a.get("actionType") == _CONTINUE_AS_NEW]
        if continued:
            history += [event(E.EXECUTION_COMPLETED, now, OrchestrationStatus=CONTINUED, Result=None),
                        event(E.ORCHESTRATOR_COMPLETED, now)]
            self._continue_as_new(doc, continued[-1].get("input"), now)
            ep.outcome = CONTINUED
            return ep
        if state.get("isDone"):
            output = state.get("output")
            history += [event(E.EXECUTION_COMPLETED, now, OrchestrationStatus=COMPLETED, Result=json.dumps(output)),
                        event(E.ORCHESTRATOR_COMPLETED, now)]
            self._finish(doc, COMPLETED, output)
            ep.outcome = COMPLETED
            return ep
        try:
            ep.activities, ep.timers = self._schedule(doc, ctx, now)
        except UnsupportedAction as exc:
            ep.error = str(exc)
            return self._fail(doc, ep, now, state)
        history.append(event(E.ORCHESTRATOR_COMPLETED, now))
        doc["runtimeStatus"] = RUNNING
        return ep

    def _replay(self, doc: Mapping[str, Any], orchestrator: Callable[..., Any],
                input_type: type | None) -> tuple[DurableOrchestrationContext, dict[str, Any], str | None]:
        body = json.dumps({"history": doc["history"], "instanceId": doc["instanceId"], "isReplaying": False,
                           "parentInstanceId": None, "input": doc["input"],
                           "upperSchemaVersion": self.schema_version})
        ctx = DurableOrchestrationContext.from_json(body)
        ctx._input_expected_type = input_type  # as Orchestrator.create's handle does
        self.replays += 1
        try:
            return ctx, json.loads(Orchestrator(orchestrator).handle(ctx)), None
        except Exception as exc:  # the orchestrator raised: its message, then the state after a marker
            message, _, data = str(exc).partition("\n\n$OutOfProcData$:")
            try:
                state = json.loads(data) if data else {}
            except ValueError:
                state = {}
            return ctx, state, message.strip() or type(exc).__name__

    def _schedule(self, doc: dict[str, Any], ctx: DurableOrchestrationContext,
                  now: datetime) -> tuple[list[dict[str, Any]], list[datetime]]:
        """Record the tasks the orchestrator waits on that are not scheduled yet (ids from the library)."""
        history = doc["history"]
        scheduled = {e["EventId"] for e in history if e["EventType"] in (E.TASK_SCHEDULED, E.TIMER_CREATED)}
        activities: list[dict[str, Any]] = []
        timers: list[datetime] = []
        open_tasks = sorted(((k, v) for k, v in ctx.open_tasks.items() if isinstance(k, int)), key=lambda kv: kv[0])
        for key, value in open_tasks:
            if key in scheduled:
                continue
            for task in value if isinstance(value, list) else [value]:
                action = task.action_repr[0] if isinstance(task.action_repr, list) else task.action_repr
                if isinstance(action, NoOpAction):  # part of a retry: its timer, or the attempt after it
                    parent = task.parent
                    if getattr(parent, "is_waiting_on_timer", False):
                        delay = timedelta(milliseconds=parent.retry_options.first_retry_interval_in_milliseconds)
                        timers.append(self._timer(doc, key, now + delay, now))
                        continue
                    action = parent.actions[0] if isinstance(parent.actions, list) else parent.actions
                if isinstance(action, CreateTimerAction):
                    if not action.is_cancelled:
                        timers.append(self._timer(doc, key, action.fire_at, now))
                elif isinstance(action, CallActivityAction | CallActivityWithRetryAction):
                    history.append(event(E.TASK_SCHEDULED, now, key, Name=action.function_name, Input=action.input_))
                    item = {"executionId": doc["executionId"], "taskId": key, "name": action.function_name,
                            "input": action.input_, "scheduledAt": _iso(now)}
                    doc["work"].append(item)
                    activities.append(item)
                else:
                    raise UnsupportedAction(f"{type(action).__name__} is not supported by the stand-in Durable "
                                            "extension (tests/support/durable.py)")
        return activities, timers

    @staticmethod
    def _timer(doc: dict[str, Any], key: int, fire_at: datetime, now: datetime) -> datetime:
        fire_at = fire_at if fire_at.tzinfo else fire_at.replace(tzinfo=UTC)
        doc["history"].append(event(E.TIMER_CREATED, now, key, FireAt=_iso(fire_at)))
        fired = event(E.TIMER_FIRED, fire_at, TimerId=key, FireAt=_iso(fire_at))
        doc["inbox"].append(_message(fired, fire_at, doc["executionId"]))
        return fire_at

    def _fail(self, doc: dict[str, Any], ep: Episode, now: datetime, state: Mapping[str, Any]) -> Episode:
        if "customStatus" in state:
            doc["customStatus"] = state["customStatus"]
        output = f"Orchestrator function '{doc['name']}' failed: {ep.error}"
        doc["history"] += [event(E.EXECUTION_COMPLETED, now, OrchestrationStatus=FAILED, Result=json.dumps(output)),
                           event(E.ORCHESTRATOR_COMPLETED, now)]
        self._finish(doc, FAILED, output)
        ep.outcome = FAILED
        return ep

    @staticmethod
    def _finish(doc: dict[str, Any], status: str, output: Any) -> None:
        doc["runtimeStatus"], doc["output"] = status, output
        doc["work"], doc["inbox"] = [], []

    @staticmethod
    def _continue_as_new(doc: dict[str, Any], input_json: str | None, now: datetime) -> None:
        """A new execution of the same instance. Messages addressed to the instance that are not in
        this execution's history yet (raised events, a terminate) carry over; the rest is dropped."""
        carried = [m for m in doc["inbox"] if m["executionId"] is None]
        execution = uuid.uuid4().hex
        start = event(E.EXECUTION_STARTED, now, Name=doc["name"], Input=input_json, Version="")
        doc.update(executionId=execution, input=input_json, runtimeStatus=CONTINUED, output=None, history=[],
                   work=[], inbox=[_message(start, now, execution), *carried])


def _message(ev: dict[str, Any], visible_at: datetime, execution: str | None) -> dict[str, Any]:
    return {"visibleAt": _iso(visible_at), "executionId": execution, "event": ev}


# -- in memory, simulated clock (unit tests) ------------------------------------------------------------


class LocalRunner:
    """Runs one orchestration in memory: canned activity responders, a simulated clock.

    Each episode runs at the clock; activities answer at once (their completion is the next
    episode's message); the clock then moves on by ``step``, or to the next due timer if nothing
    else is ready. ``pending_events`` are ``(after n activity calls, name, payload)`` raised once
    that many activities have run. ``failure_types``: exceptions of a responder that become
    TaskFailed (anything else propagates to the test).
    """

    def __init__(self, orchestrator: Callable[..., Any], orch_input: Any,
                 responders: Mapping[str, Callable[[Any], Any]], *, name: str = "orchestrator",
                 instance_id: str = "instance", start: datetime, step: timedelta = timedelta(seconds=1),
                 failure_types: tuple[type[BaseException], ...] = (Exception,)) -> None:
        self.orchestrator = orchestrator
        self.responders = responders
        self.input = orch_input
        self.clock = start
        self.step = step
        self.failure_types = failure_types
        self.engine = ReplayEngine()
        self.doc = self.engine.new_instance(name, instance_id, json.dumps(orch_input), start)
        self.calls: list[tuple[str, Any]] = []
        self.timers: list[datetime] = []
        self.pending_events: list[tuple[int, str, Any]] = []
        self.episodes: list[Episode] = []

    @property
    def history(self) -> list[dict[str, Any]]:
        return self.doc["history"]

    @property
    def replays(self) -> int:
        return self.engine.replays

    def run(self, max_episodes: int = 200) -> dict[str, Any]:
        """Episodes until the orchestration completes or continues as new; its last state."""
        for _ in range(max_episodes):
            ep = self.engine.run_episode(self.doc, self.orchestrator, self.clock)
            if ep is not None:
                self.episodes.append(ep)
                if ep.outcome == FAILED:
                    raise OrchestrationFailed(self.doc["output"])
                if ep.outcome in (COMPLETED, CONTINUED):
                    assert ep.state is not None
                    return ep.state
                self.timers += ep.timers
                for item in ep.activities:
                    self._answer(item)
            self._raise_due_events()
            self.clock += self.step
            due = self.engine.next_due(self.doc)
            if due is None:
                raise AssertionError("the orchestration waits on nothing the runner can answer")
            self.clock = max(self.clock, due)
        raise AssertionError("the orchestration did not finish")

    def _answer(self, item: dict[str, Any]) -> None:
        payload = json.loads(item["input"]) if item["input"] is not None else None
        self.calls.append((item["name"], payload))
        try:
            result = self.responders[item["name"]](payload)
        except self.failure_types as exc:
            self.engine.complete_activity(self.doc, item, self.clock, failure=activity_failure(item["name"], exc))
            return
        self.engine.complete_activity(self.doc, item, self.clock, result_json=json.dumps(result))

    def _raise_due_events(self) -> None:
        for pending in list(self.pending_events):
            after, name, payload = pending
            if len(self.calls) >= after:
                self.engine.raise_event(self.doc, name, json.dumps(payload), self.clock)
                self.pending_events.remove(pending)

    def called(self, name: str) -> list[Any]:
        return [p for n, p in self.calls if n == name]


# -- Azure Storage backed (the host) ---------------------------------------------------------------------


class Conflict(Exception):
    """The instance blob changed since it was read (ETag condition failed)."""


class BlobInstanceStore:
    """One JSON blob per instance: container ``<taskhub>-durable``, blob ``instances/<id>.json``."""

    def __init__(self, connection_string: str, task_hub: str) -> None:
        from azure.storage.blob import BlobServiceClient

        self.task_hub = task_hub
        self.service = BlobServiceClient.from_connection_string(connection_string)
        self.container = self.service.get_container_client(f"{task_hub.lower()}-durable")
        try:
            self.container.create_container()
        except Exception as exc:  # already there
            if getattr(exc, "status_code", None) != 409:
                raise

    @staticmethod
    def _blob(instance_id: str) -> str:
        return f"instances/{quote(instance_id, safe='')}.json"

    def read(self, instance_id: str) -> tuple[dict[str, Any] | None, str | None]:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            downloader = self.container.download_blob(self._blob(instance_id))
        except ResourceNotFoundError:
            return None, None
        return json.loads(downloader.readall()), downloader.properties.etag

    def write(self, doc: Mapping[str, Any], etag: str | None) -> str:
        """Create (``etag`` None: only if absent) or replace (only if unchanged since read)."""
        from azure.core import MatchConditions
        from azure.core.exceptions import HttpResponseError

        data = json.dumps(doc).encode()
        blob = self.container.get_blob_client(self._blob(doc["instanceId"]))
        try:
            if etag is None:
                props = blob.upload_blob(data, overwrite=False)
            else:
                props = blob.upload_blob(data, overwrite=True, etag=etag, match_condition=MatchConditions.IfNotModified)
        except HttpResponseError as exc:
            if exc.status_code in (409, 412):
                raise Conflict(doc["instanceId"]) from exc
            raise
        return str(props["etag"])

    def delete(self, instance_id: str, etag: str) -> None:
        from azure.core import MatchConditions
        from azure.core.exceptions import HttpResponseError

        try:
            self.container.delete_blob(self._blob(instance_id), etag=etag,
                                       match_condition=MatchConditions.IfNotModified)
        except HttpResponseError as exc:
            if exc.status_code in (404, 409, 412):
                raise Conflict(instance_id) from exc
            raise

    def list(self) -> list[tuple[str, str]]:
        """(instance id, etag) of every instance."""
        return [(unquote(b.name[len("instances/"):-len(".json")]), str(b.etag))
                for b in self.container.list_blobs(name_starts_with="instances/")]

    def update(self, instance_id: str, change: Callable[[dict[str, Any]], bool],
               attempts: int = 20) -> dict[str, Any] | None:
        """Read-modify-write under the ETag; ``change`` returns False for "nothing to write".
        Returns the document as written (or read, when unchanged); None if there is no instance."""
        for _ in range(attempts):
            doc, etag = self.read(instance_id)
            if doc is None:
                return None
            if not change(doc):
                return doc
            try:
                self.write(doc, etag)
                return doc
            except Conflict:
                continue
        raise Conflict(f"{instance_id}: too many concurrent updates")


@dataclass(frozen=True)
class OrchestratorFunction:
    fn: Callable[..., Any]  # the generator function (Orchestrator.create's handle unwrapped)
    input_type: type | None = None


class DurableWorker:
    """Drives every instance of the task hub: episodes, activities, due timers.

    ``activities`` maps a name to ``run(input_json) -> result_json`` (raising on failure). One thread
    polls the store (woken at once by the API and by activity completions); activities run on
    ``activity_threads`` daemon threads. All state is in the store: the worker keeps only caches.
    """

    def __init__(self, store: BlobInstanceStore, orchestrators: Mapping[str, OrchestratorFunction],
                 activities: Mapping[str, Callable[[str | None], str | None]], *, poll_interval: float = 0.25,
                 activity_threads: int = 4) -> None:
        import queue

        self.store = store
        self.orchestrators = orchestrators
        self.activities = activities
        self.poll_interval = poll_interval
        self.engine = ReplayEngine()
        self.wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._inflight: set[tuple[str, str, int]] = set()
        self._done: set[tuple[str, str, int]] = set()
        self._seen: dict[str, tuple[str, datetime | None, bool]] = {}  # id -> (etag, next due, idle)
        self._jobs: queue.Queue[tuple[str, dict[str, Any]] | None] = queue.Queue()
        self._threads = [threading.Thread(target=self._loop, name="durable-orchestrations", daemon=True)]
        self._threads += [threading.Thread(target=self._activity_loop, name=f"durable-activity-{i}", daemon=True)
                          for i in range(activity_threads)]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        self.wake.set()
        for _ in self._threads:
            self._jobs.put(None)

    # -- orchestration thread ----------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                due = self.tick()
            except Exception:
                log.exception("durable worker tick failed")
                due = None
            timeout = self.poll_interval
            if due is not None:
                timeout = max(0.0, min(timeout, (due - utcnow()).total_seconds()))
            self.wake.wait(timeout)
            self.wake.clear()

    def tick(self) -> datetime | None:
        """One pass over the task hub; returns the earliest due time seen."""
        earliest: datetime | None = None
        now = utcnow()
        for instance_id, etag in self.store.list():
            seen = self._seen.get(instance_id)
            if seen is not None and seen[0] == etag and seen[2] and (seen[1] is None or seen[1] > now):
                if seen[1] is not None:
                    earliest = seen[1] if earliest is None else min(earliest, seen[1])
                continue
            due = self._process(instance_id)
            if due is not None:
                earliest = due if earliest is None else min(earliest, due)
        return earliest

    def _process(self, instance_id: str) -> datetime | None:
        doc, etag = self.store.read(instance_id)
        if doc is None or etag is None:
            self._seen.pop(instance_id, None)
            return None
        self._dispatch(instance_id, doc["work"])  # work persisted earlier (e.g. by a killed process)
        while True:
            now = utcnow()
            orch = self.orchestrators.get(doc["name"])
            ep = self.engine.run_episode(doc, orch.fn if orch else None, now,
                                         input_type=orch.input_type if orch else None)
            if ep is None:
                break
            try:
                etag = self.store.write(doc, etag)  # persist before acting on the episode
            except Conflict:
                self._seen.pop(instance_id, None)
                self.wake.set()
                return None
            log.info("instance %s: episode -> %s%s", instance_id, ep.outcome,
                     f" ({ep.error})" if ep.error else "")
            self._dispatch(instance_id, ep.activities)
        due = self.engine.next_due(doc)
        idle = all(self._key(instance_id, w) in self._inflight for w in doc["work"])
        self._seen[instance_id] = (etag, due, idle)
        return due

    @staticmethod
    def _key(instance_id: str, item: Mapping[str, Any]) -> tuple[str, str, int]:
        return instance_id, item["executionId"], item["taskId"]

    def _dispatch(self, instance_id: str, items: Iterable[dict[str, Any]]) -> None:
        with self._lock:
            for item in items:
                key = self._key(instance_id, item)
                if key in self._inflight or key in self._done:
                    continue
                self._inflight.add(key)
                self._jobs.put((instance_id, item))

    # -- activity threads ----------------------------------------------------------------------------------

    def _activity_loop(self) -> None:
        while not self._stop.is_set():
            job = self._jobs.get()
            if job is None:
                return
            instance_id, item = job
            try:
                self._run_activity(instance_id, item)
            except Exception:
                log.exception("activity %s of %s: could not record its completion", item["name"], instance_id)
                with self._lock:
                    self._inflight.discard(self._key(instance_id, item))
            self.wake.set()

    def _run_activity(self, instance_id: str, item: dict[str, Any]) -> None:
        name = item["name"]
        result_json: str | None = None
        failure: tuple[str, str] | None = None
        run = self.activities.get(name)
        try:
            if run is None:
                raise LookupError(f"Activity function '{name}' does not exist.")
            result_json = run(item["input"])
        except Exception as exc:
            failure = activity_failure(name, exc)
            log.info("activity %s of %s failed: %s", name, instance_id, failure[0])
        self.store.update(instance_id, lambda doc: self.engine.complete_activity(
            doc, item, utcnow(), result_json=result_json, failure=failure))
        key = self._key(instance_id, item)
        with self._lock:
            self._inflight.discard(key)
            self._done.add(key)


def _dotnet_time(text: str | None) -> str | None:
    """The extension's timestamps: seconds precision, 'Z'."""
    return _parse(text).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if text else None


def _unwrap_json_body(body: bytes) -> str | None:
    """The Python client posts ``json.dumps(value)`` as a JSON string: the value's JSON text."""
    if not body.strip():
        return None
    parsed = json.loads(body)
    if isinstance(parsed, str):
        try:
            return json.dumps(json.loads(parsed))
        except ValueError:
            return json.dumps(parsed)
    return json.dumps(parsed)


class DurableApi:
    """The extension's HTTP API (the ``rpcBaseUrl`` of the client binding, which is also the public
    ``/runtime/webhooks/durabletask/`` webhook), with the status codes the Python client expects:

    * ``POST orchestrators/{name}[/{id}]`` -> 202 + management links; 400 ``{"ExceptionMessage"}`` for
      an unknown orchestrator; an existing id is replaced by a new instance (the default
      ``overridableExistingInstanceStates: AnyState``);
    * ``GET instances/{id}`` -> 200 (Completed, Failed, Terminated) or 202 (Pending, Running,
      ContinuedAsNew) with the status JSON; 404 empty body for an unknown id; ``GET instances/`` lists;
    * ``POST instances/{id}/raiseEvent/{name}`` -> 202; 404 unknown; 410 finished; 400 not JSON;
    * ``POST instances/{id}/terminate?reason=`` -> 202; 404 unknown; 410 finished;
    * ``DELETE instances/{id}`` (purge) -> 200 ``{"instancesDeleted": 1}``; 404; 412 not finished.
    """

    def __init__(self, store: BlobInstanceStore, worker: DurableWorker, base_url: str) -> None:
        self.store = store
        self.worker = worker
        self.base_url = base_url.rstrip("/") + "/"  # ends with /runtime/webhooks/durabletask/
        self.engine = worker.engine

    def binding(self, task_hub: str | None = None, connection: str = "Storage") -> str:
        """The durable client binding's JSON, as the host hands it to the worker."""
        hub = task_hub or self.store.task_hub
        query = f"taskHub={quote(hub)}&connection={quote(connection)}"
        instance = f"{self.base_url}instances/INSTANCEID"
        return json.dumps({
            "taskHubName": hub,
            "creationUrls": {
                "createNewInstancePostUri": f"{self.base_url}orchestrators/{{functionName}}[/{{instanceId}}]?{query}",
                "createAndWaitOnNewInstancePostUri": f"{self.base_url}orchestrators/{{functionName}}[/{{instanceId}}]"
                                                     f"?timeout={{timeoutInSeconds}}&pollingInterval="
                                                     f"{{intervalInSeconds}}&{query}"},
            "managementUrls": self._links("INSTANCEID", query, instance),
            "baseUrl": self.base_url.rstrip("/"), "requiredQueryStringParameters": query,
            "rpcBaseUrl": self.base_url, "httpBaseUrl": "", "maxGrpcMessageSizeInBytes": 0,
            "grpcHttpClientTimeout": "00:01:40",
        })

    @staticmethod
    def _links(instance_id: str, query: str, instance: str) -> dict[str, str]:
        return {
            "id": instance_id,
            "statusQueryGetUri": f"{instance}?{query}",
            "sendEventPostUri": f"{instance}/raiseEvent/{{eventName}}?{query}",
            "terminatePostUri": f"{instance}/terminate?reason={{text}}&{query}",
            "rewindPostUri": f"{instance}/rewind?reason={{text}}&{query}",
            "purgeHistoryDeleteUri": f"{instance}?{query}",
            "restartPostUri": f"{instance}/restart?{query}",
            "suspendPostUri": f"{instance}/suspend?reason={{text}}&{query}",
            "resumePostUri": f"{instance}/resume?reason={{text}}&{query}",
        }

    # -- dispatch --------------------------------------------------------------------------------------

    def handle(self, method: str, path: str, query: Mapping[str, str], headers: Mapping[str, str],
               body: bytes) -> tuple[int, dict[str, str], bytes]:
        """``path``: the part after the base URL, e.g. ``instances/abc/terminate``."""
        parts = [unquote(p) for p in path.strip("/").split("/")] if path.strip("/") else []
        try:
            if len(parts) in (2, 3) and parts[0] == "orchestrators" and method == "POST":
                return self._start(parts[1], parts[2] if len(parts) == 3 else None, body)
            if parts[:1] == ["instances"]:
                if len(parts) == 1 and method == "GET":
                    return self._list(query)
                if len(parts) == 2 and method == "GET":
                    return self._status(parts[1], query)
                if len(parts) == 2 and method == "DELETE":
                    return self._purge(parts[1])
                if len(parts) == 4 and parts[2] == "raiseEvent" and method == "POST":
                    return self._raise(parts[1], parts[3], headers, body)
                if len(parts) == 3 and parts[2] == "terminate" and method == "POST":
                    return self._terminate(parts[1], query.get("reason", ""))
            return 404, {}, b""
        except ValueError as exc:
            return _json(400, {"Message": "Invalid JSON content", "ExceptionMessage": str(exc)})

    def _start(self, name: str, instance_id: str | None, body: bytes) -> tuple[int, dict[str, str], bytes]:
        if name not in self.worker.orchestrators:
            message = (f"The function '{name}' doesn't exist, is disabled, or is not an orchestrator function. "
                       f"Additional info: the app's orchestrator functions are: {sorted(self.worker.orchestrators)}")
            return _json(400, {"Message": "One or more of the arguments submitted is incorrect",
                               "ExceptionMessage": message})
        instance_id = instance_id or uuid.uuid4().hex
        input_json = _unwrap_json_body(body)
        doc = self.engine.new_instance(name, instance_id, input_json, utcnow())
        for _ in range(20):
            _, etag = self.store.read(instance_id)
            try:
                self.store.write(doc, etag)
                break
            except Conflict:
                continue
        else:
            raise Conflict(instance_id)
        self.worker.wake.set()
        query = f"taskHub={quote(self.store.task_hub)}&connection=Storage"
        links = self._links(instance_id, query, f"{self.base_url}instances/{quote(instance_id, safe='')}")
        return _json(202, links, {"Location": links["statusQueryGetUri"]})

    @staticmethod
    def status_json(doc: Mapping[str, Any], *, show_input: bool = True, show_history: bool = False) -> dict[str, Any]:
        body: dict[str, Any] = {
            "name": doc["name"], "instanceId": doc["instanceId"], "runtimeStatus": doc["runtimeStatus"],
            "input": json.loads(doc["input"]) if show_input and doc["input"] is not None else None,
            "customStatus": doc["customStatus"], "output": doc["output"],
            "createdTime": _dotnet_time(doc["createdTime"]), "lastUpdatedTime": _dotnet_time(doc["lastUpdatedTime"]),
        }
        if show_history:
            body["historyEvents"] = doc["history"]
        return body

    def _status(self, instance_id: str, query: Mapping[str, str]) -> tuple[int, dict[str, str], bytes]:
        doc, _ = self.store.read(instance_id)
        if doc is None:
            return 404, {}, b""
        body = self.status_json(doc, show_input=query.get("showInput", "true").lower() != "false",
                                show_history=query.get("showHistory", "false").lower() == "true")
        if doc["runtimeStatus"] in (PENDING, RUNNING, CONTINUED, "Suspended"):
            return _json(202, body, {"Location": f"{self.base_url}instances/{quote(instance_id, safe='')}",
                                     "Retry-After": "5"})
        failed_500 = query.get("returnInternalServerErrorOnFailure", "false").lower() == "true"
        return _json(500 if doc["runtimeStatus"] == FAILED and failed_500 else 200, body)

    def _list(self, query: Mapping[str, str]) -> tuple[int, dict[str, str], bytes]:
        statuses = {s for s in query.get("runtimeStatus", "").split(",") if s}
        prefix = query.get("instanceIdPrefix", "")
        out = []
        for instance_id, _ in self.store.list():
            if not instance_id.startswith(prefix):
                continue
            doc, _ = self.store.read(instance_id)
            if doc is not None and (not statuses or doc["runtimeStatus"] in statuses):
                out.append(self.status_json(doc, show_input=query.get("showInput", "false").lower() == "true"))
        return _json(200, out)

    def _raise(self, instance_id: str, name: str, headers: Mapping[str, str],
               body: bytes) -> tuple[int, dict[str, str], bytes]:
        doc, _ = self.store.read(instance_id)
        if doc is None:
            return 404, {}, b""
        if doc["runtimeStatus"] in TERMINAL:
            return 410, {}, b""
        media = headers.get("content-type", "").split(";")[0].strip().lower()
        if media != "application/json":
            return _json(400, {"Message": "Only application/json request content is supported"})
        data = _unwrap_json_body(body) or "null"
        outcome: list[int] = []

        def change(d: dict[str, Any]) -> bool:
            if d["runtimeStatus"] in TERMINAL:
                outcome.append(410)
                return False
            self.engine.raise_event(d, name, data, utcnow())
            return True

        if self.store.update(instance_id, change) is None:
            return 404, {}, b""
        self.worker.wake.set()
        return (outcome[0] if outcome else 202), {}, b""

    def _terminate(self, instance_id: str, reason: str) -> tuple[int, dict[str, str], bytes]:
        outcome: list[int] = []

        def change(d: dict[str, Any]) -> bool:
            if d["runtimeStatus"] in TERMINAL:
                outcome.append(410)
                return False
            self.engine.terminate(d, reason, utcnow())
            return True

        if self.store.update(instance_id, change) is None:
            return 404, {}, b""
        self.worker.wake.set()
        return (outcome[0] if outcome else 202), {}, b""

    def _purge(self, instance_id: str) -> tuple[int, dict[str, str], bytes]:
        doc, etag = self.store.read(instance_id)
        if doc is None or etag is None:
            return 404, {}, b""
        if doc["runtimeStatus"] not in TERMINAL:
            return _json(412, {"Message": f"Only orchestrations in a terminal state can be purged, but the "
                                          f"orchestration with instance ID {instance_id} has status "
                                          f"{doc['runtimeStatus']}"})
        self.store.delete(instance_id, etag)
        return _json(200, {"instancesDeleted": 1})


def _json(status: int, body: Any, headers: Mapping[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    return status, {"Content-Type": "application/json; charset=utf-8", **(headers or {})}, json.dumps(body).encode()
