"""The Azure Blob Storage adapter of :class:`shared.ports.ObjectStore`.

Built once per process from a ``BlobServiceClient`` (managed identity in Azure via
``DefaultAzureCredential``; a connection string only for Azurite in local development). Retries
are azure-core's exponential retry policy, configured on the client.
"""

from __future__ import annotations

import contextlib
import time
from urllib.parse import unquote, urlparse

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import BlobServiceClient, ContainerClient

from shared.errors import NotFoundError


class BlobObjectStore:
    def __init__(self, service: BlobServiceClient, *, copy_timeout: float = 60.0) -> None:
        self._service = service
        self._copy_timeout = copy_timeout
        self._account_path = urlparse(service.url).path.rstrip("/")
        self._known_containers: set[str] = set()

    def _container(self, name: str) -> ContainerClient:
        client = self._service.get_container_client(name)
        if name not in self._known_containers:
            with contextlib.suppress(ResourceExistsError):
                client.create_container()
            self._known_containers.add(name)
        return client

    def uri(self, container: str, name: str) -> str:
        return self._service.get_blob_client(container, name).url

    def uri_roots(self) -> tuple[str, ...]:
        """The account's blob endpoint (``http://127.0.0.1:…/devstoreaccount1/`` under Azurite)."""
        endpoint = urlparse(self._service.url)
        return (f"{endpoint.scheme}://{endpoint.netloc}{endpoint.path.rstrip('/')}/",)

    def put(self, container: str, name: str, data: bytes, *, overwrite: bool = False) -> str:
        blob = self._container(container).get_blob_client(name)
        with contextlib.suppress(ResourceExistsError):  # keep the existing object
            blob.upload_blob(data, overwrite=overwrite)
        return blob.url

    def get(self, container: str, name: str) -> bytes:
        try:
            return self._service.get_blob_client(container, name).download_blob().readall()
        except ResourceNotFoundError:
            raise NotFoundError(f"no blob {container}/{name}") from None

    def read(self, uri: str) -> bytes:
        container, name = self._split(uri)
        return self.get(container, name)

    def exists(self, container: str, name: str) -> bool:
        return bool(self._service.get_blob_client(container, name).exists())

    def copy(self, src_uri: str, container: str, name: str) -> str:
        """Server-side copy; waits for it to finish (same-account copies complete at once)."""
        dst = self._container(container).get_blob_client(name)
        try:
            props = dst.start_copy_from_url(src_uri)
        except ResourceNotFoundError:
            raise NotFoundError(f"no blob at {src_uri}") from None
        status = props.get("copy_status")
        deadline = time.monotonic() + self._copy_timeout
        while status == "pending":
            if time.monotonic() > deadline:
                raise TimeoutError(f"copy of {src_uri} to {container}/{name} did not finish")
            time.sleep(0.2)
            status = dst.get_blob_properties().copy.status
        if status != "success":
            raise OSError(f"copy of {src_uri} to {container}/{name} ended as {status!r}")
        return dst.url

    def list(self, container: str, prefix: str = "") -> list[str]:
        client = self._service.get_container_client(container)
        try:
            return sorted(b.name for b in client.list_blobs(name_starts_with=prefix or None))
        except ResourceNotFoundError:
            return []

    def delete(self, container: str, name: str) -> None:
        with contextlib.suppress(ResourceNotFoundError):
            self._service.get_blob_client(container, name).delete_blob()

    def _split(self, uri: str) -> tuple[str, str]:
        path = unquote(urlparse(uri).path)
        if self._account_path and path.startswith(self._account_path + "/"):
            path = path[len(self._account_path):]
        container, _, name = path.lstrip("/").partition("/")
        if not container or not name:
            raise ValueError(f"{uri!r} does not name a blob in this account")
        return container, name
