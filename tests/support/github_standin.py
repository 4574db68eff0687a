"""GitHub Actions for the Azure-loop tests: the REST calls the product's GitHub client makes, on
loopback, and a "workflow run" that does what ``.github/workflows/train.yml`` does. Test support only.

A ``workflow_dispatch`` of the training workflow starts a run in a thread: it reads the manifest of
the data asset (from Azurite, through the Azure ML stand-in), fetches the items as the job's datastore
mount would, trains with the project's ``shared.training.train`` from the serving checkpoint, and
registers the model with the tags ``shared.training.register`` gives it — so the orchestrator finds,
gates and deploys a model that really learned from the labels.
"""

from __future__ import annotations

import itertools
import json
import tempfile
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from azure.storage.blob import BlobServiceClient
from werkzeug import Request, Response

from shared.services.retrain import WORKFLOW_INPUTS
from shared.training.register import model_tags
from shared.training.train import train
from tests.support.aml_standin import StandinAzureML
from tests.support.loopback import LoopbackServer


class GitHubStandIn(LoopbackServer):
    """``/repos/{owner}/{repo}/actions/...`` for one repository and workflow."""

    def __init__(self, connection_string: str, aml: StandinAzureML, *, repository: str, workflow: str,
                 token: str, datastores: dict[str, str], run_seconds: float = 1.0) -> None:
        self._service = BlobServiceClient.from_connection_string(connection_string)
        self._aml = aml
        self._repo = repository
        self._workflow = workflow
        self._token = token
        self._datastores = datastores  # Azure ML datastore -> container
        self._run_seconds = run_seconds
        # Seconds a dispatch's answer is held after the run exists: a caller killed meanwhile never
        # learns of its run (what a host dying mid-activity looks like to GitHub).
        self.dispatch_delay = 0.0
        self._ids = itertools.count(1001)
        self._lock = threading.Lock()
        self.runs: dict[int, dict[str, Any]] = {}
        self.dispatches: list[dict[str, str]] = []
        self._threads: list[threading.Thread] = []  # workflow runs
        super().__init__()

    def stop(self) -> None:
        super().stop()
        for t in self._threads:
            t.join(timeout=60)

    # --- HTTP ---------------------------------------------------------------------------------
    def _handle(self, request: Request) -> Response:
        if request.headers.get("Authorization") != f"Bearer {self._token}":
            return _json({"message": "Bad credentials"}, 401)
        base = f"/repos/{self._repo}/actions"
        path = request.path
        if request.method == "POST" and path == f"{base}/workflows/{self._workflow}/dispatches":
            return self._dispatch(request.get_json(silent=True) or {})
        if request.method == "GET" and path == f"{base}/workflows/{self._workflow}/runs":
            with self._lock:
                runs = sorted(self.runs.values(), key=lambda r: -r["id"])
            return _json({"total_count": len(runs), "workflow_runs": [self._public(r) for r in runs]}, 200)
        if path.startswith(f"{base}/runs/"):
            parts = path[len(f"{base}/runs/"):].split("/")
            run = self.runs.get(int(parts[0])) if parts[0].isdigit() else None
            if run is None:
                return _json({"message": "Not Found"}, 404)
            if request.method == "GET" and len(parts) == 1:
                return _json(self._public(run), 200)
            if request.method == "POST" and parts[1:] == ["cancel"]:
                if run["status"] == "completed":
                    return _json({"message": "Cannot cancel a workflow run that is completed."}, 409)
                run["cancelled"] = True
                return _json({}, 202)
        return _json({"message": "Not Found"}, 404)

    def _dispatch(self, body: dict[str, Any]) -> Response:
        inputs = body.get("inputs") or {}
        if sorted(inputs) != sorted(WORKFLOW_INPUTS) or not all(isinstance(v, str) for v in inputs.values()):
            return _json({"message": f"Unexpected inputs provided: {sorted(inputs)}"}, 422)
        with self._lock:
            run_id = next(self._ids)
            run = {"id": run_id, "status": "queued", "conclusion": None, "inputs": inputs, "log": [],
                   "display_title": f"train {inputs['model_name']} [{inputs['correlation_id']}]",
                   "created_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), "cancelled": False}
            self.runs[run_id] = run
            self.dispatches.append(inputs)
        thread = threading.Thread(target=self._run, args=(run,), daemon=True)
        self._threads.append(thread)
        thread.start()
        if self.dispatch_delay:
            threading.Event().wait(self.dispatch_delay)
        html = f"https://github.invalid/{self._repo}/actions/runs/{run_id}"
        return _json({"workflow_run_id": run_id, "run_url": f"{self.url}/repos/{self._repo}/actions/runs/{run_id}",
                      "html_url": html}, 200)

    def _public(self, run: dict[str, Any]) -> dict[str, Any]:
        return {"id": run["id"], "status": run["status"], "conclusion": run["conclusion"],
                "display_title": run["display_title"], "name": "train", "created_at": run["created_at"],
                "url": f"{self.url}/repos/{self._repo}/actions/runs/{run['id']}",
                "html_url": f"https://github.invalid/{self._repo}/actions/runs/{run['id']}"}

    # --- the workflow -------------------------------------------------------------------------
    def _run(self, run: dict[str, Any]) -> None:
        run["status"] = "in_progress"
        try:
            self._train(run["inputs"], run)
            run["conclusion"] = "cancelled" if run["cancelled"] else "success"
        except Exception as exc:  # the run fails, as a failing job step would
            run["log"].append(f"failed: {type(exc).__name__}: {exc}")
            run["conclusion"] = "failure"
        finally:
            run["status"] = "completed"

    def _train(self, inputs: dict[str, str], run: dict[str, Any]) -> None:
        started = datetime.now(UTC)
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            manifest = root / "manifest.jsonl"
            manifest.write_bytes(self._download_url(self._aml.data_uri(inputs["data_asset"])))
            items = root / "items"
            for line in manifest.read_text().splitlines():
                url = json.loads(line)["image_url"]
                if url.startswith("azureml://"):  # what the job's datastore mount shows
                    datastore = url.split("/datastores/", 1)[1].split("/", 1)[0]
                    path = url.split("/paths/", 1)[1]
                    target = items / path
                    target.parent.mkdir(parents=True, exist_ok=True)
                    blob = self._service.get_blob_client(self._datastores[datastore], path)
                    target.write_bytes(blob.download_blob().readall())
            checkpoint = None
            if inputs["base_model_version"]:
                checkpoint = self._aml.download_model(inputs["model_name"], inputs["base_model_version"],
                                                      root / "checkpoint")
            out = root / "model"
            metrics = train(manifest, out, class_names=json.loads(inputs["class_names"]), checkpoint=checkpoint,
                            items=items, metric=inputs["metric"])
            elapsed = (datetime.now(UTC) - started).total_seconds()
            if elapsed < self._run_seconds:  # a run is never instant: the orchestrator polls it
                threading.Event().wait(self._run_seconds - elapsed)
            version = self._aml.register_model(
                inputs["model_name"], str(out), description=f"run {run['id']}",
                tags=model_tags(metrics, correlation_id=inputs["correlation_id"], metric=inputs["metric"],
                                job_name=f"run-{run['id']}"))
            run["log"].append(f"registered {inputs['model_name']}:{version} {json.dumps(metrics)}")

    def _download_url(self, url: str) -> bytes:
        container, _, name = url.split("/devstoreaccount1/", 1)[1].partition("/")
        return self._service.get_blob_client(container, name).download_blob().readall()  # type: ignore[no-any-return]


def _json(body: Any, status: int) -> Response:
    return Response(json.dumps(body), status=status, content_type="application/json")
