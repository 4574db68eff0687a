"""Retrain requests: an Azure Storage queue (with the watermark in a blob) and an in-process queue.

Both keep "the label count the last request covered" per model and refuse a request that does not
move it forward, so repeated or concurrent triggers ask once for the same labels. Messages are
JSON, base64-encoded on the wire (what a Functions queue trigger decodes by default).
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections import deque
from typing import TYPE_CHECKING

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.storage.queue import QueueClient, TextBase64DecodePolicy, TextBase64EncodePolicy

from shared.ports import RetrainRequest

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.storage.blob import ContainerClient

log = logging.getLogger(__name__)


def build_queue_client(queue_name: str, *, connection_string: str = "", account_url: str = "",
                       credential: TokenCredential | None = None) -> QueueClient:
    """A QueueClient whose messages are base64 text, as Functions queue triggers expect: from a
    connection string (Azurite) or an account URL with a token credential (managed identity)."""
    encode, decode = TextBase64EncodePolicy(), TextBase64DecodePolicy()
    if connection_string:
        return QueueClient.from_connection_string(connection_string, queue_name, message_encode_policy=encode,
                                                  message_decode_policy=decode)
    if not account_url:
        raise ValueError("give a queue connection string or account URL")
    return QueueClient(account_url, queue_name, credential=credential, message_encode_policy=encode,
                       message_decode_policy=decode)


class InProcessRetrainRequests:
    """The embedded loop's hand-off: a thread-safe FIFO the in-process retrainer drains."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: deque[RetrainRequest] = deque()
        self._marks: dict[str, int] = {}

    def last_watermark(self, model_name: str) -> int | None:
        with self._lock:
            return self._marks.get(model_name)

    def request(self, req: RetrainRequest) -> bool:
        with self._lock:
            if self._marks.get(req.model_name, -1) >= req.watermark:
                return False
            self._marks[req.model_name] = req.watermark
            self._queue.append(req)
            return True

    def take(self) -> RetrainRequest | None:
        """The oldest request not yet taken, or None."""
        with self._lock:
            return self._queue.popleft() if self._queue else None

    def __len__(self) -> int:
        with self._lock:
            return len(self._queue)


class QueueRetrainRequests:
    """Azure Queue Storage. The watermark lives in ``<state container>/<model>.json`` and moves by
    ETag-conditional writes: of two triggers racing for the same labels, one wins and sends."""

    def __init__(self, queue: QueueClient, state: ContainerClient) -> None:
        """``queue`` as :func:`build_queue_client` makes it (base64 messages)."""
        self._queue = queue
        self._state = state
        self._ready = False

    def _ensure(self) -> None:
        if self._ready:
            return
        for create in (self._queue.create_queue, self._state.create_container):
            with contextlib.suppress(ResourceExistsError):
                create()
        self._ready = True

    def _read(self, model_name: str) -> tuple[int | None, str | None]:
        """(watermark, etag) of the state blob; (None, None) when there is none yet."""
        blob = self._state.get_blob_client(f"{model_name}.json")
        try:
            download = blob.download_blob()
            doc = json.loads(download.readall())
            return int(doc["watermark"]), download.properties.etag
        except ResourceNotFoundError:
            return None, None

    def last_watermark(self, model_name: str) -> int | None:
        self._ensure()
        return self._read(model_name)[0]

    def request(self, req: RetrainRequest) -> bool:
        self._ensure()
        current, etag = self._read(req.model_name)
        if current is not None and current >= req.watermark:
            return False
        blob = self._state.get_blob_client(f"{req.model_name}.json")
        body = json.dumps({"watermark": req.watermark, "requested_at": req.requested_at,
                           "export_id": req.export_id}).encode()
        try:
            if etag is None:
                blob.upload_blob(body, overwrite=False)
            else:
                blob.upload_blob(body, overwrite=True, etag=etag, match_condition=MatchConditions.IfNotModified)
        except (ResourceExistsError, ResourceModifiedError):
            log.info("retrain request at watermark %d lost a race; another trigger sent it", req.watermark)
            return False
        try:
            self._queue.send_message(req.to_json())
        except Exception:
            self._restore(req.model_name, current)
            raise
        return True

    def _restore(self, model_name: str, previous: int | None) -> None:
        """The message did not go out: put the watermark back so the next trigger asks again."""
        blob = self._state.get_blob_client(f"{model_name}.json")
        try:
            if previous is None:
                blob.delete_blob()
            else:
                blob.upload_blob(json.dumps({"watermark": previous}).encode(), overwrite=True)
        except Exception:  # the original error matters more; log this one
            log.warning("could not restore the retrain watermark of %s", model_name, exc_info=True)
