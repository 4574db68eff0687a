"""retrain: train from the serving checkpoint on every label, gate against the serving model,
deploy only when the gate passes, and record the outcome either way.

The decisions live in :func:`shared.core.orchestration.retrain_steps`; this module holds the
*activities* it calls, for two backends:

- :class:`EmbeddedActivities`: the in-process trainer and deployer (the simulation, ``al``);
  a training "run" completes as soon as it starts, so the generator walks straight through.
- :class:`AzureActivities`: the manifest as an Azure ML data asset, the GitHub workflow that runs
  the Azure ML training job, the managed online deployment.

:class:`RetrainService` drives the steps in-process (the embedded path); the Durable orchestrator in
``functions/github_dispatch`` drives the very same steps with activities and durable timers.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol
from urllib.parse import urlparse

from shared.core.calibration import CONFIDENCE, TRAIN_ACCURACY
from shared.core.gate import GateDecision
from shared.core.orchestration import (
    CANCEL_RUN,
    DEPLOY_STATUS,
    FIND_CANDIDATE,
    PREPARE,
    RECORD,
    RUN_STATUS,
    START_DEPLOY,
    START_TRAINING,
    Call,
    Command,
    Outcome,
    Plan,
    Result,
    Sleep,
    StepFailed,
    retrain_steps,
)
from shared.core.records import ModelStatus, ModelVersion
from shared.errors import TrainingError
from shared.ports import Deployer, ObjectStore, PredictionStore, Trainer, TrainingManifest

log = logging.getLogger(__name__)

OUTCOMES_CONTAINER = "retrain-outcomes"
MANIFESTS_CONTAINER = "manifests"


@dataclass(frozen=True, slots=True)
class RetrainOutcome:
    candidate: ModelVersion
    decision: GateDecision
    deployed: bool


def build_manifest(
    store: PredictionStore, model_name: str, class_names: tuple[str, ...] | None = None
) -> TrainingManifest:
    """Every label with its item URI, and the class list (the serving model's unless given)."""
    serving = store.serving_version(model_name)
    classes = class_names or (serving.class_names if serving else None)
    if not classes:
        raise TrainingError(f"model {model_name!r} has no serving version; give the class names")
    labels = store.list_labels()
    if not labels:
        raise TrainingError("there are no labels to train on")
    uris = store.selection_uris([lb.item_id for lb in labels])
    missing = [lb.item_id for lb in labels if lb.item_id not in uris]
    if missing:
        raise TrainingError(f"{len(missing)} labeled items have no item URI (e.g. {missing[0]!r})")
    return TrainingManifest(
        item_ids=tuple(lb.item_id for lb in labels),
        item_uris=tuple(uris[lb.item_id] for lb in labels),
        labels=tuple(lb.label for lb in labels),
        class_names=tuple(classes),
    )


def manifest_jsonl(manifest: TrainingManifest, to_url: Callable[[str], str] = str) -> bytes:
    """The manifest as JSON Lines in the Azure ML image classification schema (``image_url``, ``label``)."""
    lines = [json.dumps({"image_url": to_url(uri), "label": label, "item_id": item_id}, ensure_ascii=False)
             for item_id, uri, label in zip(manifest.item_ids, manifest.item_uris, manifest.labels, strict=True)]
    return ("\n".join(lines) + "\n").encode()


def azureml_url(uri: str, datastore: str) -> str:
    """A Blob URL ``https://acct.blob.../<container>/<name>`` as ``azureml://datastores/<ds>/paths/<name>``.

    ``datastore`` is the Azure ML datastore registered on the items container; empty keeps ``uri``.
    A path-style URL of the storage emulator (``http://127.0.0.1:10000/<account>/<container>/<name>``)
    maps the same way.
    """
    parsed = urlparse(uri)
    if not datastore or parsed.scheme not in ("https", "http"):
        return uri
    path_style = parsed.hostname in ("127.0.0.1", "localhost")
    if parsed.scheme == "http" and not path_style:
        return uri
    segments = parsed.path.lstrip("/").split("/", 2 if path_style else 1)
    if len(segments) < (3 if path_style else 2) or not segments[-1]:
        return uri
    return f"azureml://datastores/{datastore}/paths/{segments[-1]}"


class RetrainActivities(Protocol):
    """One method per activity of :func:`retrain_steps`; JSON in, JSON out."""

    def prepare(self, payload: dict[str, Any]) -> dict[str, Any]: ...
    def start_training(self, payload: dict[str, Any]) -> dict[str, Any]: ...
    def run_status(self, payload: dict[str, Any]) -> dict[str, Any]: ...
    def cancel_run(self, payload: dict[str, Any]) -> None: ...
    def find_candidate(self, payload: dict[str, Any]) -> dict[str, Any] | None: ...
    def start_deploy(self, payload: dict[str, Any]) -> None: ...
    def deploy_status(self, payload: dict[str, Any]) -> dict[str, Any]: ...
    def record(self, payload: dict[str, Any]) -> None: ...


METHODS: Mapping[str, str] = {
    PREPARE: "prepare", START_TRAINING: "start_training", RUN_STATUS: "run_status", CANCEL_RUN: "cancel_run",
    FIND_CANDIDATE: "find_candidate", START_DEPLOY: "start_deploy", DEPLOY_STATUS: "deploy_status",
    RECORD: "record",
}


def call_activity(activities: RetrainActivities, name: str, payload: dict[str, Any]) -> Any:
    """Run activity ``name`` on ``activities`` (what a Durable activity function does, too)."""
    return getattr(activities, METHODS[name])(payload)


class _Recording:
    """The steps both backends share: the manifest from the store, the outcome into the store."""

    def __init__(self, store: PredictionStore, *, model_name: str, objects: ObjectStore | None = None) -> None:
        self._store = store
        self._model_name = model_name
        self._objects = objects

    def _prepared(self, manifest: TrainingManifest, correlation_id: str) -> dict[str, Any]:
        serving = self._store.serving_version(self._model_name)
        return {
            "correlation_id": correlation_id,
            "labels": len(manifest.labels),
            "class_names": list(manifest.class_names),
            "serving_version": serving.version if serving else None,
            "serving_metrics": dict(serving.metrics) if serving else {},
        }

    def record(self, payload: dict[str, Any]) -> None:
        """Store the candidate with its final status (serving only when deployed) and the outcome.

        Failed or timed-out runs leave the serving version untouched, so every label stays pending.
        """
        res, prepared = payload["result"], payload.get("prepared") or {}
        version = res.get("candidate_version")
        if version and prepared:
            status = {Outcome.DEPLOYED: ModelStatus.SERVING, Outcome.REJECTED: ModelStatus.REJECTED}.get(
                Outcome(res["outcome"]), ModelStatus.CANDIDATE)
            self._store.upsert_model_version(replace(self._candidate(res, prepared), status=status))
        if self._objects is not None:
            name = f"{self._model_name}/{res['correlation_id']}.json"
            self._objects.put(OUTCOMES_CONTAINER, name, json.dumps(res, indent=1).encode(), overwrite=True)
        log.info("retrain %s: %s (%s)", res["correlation_id"], res["outcome"], res["reason"])

    def _candidate(self, res: dict[str, Any], prepared: dict[str, Any]) -> ModelVersion:
        metrics = {} if res.get("candidate_metric") is None else {prepared.get("metric", "accuracy"):
                                                                  float(res["candidate_metric"])}
        for key, figure in (("candidate_confidence", CONFIDENCE), ("candidate_train_accuracy", TRAIN_ACCURACY)):
            if res.get(key) is not None:
                metrics[figure] = float(res[key])
        return ModelVersion(
            name=self._model_name, version=str(res["candidate_version"]),
            class_names=tuple(prepared["class_names"]), metrics=metrics,
            artifact_uri=f"azureml:{self._model_name}:{res['candidate_version']}",
            created_at=datetime.now(UTC), trained_on_labels=int(prepared["labels"]),
        )


class EmbeddedActivities(_Recording):
    """The activities on the in-process trainer and deployer: a run finishes as it starts."""

    def __init__(
        self, store: PredictionStore, trainer: Trainer, deployer: Deployer, *, model_name: str,
        metric: str = "accuracy", class_names: tuple[str, ...] | None = None, objects: ObjectStore | None = None,
    ) -> None:
        super().__init__(store, model_name=model_name, objects=objects)
        self._trainer = trainer
        self._deployer = deployer
        self._metric = metric
        self._class_names = class_names
        self._manifests: dict[str, TrainingManifest] = {}
        self.candidates: dict[str, tuple[ModelVersion, float, float | None]] = {}

    def prepare(self, payload: dict[str, Any]) -> dict[str, Any]:
        cid = payload["correlation_id"]
        manifest = build_manifest(self._store, self._model_name, self._class_names)
        self._manifests[cid] = manifest
        return {**self._prepared(manifest, cid), "metric": self._metric}

    def start_training(self, payload: dict[str, Any]) -> dict[str, Any]:
        cid = payload["correlation_id"]
        serving = self._store.serving_version(self._model_name)
        trained = self._trainer.train(self._manifests.pop(cid), serving, metric=self._metric)
        self.candidates[cid] = (trained.model, trained.metric, trained.baseline_metric)
        return {"run_id": cid, "url": None}

    def run_status(self, payload: dict[str, Any]) -> dict[str, Any]:
        return {"status": "completed", "conclusion": "success"}

    def cancel_run(self, payload: dict[str, Any]) -> None:
        return None

    def find_candidate(self, payload: dict[str, Any]) -> dict[str, Any] | None:
        found = self.candidates.get(payload["correlation_id"])
        if found is None:
            return None
        model, metric, baseline = found
        return {"version": model.version, "metric": metric, "baseline_metric": baseline,
                "confidence": model.metrics.get(CONFIDENCE), "train_accuracy": model.metrics.get(TRAIN_ACCURACY)}

    def start_deploy(self, payload: dict[str, Any]) -> None:
        model = self._by_version(payload["version"])
        self._store.upsert_model_version(model)
        self._deployer.deploy(model)

    def deploy_status(self, payload: dict[str, Any]) -> dict[str, Any]:
        return {"state": "Succeeded"}

    def _by_version(self, version: str) -> ModelVersion:
        for model, _, _ in self.candidates.values():
            if model.version == version:
                return model
        raise TrainingError(f"no candidate with version {version!r} was trained here")

    def _candidate(self, res: dict[str, Any], prepared: dict[str, Any]) -> ModelVersion:
        return self._by_version(str(res["candidate_version"]))  # keeps its artifact URI and timestamps


class AzureActivities(_Recording):
    """The activities on GitHub (the workflow that runs the Azure ML job) and Azure ML."""

    def __init__(
        self, store: PredictionStore, objects: ObjectStore, github: Any, azureml: Any, *, model_name: str,
        workflow: str, ref: str, metric: str = "accuracy", items_datastore: str = "",
        class_names: tuple[str, ...] | None = None,
    ) -> None:
        super().__init__(store, model_name=model_name, objects=objects)
        self._github = github
        self._aml = azureml
        self._workflow = workflow
        self._ref = ref
        self._metric = metric
        self._datastore = items_datastore
        self._class_names = class_names

    def prepare(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Manifest -> JSON Lines object -> Azure ML data asset ``<model>-manifest:<correlation id>``."""
        cid = payload["correlation_id"]
        manifest = build_manifest(self._store, self._model_name, self._class_names)
        data = manifest_jsonl(manifest, lambda u: azureml_url(u, self._datastore))
        assert self._objects is not None
        uri = self._objects.put(MANIFESTS_CONTAINER, f"{self._model_name}/{cid}.jsonl", data, overwrite=True)
        asset = self._aml.register_manifest(
            name=f"{self._model_name}-manifest", version=cid, uri=uri,
            description=f"{len(manifest.labels)} labels for {self._model_name}", tags={"al_correlation_id": cid})
        return {**self._prepared(manifest, cid), "metric": self._metric, "manifest_uri": uri, "data_asset": asset}

    def start_training(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Dispatch the workflow, once per correlation id. An activity runs at least once: a host that
        dies after the dispatch but before its result is in the history runs it again, so a run
        already named with this correlation id is taken instead of dispatching a second training."""
        prepared = payload["prepared"]
        cid = prepared["correlation_id"]
        since = datetime.now(UTC) - timedelta(days=1)
        run = self._github.find_run(self._workflow, cid, since=since)
        if run is None:
            inputs = workflow_inputs(prepared, model_name=self._model_name, metric=self._metric)
            run = self._github.dispatch_workflow(self._workflow, ref=self._ref, inputs=inputs, correlation_id=cid)
        else:
            log.warning("retrain %s: the workflow run %s was already dispatched; not dispatching again", cid,
                        run.run_id)
        return {"run_id": run.run_id, "url": run.html_url}

    def run_status(self, payload: dict[str, Any]) -> dict[str, Any]:
        run = self._github.get_run(payload["run_id"])
        return {"status": run.status, "conclusion": run.conclusion, "url": run.html_url}

    def cancel_run(self, payload: dict[str, Any]) -> None:
        self._github.cancel_run(payload["run_id"])

    def find_candidate(self, payload: dict[str, Any]) -> dict[str, Any] | None:
        found = self._aml.find_model(self._model_name, payload["correlation_id"], metric=self._metric)
        if found is None:
            return None
        return {"version": found.version, "metric": found.metric, "baseline_metric": found.baseline_metric,
                "confidence": found.confidence, "train_accuracy": found.train_accuracy}

    def start_deploy(self, payload: dict[str, Any]) -> None:
        self._aml.start_deploy(self._model_name, payload["version"])

    def deploy_status(self, payload: dict[str, Any]) -> dict[str, Any]:
        return self._aml.deploy_state(self._model_name, payload["version"])


# The workflow_dispatch inputs, in one place: .github/workflows/train.yml declares exactly these.
WORKFLOW_INPUTS = ("correlation_id", "model_name", "data_asset", "base_model_version", "metric", "class_names")


def workflow_inputs(prepared: dict[str, Any], *, model_name: str, metric: str) -> dict[str, str]:
    """The string inputs the training workflow receives (GitHub inputs are strings)."""
    inputs = {
        "correlation_id": prepared["correlation_id"],
        "model_name": model_name,
        "data_asset": prepared["data_asset"],
        "base_model_version": prepared.get("serving_version") or "",
        "metric": metric,
        "class_names": json.dumps(prepared["class_names"], ensure_ascii=False),
    }
    assert tuple(inputs) == WORKFLOW_INPUTS
    return inputs


def run_inline(
    steps: Generator[Command, Any, Result], activities: RetrainActivities, now: datetime
) -> Result:
    """Drive the steps in-process: activities are method calls, sleeps move a virtual clock.

    An activity's error is thrown into the steps as :class:`StepFailed`, as the Durable driver does.
    """
    value: Any = None
    error: Exception | None = None
    while True:
        try:
            cmd = steps.throw(StepFailed(str(error))) if error is not None else steps.send(value)
        except StopIteration as stop:
            return stop.value
        value, error = None, None
        if isinstance(cmd, Sleep):
            now = max(now, cmd.until)
            value = now
        elif isinstance(cmd, Call):
            try:
                value = call_activity(activities, cmd.activity, cmd.payload)
            except Exception as exc:  # the steps decide what a failure means
                if cmd.activity == RECORD:
                    raise
                log.warning("activity %s failed: %s", cmd.activity, exc)
                error = exc


class RetrainService:
    """The embedded retraining: the orchestration's steps on the in-process trainer and deployer."""

    def __init__(
        self,
        store: PredictionStore,
        trainer: Trainer,
        deployer: Deployer,
        *,
        model_name: str,
        metric: str = "accuracy",
        tolerance: float = 0.0,
        objects: ObjectStore | None = None,
    ) -> None:
        self._store = store
        self._trainer = trainer
        self._deployer = deployer
        self._model_name = model_name
        self._metric = metric
        self._tolerance = tolerance
        self._objects = objects
        self._runs = 0

    def manifest(self, class_names: tuple[str, ...] | None = None) -> TrainingManifest:
        return build_manifest(self._store, self._model_name, class_names)

    def retrain(self, class_names: tuple[str, ...] | None = None) -> RetrainOutcome:
        """Train, gate, deploy or reject; raise :class:`TrainingError` when a step fails."""
        activities = EmbeddedActivities(self._store, self._trainer, self._deployer, model_name=self._model_name,
                                        metric=self._metric, class_names=class_names, objects=self._objects)
        self._runs += 1
        now = datetime.now(UTC)
        cid = f"local-{now:%Y%m%dT%H%M%S%f}-{self._runs}"
        plan = Plan(self._model_name, metric=self._metric, tolerance=self._tolerance)
        res = run_inline(retrain_steps(plan, cid, now), activities, now)
        if res.outcome in (Outcome.FAILED, Outcome.TIMED_OUT):
            raise TrainingError(res.reason)
        model, _, _ = activities.candidates[cid]
        decision = GateDecision(res.outcome is Outcome.DEPLOYED, res.reason)  # decided once, by the steps
        return RetrainOutcome(model, decision, res.outcome is Outcome.DEPLOYED)
