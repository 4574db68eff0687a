"""ADX ingestion with the real azure-kusto-ingest QueuedIngestClient.

The data-management endpoint is a local HTTP stub (pytest-httpserver) answering the two commands
the client sends, ``.get ingestion resources`` and ``.get kusto identity token``, with an Azurite
container and queue (SAS URLs). The real client then uploads the batch and posts the ingestion
message; the tests read both back. What the stub cannot show: ADX applying the mapping and the
tags (the mapping is checked against the table and the landing lines in the schema test).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
from datetime import UTC, datetime, timedelta

import pytest
from azure.core.credentials import AccessToken
from azure.storage.blob import BlobServiceClient, ContainerSasPermissions, generate_container_sas
from azure.storage.queue import QueueSasPermissions, QueueServiceClient, generate_queue_sas
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from shared.adapters.adx_ingest import AdxIngestor, build_ingest_client
from shared.adapters.blob_objects import BlobObjectStore
from shared.core.payload import landing_jsonl, validate_batch
from shared.services.ingest import IngestService, batch_id_of
from tests.support.azurite import ACCOUNT, KEY


class FakeCredential:
    """A TokenCredential for the stub (which ignores the bearer token it receives)."""

    def get_token(self, *scopes: str, **kwargs: object) -> AccessToken:
        return AccessToken("stub-token", int(datetime.now(UTC).timestamp()) + 3600)

    def close(self) -> None:
        pass


def v1_table(columns: list[str], rows: list[list[str]]) -> str:
    cols = [{"ColumnName": c, "DataType": "String", "ColumnType": "string"} for c in columns]
    return json.dumps({"Tables": [{"TableName": "Table_0", "Columns": cols, "Rows": rows}]})


class DataManagementStub:
    """Answers the data-management commands; ``fail`` makes them 500 (ADX unreachable)."""

    def __init__(self, resources: list[list[str]]) -> None:
        self.resources = resources
        self.commands: list[str] = []
        self.fail = False

    def __call__(self, request: Request) -> Response:
        csl = json.loads(request.data)["csl"]
        self.commands.append(csl)
        if self.fail:
            return Response('{"error": "down"}', status=500, content_type="application/json")
        if csl == ".get ingestion resources":
            return Response(v1_table(["ResourceTypeName", "StorageRoot"], self.resources),
                            content_type="application/json")
        if csl == ".get kusto identity token":
            return Response(v1_table(["AuthorizationContext"], [["auth-context"]]), content_type="application/json")
        return Response(f"unexpected command {csl}", status=400)


@pytest.fixture(scope="module")
def storage(azurite):
    blob = BlobServiceClient.from_connection_string(azurite.connection_string)
    queues = QueueServiceClient.from_connection_string(azurite.connection_string)
    return blob, queues


@pytest.fixture
def dm(azurite, storage, request):
    blob, queues = storage
    suffix = request.node.name.replace("_", "")[-20:].lower()
    container, queue = f"tmp{suffix}", f"ready{suffix}"
    blob.create_container(container)
    queues.create_queue(queue)
    expiry = datetime.now(UTC) + timedelta(hours=1)
    csas = generate_container_sas(ACCOUNT, container, account_key=KEY, expiry=expiry,
                                  permission=ContainerSasPermissions(read=True, write=True, create=True))
    qsas = generate_queue_sas(ACCOUNT, queue, account_key=KEY, expiry=expiry,
                              permission=QueueSasPermissions(add=True, read=True, process=True))
    resources = [
        ["TempStorage", f"{azurite.blob_url}/{container}?{csas}"],
        ["SecuredReadyForAggregationQueue", f"{azurite.queue_url}/{queue}?{qsas}"],
        ["FailedIngestionsQueue", f"{azurite.queue_url}/failed{suffix}?{qsas}"],
        ["SuccessfulIngestionsQueue", f"{azurite.queue_url}/ok{suffix}?{qsas}"],
        ["IngestionsStatusTable", f"{azurite.blob_url}/status{suffix}?{csas}"],
    ]
    stub = DataManagementStub(resources)
    with HTTPServer(host="127.0.0.1") as http:
        http.expect_request("/v1/rest/auth/metadata").respond_with_data("", status=404)  # no cloud metadata
        http.expect_request("/v1/rest/mgmt", method="POST").respond_with_handler(stub)
        client = build_ingest_client(cluster_uri=http.url_for("").rstrip("/"), ingest_uri=http.url_for("").rstrip("/"),
                                     credential=FakeCredential(), streaming=False)
        try:
            yield stub, client, blob.get_container_client(container), queues.get_queue_client(queue)
        finally:
            client.close()


def landed_batch(n: int = 3) -> tuple[str, bytes]:
    payload = [{"item_id": f"img-{i}", "item_uri": f"https://x/img-{i}.png", "model_name": "m",
                "model_version": "1", "class_names": ["a", "b"], "probabilities": [0.25, 0.75],
                "predicted_label": "b", "scored_at": "2026-03-01T10:00:00Z"} for i in range(n)]
    checked = validate_batch(payload, classes_of=lambda *_: None, max_records=10, max_item_bytes=10)
    records = [r for r, _, _ in checked]
    jsonl = landing_jsonl(records, [r.item_uri or "" for r in records], datetime(2026, 3, 1, 10, 1, tzinfo=UTC))
    return batch_id_of([r.prediction_id or "" for r in records]), jsonl


def messages(queue) -> list[dict]:
    return [json.loads(base64.b64decode(m.content)) for m in queue.receive_messages(messages_per_page=32)]


def test_the_real_client_uploads_the_batch_and_posts_a_tagged_message(dm):
    stub, client, container, queue = dm
    batch_id, jsonl = landed_batch()
    outcome = AdxIngestor(client, database="activelearning").ingest(batch_id, jsonl)
    assert outcome.new_rows is None  # queued: ADX counts rows later

    (msg,) = messages(queue)
    assert msg["DatabaseName"] == "activelearning" and msg["TableName"] == "Predictions"
    props = msg["AdditionalProperties"]
    assert props["format"] == "json"
    assert props["ingestionMappingReference"] == "PredictionsJsonMapping"
    assert props["ingestionMappingType"] == "Json"
    assert json.loads(props["ingestIfNotExists"]) == [f"batch:{batch_id}"]
    assert f"ingest-by:batch:{batch_id}" in json.loads(props["tags"])
    assert props["authorizationContext"] == "auth-context"

    blob_name = msg["BlobPath"].split("?", 1)[0].rsplit("/", 1)[-1]
    uploaded = container.get_blob_client(blob_name).download_blob().readall()
    assert gzip.decompress(uploaded) == jsonl
    assert stub.commands == [".get ingestion resources", ".get kusto identity token"]


def test_landing_then_ingest_through_the_service_on_azurite(dm, storage):
    stub, client, _container, queue = dm
    objects = BlobObjectStore(storage[0])
    service = IngestService(objects, AdxIngestor(client, database="activelearning"), container="landing-adx",
                            attempts=1)
    batch_id, jsonl = landed_batch(2)

    stub.fail = True
    landed = service.land(batch_id, jsonl)
    assert not landed.already_landed
    with pytest.raises(Exception):  # noqa: B017 - the Kusto client's own error type
        service.ingest(batch_id)
    assert objects.list("landing-adx", "pending/") == [f"pending/{batch_id}.jsonl"]  # kept for the retry
    assert messages(queue) == []

    stub.fail = False
    report = service.reingest_pending(min_age_seconds=0)
    assert report.ingested == [batch_id] and not report.failed
    assert objects.list("landing-adx", "pending/") == []
    assert objects.get("landing-adx", f"ingested/{batch_id}.jsonl") == jsonl
    (msg,) = messages(queue)
    assert json.loads(msg["AdditionalProperties"]["ingestIfNotExists"]) == [f"batch:{batch_id}"]
    assert service.land(batch_id, jsonl).already_ingested  # the same batch again is not re-landed


def test_the_azure_collector_lands_items_and_batch_in_blob_then_queues_ingestion(dm, azurite):
    """The whole Azure wiring: Blob (Azurite) for items and landing, the real ingest client for ADX."""
    import azure.functions as func

    from functions.scoring_collector import handlers
    from functions.scoring_collector.wiring import build_collector
    from shared.settings import load_settings

    _stub, client, _container, queue = dm
    settings = load_settings(backend="azure", storage_connection_string=azurite.connection_string,
                             adx_cluster_uri="http://127.0.0.1:9", landing_container="landing-e2e",
                             items_container="items-e2e")
    collector = build_collector(settings, credential=FakeCredential(), ingest_client=client)
    data = b"\x89PNG not really"
    record = {"item_id": "img-1", "item_base64": base64.b64encode(data).decode(), "model_name": "m",
              "model_version": "1", "class_names": ["a", "b"], "probabilities": [0.4, 0.6],
              "predicted_label": "b", "scored_at": "2026-03-01T10:00:00Z"}
    twin = {**record, "item_id": "img-2"}
    body = json.dumps([record, twin]).encode()

    def post() -> dict:
        req = func.HttpRequest(method="POST", url="http://localhost/api/predictions",
                               headers={"content-type": "application/json"}, body=body)
        resp = handlers.post_predictions(req, collector)
        assert resp.status_code == 202, resp.get_body()
        return json.loads(resp.get_body())

    first = post()
    assert (first["accepted"], first["duplicates"], first["ingested"]) == (2, 0, True)
    blob = BlobServiceClient.from_connection_string(azurite.connection_string)
    items = [b.name for b in blob.get_container_client("items-e2e").list_blobs()]
    assert items == [f"sha256/{hashlib.sha256(data).hexdigest()}"]  # same bytes, one blob
    landed = blob.get_blob_client("landing-e2e", f"ingested/{first['batch_id']}.jsonl").download_blob().readall()
    rows = [json.loads(x) for x in landed.splitlines()]
    assert [r["item_uri"] for r in rows] == [f"{azurite.blob_url}/items-e2e/{items[0]}"] * 2
    (msg,) = messages(queue)
    assert msg["TableName"] == "Predictions"

    again = post()
    assert (again["accepted"], again["duplicates"]) == (0, 2)
    assert messages(queue) == []  # already ingested: not queued twice
