"""Azure ML for the Azure-loop tests: the workspace's
models, data assets and online deployment as a fake at the adapter's port. Test support only.

* :class:`StandinAzureML` has the methods of :class:`shared.adapters.azureml.AzureMLAdapter` and keeps
  everything in Azurite (container ``aml-standin``), so the dispatch app's process, the GitHub
  stand-in's "workflow" and the test share one workspace: registered models with their tags and
  files, data assets, and the deployment (which reaches ``Succeeded`` shortly after an update).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from pathlib import Path
from typing import Any

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import BlobServiceClient
from werkzeug import Response

from shared.adapters.azureml import RegisteredModel, _version_key
from shared.core.orchestration import TAG_CORRELATION

CONTAINER = "aml-standin"
MODEL_FILES = ("model.onnx", "head.npz", "meta.json")


class StandinAzureML:
    """The workspace's models, data assets and online deployment, kept in Azurite."""

    def __init__(self, connection_string: str, *, deploy_seconds: float = 0.5) -> None:
        self._service = BlobServiceClient.from_connection_string(connection_string)
        self._box = self._service.get_container_client(CONTAINER)
        with contextlib.suppress(ResourceExistsError):
            self._box.create_container()
        self._deploy_seconds = deploy_seconds
        self._lock = threading.Lock()

    def _get(self, name: str) -> bytes | None:
        try:
            return self._box.get_blob_client(name).download_blob().readall()  # type: ignore[no-any-return]
        except ResourceNotFoundError:
            return None

    def _put(self, name: str, data: bytes) -> None:
        self._box.get_blob_client(name).upload_blob(data, overwrite=True)

    # --- the adapter's methods ---------------------------------------------------------------
    def register_manifest(self, *, name: str, version: str, uri: str, description: str = "",
                          tags: dict[str, str] | None = None) -> str:
        self._put(f"data/{name}/{version}.json", json.dumps({"uri": uri, "tags": tags or {}}).encode())
        return f"azureml:{name}:{version}"

    def register_model(self, name: str, model_dir: str, *, tags: dict[str, str], description: str = "") -> str:
        with self._lock:
            versions = [b.name.split("/")[2] for b in self._box.list_blobs(name_starts_with=f"models/{name}/")]
            version = str(max((int(v) for v in versions if v.isdigit()), default=0) + 1)
            for file in MODEL_FILES:
                path = Path(model_dir) / file
                if path.is_file():
                    self._put(f"models/{name}/{version}/{file}", path.read_bytes())
            self._put(f"models/{name}/{version}/tags.json", json.dumps(tags).encode())
        return version

    def find_model(self, name: str, correlation_id: str, *, metric: str) -> RegisteredModel | None:
        found = [m for m in self.models(name) if m.tags.get(TAG_CORRELATION) == correlation_id]
        if not found:
            return None
        m = max(found, key=lambda m: _version_key(m.version))
        return RegisteredModel.from_tags(name, m.version, m.tags, metric=metric)

    def ensure_deployment(self, name: str, version: str, **_: Any) -> None:
        self.start_deploy(name, version)

    def start_deploy(self, name: str, version: str) -> None:
        self._put("deployment.json", json.dumps({"model": f"azureml:{name}:{version}", "state": "Updating",
                                                 "since": time.time()}).encode())

    def deploy_state(self, name: str, version: str) -> dict[str, str]:
        doc = self.deployment()
        if doc is None:
            return {"state": "NotFound", "detail": "no deployment"}
        if doc["state"] == "Updating" and time.time() - doc["since"] >= self._deploy_seconds:
            doc["state"] = "Succeeded"
            self._put("deployment.json", json.dumps(doc).encode())
        state = doc["state"] if doc["model"] == f"azureml:{name}:{version}" else "Updating"
        return {"state": state, "detail": f"serves {doc['model']}"}

    # --- what the test and the GitHub stand-in read ------------------------------------------
    def deployment(self) -> dict[str, Any] | None:
        raw = self._get("deployment.json")
        return json.loads(raw) if raw else None

    def models(self, name: str) -> list[RegisteredModel]:
        out = []
        for blob in self._box.list_blobs(name_starts_with=f"models/{name}/"):
            if blob.name.endswith("/tags.json"):
                version = blob.name.split("/")[2]
                tags = json.loads(self._get(blob.name) or b"{}")
                out.append(RegisteredModel(name, version, None, None, tags))
        return sorted(out, key=lambda m: _version_key(m.version))

    def download_model(self, name: str, version: str, into: Path) -> Path:
        into.mkdir(parents=True, exist_ok=True)
        for file in MODEL_FILES:
            data = self._get(f"models/{name}/{version}/{file}")
            if data is not None:
                (into / file).write_bytes(data)
        return into

    def data_uri(self, ref: str) -> str:
        """``azureml:<name>:<version>`` -> the URI the asset was registered with."""
        _, name, version = ref.split(":")
        raw = self._get(f"data/{name}/{version}.json")
        if raw is None:
            raise KeyError(f"no data asset {ref}")
        return str(json.loads(raw)["uri"])


def _json(body: Any, status: int) -> Response:
    return Response(json.dumps(body), status=status, content_type="application/json")
