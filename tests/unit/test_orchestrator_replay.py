"""The retraining orchestrator, replayed by the durable library's own executor from built histories.

``Extension`` plays the Durable extension's part with the shared replay engine
(:class:`tests.support.durable.LocalRunner`, the engine the stand-in Functions host also uses): it
runs the orchestrator on the history so far (``Orchestrator.handle``, the real replay machinery),
reads which tasks the orchestrator now waits on, answers them by appending history events
(TaskScheduled/Completed/Failed, TimerCreated/Fired, EventRaised) on a simulated clock, and replays
again, until the orchestration completes or continues as new. Every step is therefore a full replay
from the start, as in production: a non-deterministic orchestrator would fail here.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from functions.github_dispatch.orchestrator import orchestrator_input, retrain_orchestrator
from shared.core import orchestration as o
from tests.support.durable import LocalRunner

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
RETRY_FIRST_S = 5


class ActivityFailed(Exception):
    pass


class Extension(LocalRunner):
    """The retraining orchestration on the shared replay engine (tests/support/durable.py)."""

    def __init__(self, responders: dict[str, Callable[[dict[str, Any]], Any]], orch_input: dict[str, Any]) -> None:
        super().__init__(retrain_orchestrator, orch_input, responders, name="retrain_orchestrator",
                         instance_id="retrain-m", start=T0, failure_types=(ActivityFailed,))


def _continued(state: dict[str, Any]) -> bool:
    return any(a.get("actionType") == 4 for group in state.get("actions", []) for a in group)  # ContinueAsNew


def plan(**overrides: Any) -> o.Plan:
    base = {"model_name": "m", "metric": "accuracy", "tolerance": 0.01, "training_timeout_s": 3600,
            "deploy_timeout_s": 600, "poll_initial_s": 60, "poll_max_s": 240, "poll_factor": 2.0}
    return o.Plan(**{**base, **overrides})


def responders(*, run_statuses: list[dict[str, Any]] | None = None, candidate: dict[str, Any] | None = None,
               deploy_states: list[str] | None = None) -> dict[str, Callable[[dict[str, Any]], Any]]:
    statuses = list(run_statuses or [{"status": "in_progress"}, {"status": "in_progress"},
                                     {"status": "completed", "conclusion": "success"}])
    states = list(deploy_states or ["Updating", "Succeeded"])
    found = candidate if candidate is not None else {"version": "7", "metric": 0.91, "baseline_metric": 0.88}

    def prepare(p: dict[str, Any]) -> dict[str, Any]:
        return {"correlation_id": p["correlation_id"], "labels": 120, "class_names": ["a", "b"],
                "serving_version": "6", "serving_metrics": {"accuracy": 0.88}, "data_asset": "azureml:m-manifest:x"}

    def pop(values: list[Any]) -> Any:
        return values.pop(0) if len(values) > 1 else values[0]

    return {
        o.PREPARE: prepare,
        o.START_TRAINING: lambda p: {"run_id": 4242, "url": "https://example.invalid/runs/4242"},
        o.RUN_STATUS: lambda p: pop(statuses),
        o.CANCEL_RUN: lambda p: None,
        o.FIND_CANDIDATE: lambda p: found,
        o.START_DEPLOY: lambda p: None,
        o.DEPLOY_STATUS: lambda p: {"state": pop(states), "detail": "blue"},
        o.RECORD: lambda p: None,
    }


def extension(rsp: dict[str, Any], **plan_overrides: Any) -> Extension:
    return Extension(rsp, orchestrator_input(plan(**plan_overrides), retry_attempts=3, retry_first_s=RETRY_FIRST_S,
                                             request={"reason": "first"}))


def test_success_trains_gates_deploys_and_records():
    ext = extension(responders())
    state = ext.run()
    out = state["output"]
    assert state["isDone"] and out["outcome"] == "deployed"
    assert out["candidate_version"] == "7" and out["run_id"] == "4242" and out["labels"] == 120
    assert [n for n, _ in ext.calls] == [o.PREPARE, o.START_TRAINING, o.RUN_STATUS, o.RUN_STATUS, o.RUN_STATUS,
                                         o.FIND_CANDIDATE, o.START_DEPLOY, o.DEPLOY_STATUS, o.DEPLOY_STATUS,
                                         o.RECORD]
    cid = ext.called(o.PREPARE)[0]["correlation_id"]
    assert len(cid) == 32 and ext.called(o.FIND_CANDIDATE)[0]["correlation_id"] == cid
    assert ext.called(o.START_DEPLOY) == [{"model_name": "m", "version": "7"}]
    assert ext.called(o.RECORD)[0]["result"]["outcome"] == "deployed"
    assert state["customStatus"]["outcome"] == "deployed"


def test_polling_interval_grows_and_is_capped():
    statuses = [{"status": "queued"}] + [{"status": "in_progress"}] * 4 + [{"status": "completed",
                                                                           "conclusion": "success"}]
    ext = extension(responders(run_statuses=statuses, deploy_states=["Succeeded"]))
    ext.run()
    gaps = []
    previous = None
    for t in ext.timers:
        if previous is not None:
            gaps.append((t - previous).total_seconds())
        previous = t
    # waits of 60, 120, then 240 s (the cap), counted from each wake-up
    assert ext.timers[0] == T0 + timedelta(seconds=60)
    assert gaps[:4] == [120, 240, 240, 240]  # (the last timer is the end-of-run look for new requests)
    assert len(ext.called(o.RUN_STATUS)) == 6


@pytest.mark.parametrize("conclusion", ["failure", "cancelled", "timed_out", "startup_failure", "action_required",
                                        "something_new"])
def test_a_run_that_does_not_succeed_deploys_nothing(conclusion):
    ext = extension(responders(run_statuses=[{"status": "completed", "conclusion": conclusion}]))
    out = ext.run()["output"]
    assert out["outcome"] == "failed" and conclusion in out["reason"]
    assert not ext.called(o.FIND_CANDIDATE) and not ext.called(o.START_DEPLOY)
    recorded = ext.called(o.RECORD)[0]["result"]
    assert recorded["outcome"] == "failed" and recorded["candidate_version"] is None


def test_timeout_cancels_the_run_and_deploys_nothing():
    ext = extension(responders(run_statuses=[{"status": "in_progress"}]), training_timeout_s=300)
    out = ext.run()["output"]
    assert out["outcome"] == "timed_out" and "300" in out["reason"]
    assert ext.called(o.CANCEL_RUN) == [{"run_id": "4242"}]
    assert not ext.called(o.START_DEPLOY)
    # polls at +60, +180, then the deadline itself (+300, not +420)
    assert ext.timers[:3] == [T0 + timedelta(seconds=s) for s in (60, 180, 300)]


def test_gate_rejection_records_a_rejected_candidate_and_deploys_nothing():
    ext = extension(responders(candidate={"version": "7", "metric": 0.80, "baseline_metric": 0.88}))
    out = ext.run()["output"]
    assert out["outcome"] == "rejected" and "0.8000 < serving 0.8800" in out["reason"]
    assert not ext.called(o.START_DEPLOY)
    assert ext.called(o.RECORD)[0]["result"]["candidate_version"] == "7"


def test_gate_falls_back_to_the_serving_metric_and_honours_the_tolerance():
    ext = extension(responders(candidate={"version": "7", "metric": 0.875}))  # serving 0.88, tolerance 0.01
    assert ext.run()["output"]["outcome"] == "deployed"


def test_no_model_tagged_with_the_correlation_id_is_a_failure():
    rsp = responders()
    rsp[o.FIND_CANDIDATE] = lambda p: None
    ext = extension(rsp)
    out = ext.run()["output"]
    assert out["outcome"] == "failed" and "no model version is tagged" in out["reason"]
    assert not ext.called(o.START_DEPLOY)


def test_an_activity_failing_once_is_retried():
    attempts = []

    def flaky_status(p: dict[str, Any]) -> dict[str, Any]:
        attempts.append(p)
        if len(attempts) == 1:
            raise ActivityFailed("GitHub answered 502")
        return {"status": "completed", "conclusion": "success"}

    rsp = responders()
    rsp[o.RUN_STATUS] = flaky_status
    ext = extension(rsp)
    assert ext.run()["output"]["outcome"] == "deployed"
    assert len(attempts) == 2 and ext.timers[0] == T0 + timedelta(seconds=3 + RETRY_FIRST_S)


def test_an_activity_failing_every_retry_fails_the_retraining_with_its_reason():
    def broken(p: dict[str, Any]) -> Any:
        raise ActivityFailed("GitHub refused POST .../dispatches: Unexpected inputs provided: [\"x\"]")

    rsp = responders()
    rsp[o.START_TRAINING] = broken
    ext = extension(rsp)
    out = ext.run()["output"]
    assert len(ext.called(o.START_TRAINING)) == 3  # the retry policy's attempts
    assert out["outcome"] == "failed" and "retrain_start_training" in out["reason"]
    assert "Unexpected inputs" in out["reason"] and "stack trace" not in out["reason"]
    assert not ext.called(o.RUN_STATUS) and ext.called(o.RECORD)


def test_a_failed_deployment_is_recorded_as_failed():
    ext = extension(responders(deploy_states=["Updating", "Failed"]))
    out = ext.run()["output"]
    assert out["outcome"] == "failed" and "Failed" in out["reason"]


def test_a_request_arriving_mid_run_is_coalesced_into_the_next_run():
    ext = extension(responders())
    ext.pending_events.append((3, o.RETRAIN_REQUESTED_EVENT, {"reason": "second", "model_name": None}))
    state = ext.run()
    assert _continued(state)
    (cont,) = [a for group in state["actions"] for a in group if a.get("actionType") == 4]
    new_input = json.loads(cont["input"])
    assert new_input["request"]["reason"] == "second"
    assert new_input["previous"]["outcome"] == "deployed"
    assert new_input["plan"] == ext.input["plan"]


def test_without_a_new_request_the_orchestration_completes():
    state = extension(responders()).run()
    assert state["isDone"] and not _continued(state)


def test_logs_only_when_not_replaying(caplog):
    ext = extension(responders())
    with caplog.at_level(logging.INFO, logger="functions.github_dispatch.orchestrator"):
        ext.run()
    done = [r for r in caplog.records if "deployed" in r.getMessage()]
    assert ext.replays > 5 and len(done) == 1


def test_poll_delay_and_next_wake_are_pure():
    p = plan()
    assert [o.poll_delay(i, p).total_seconds() for i in range(5)] == [60, 120, 240, 240, 240]
    assert o.next_wake(T0, 3, T0 + timedelta(seconds=100), p) == T0 + timedelta(seconds=100)
    with pytest.raises(ValueError):
        o.Plan("m", poll_initial_s=10, poll_max_s=5)


class _Recorder:
    """Activities for the embedded driver, answering like the responders above."""

    def __init__(self, rsp: dict[str, Callable[[dict[str, Any]], Any]]) -> None:
        self.rsp, self.calls = rsp, []
        from shared.services.retrain import METHODS

        for activity, method in METHODS.items():
            setattr(self, method, self._make(activity))

    def _make(self, activity: str) -> Callable[[dict[str, Any]], Any]:
        def run(payload: dict[str, Any]) -> Any:
            self.calls.append(activity)
            return self.rsp[activity](payload)

        return run


@pytest.mark.parametrize("statuses", [None, [{"status": "completed", "conclusion": "failure"}]])
def test_the_embedded_driver_takes_the_same_steps_as_the_durable_one(statuses):
    from shared.services.retrain import run_inline

    durable = extension(responders(run_statuses=statuses))
    out = durable.run()["output"]
    local = _Recorder(responders(run_statuses=statuses))
    res = run_inline(o.retrain_steps(plan(), "cid", T0), local, T0)
    assert local.calls == [n for n, _ in durable.calls]
    assert (str(res.outcome), res.reason) == (out["outcome"], out["reason"])


def test_the_embedded_driver_turns_an_activity_error_into_a_failed_outcome():
    from shared.services.retrain import run_inline

    rsp = responders()
    rsp[o.PREPARE] = lambda p: (_ for _ in ()).throw(RuntimeError("there are no labels to train on"))
    local = _Recorder(rsp)
    res = run_inline(o.retrain_steps(plan(), "cid", T0), local, T0)
    assert res.outcome is o.Outcome.FAILED and "no labels" in res.reason
    assert local.calls == [o.PREPARE, o.RECORD]
