"""The stand-in Durable extension's replay engine (tests/support/durable.py) on toy orchestrators."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import azure.durable_functions as df
import pytest

from tests.support.durable import (
    CONTINUED,
    FAILED,
    PENDING,
    RUNNING,
    TERMINATED,
    LocalRunner,
    OrchestrationFailed,
    ReplayEngine,
)

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def generations(context: df.DurableOrchestrationContext):  # type: ignore[no-untyped-def]
    n = context.get_input()
    yield context.call_activity("step", n)
    if n == 0:
        context.continue_as_new(1)
        return None
    return (yield context.wait_for_external_event("e"))


def test_an_event_raised_between_executions_reaches_the_new_one():
    engine = ReplayEngine()
    doc = engine.new_instance("generations", "g", "0", T0)
    assert doc["runtimeStatus"] == PENDING
    (item,) = engine.run_episode(doc, generations, T0).activities
    assert doc["runtimeStatus"] == RUNNING
    engine.complete_activity(doc, item, T0, result_json="null")
    first_execution = doc["executionId"]
    assert engine.run_episode(doc, generations, T0 + timedelta(seconds=1)).outcome == CONTINUED
    assert doc["runtimeStatus"] == CONTINUED and doc["history"] == []
    engine.raise_event(doc, "e", json.dumps({"late": True}), T0 + timedelta(seconds=2))  # status ContinuedAsNew
    ep = engine.run_episode(doc, generations, T0 + timedelta(seconds=3))
    assert doc["executionId"] != first_execution and doc["input"] == "1"
    engine.complete_activity(doc, ep.activities[0], T0 + timedelta(seconds=3), result_json="null")
    done = engine.run_episode(doc, generations, T0 + timedelta(seconds=4))
    assert done.outcome == "Completed" and doc["output"] == {"late": True}


def waits(context: df.DurableOrchestrationContext):  # type: ignore[no-untyped-def]
    event = context.wait_for_external_event("e")
    timer = context.create_timer(context.current_utc_datetime + timedelta(hours=1))
    yield context.call_activity("step", None)
    winner = yield context.task_any([event, timer])
    return "event" if winner == event else "timer"


def test_open_tasks_are_scheduled_once_across_episodes():
    engine = ReplayEngine()
    doc = engine.new_instance("waits", "w", None, T0)
    ep = engine.run_episode(doc, waits, T0)
    assert [a["name"] for a in ep.activities] == ["step"] and ep.timers == []  # a task is scheduled when yielded
    engine.complete_activity(doc, ep.activities[0], T0, result_json="null")
    ep = engine.run_episode(doc, waits, T0 + timedelta(seconds=1))
    assert ep.activities == [] and ep.timers == [T0 + timedelta(hours=1)]
    engine.raise_event(doc, "other", "1", T0 + timedelta(seconds=2))  # an episode that changes nothing
    ep = engine.run_episode(doc, waits, T0 + timedelta(seconds=2))
    assert ep.outcome == RUNNING and ep.activities == [] and ep.timers == []  # not scheduled again
    assert sum(e["EventType"] == 10 for e in doc["history"]) == 1  # one TimerCreated
    engine.raise_event(doc, "e", "1", T0 + timedelta(seconds=3))
    assert engine.run_episode(doc, waits, T0 + timedelta(seconds=3)).outcome == "Completed"
    assert doc["output"] == "event"
    assert engine.run_episode(doc, waits, T0 + timedelta(hours=2)) is None  # finished: the timer is dropped


def test_terminate_drops_outstanding_work_and_late_completions():
    engine = ReplayEngine()
    doc = engine.new_instance("waits", "w", None, T0)
    (item,) = engine.run_episode(doc, waits, T0).activities
    engine.terminate(doc, "stop it", T0)
    assert engine.run_episode(doc, waits, T0 + timedelta(seconds=1)).outcome == TERMINATED
    assert (doc["runtimeStatus"], doc["output"], doc["work"], doc["inbox"]) == (TERMINATED, "stop it", [], [])
    assert not engine.complete_activity(doc, item, T0 + timedelta(seconds=2), result_json="null")


def sub_orchestration(context: df.DurableOrchestrationContext):  # type: ignore[no-untyped-def]
    return (yield context.call_sub_orchestrator("child", None))


def test_an_unsupported_api_fails_the_orchestration_saying_so():
    engine = ReplayEngine()
    doc = engine.new_instance("parent", "p", None, T0)
    ep = engine.run_episode(doc, sub_orchestration, T0)
    assert ep.outcome == FAILED and doc["runtimeStatus"] == FAILED
    assert "CallSubOrchestratorAction is not supported" in doc["output"]


def test_the_local_runner_reports_a_failed_orchestration():
    def broken(context: df.DurableOrchestrationContext):  # type: ignore[no-untyped-def]
        yield context.call_activity("step", None)
        raise RuntimeError("no luck")

    runner = LocalRunner(broken, None, {"step": lambda _: None}, start=T0)
    with pytest.raises(OrchestrationFailed, match="no luck"):
        runner.run()
