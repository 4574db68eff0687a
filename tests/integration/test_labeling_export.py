"""The automatic labeling export: the product's ARM client (azure-core pipeline, bearer token, ARM
long-running-operation polling) against the Data Labeling stand-in on loopback, with Azurite."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import HttpResponseError
from azure.storage.blob import BlobServiceClient

from shared.adapters.labeling import AzureMLLabelingExports
from shared.core.exports import parse_export
from tests.support.aml_standin import LabelingStandIn

TRUTH = {"a1": "cat", "a2": "dog"}


class StaticToken:
    def get_token(self, *scopes: str, **kwargs: object) -> AccessToken:
        self.scopes = scopes
        return AccessToken("t", int(datetime.now(UTC).timestamp()) + 3600)


@pytest.fixture
def labeling(azurite):
    blobs = BlobServiceClient.from_connection_string(azurite.connection_string)
    inbox = blobs.get_container_client("labeling-input-lx")
    if not inbox.exists():
        inbox.create_container()
    with LabelingStandIn(azurite.connection_string, job="proj", oracle=TRUTH.get,
                         labeling_container=inbox.container_name, exports_container="exports-lx") as standin:
        yield standin, inbox, blobs


def client(url: str, credential, job: str = "proj") -> AzureMLLabelingExports:
    return AzureMLLabelingExports(credential=credential, subscription_id="sub", resource_group="rg", workspace="ws",
                                  labeling_job=job, arm_url=url, poll_interval=0.05)


def test_an_export_is_requested_polled_and_lands_cumulative_in_the_exports_container(labeling):
    standin, inbox, blobs = labeling
    inbox.upload_blob("b1/a1.png", b"x")
    token = StaticToken()
    first = client(standin.url, token).export_labels(timeout=10)
    assert token.scopes == (f"{standin.url}/.default",)
    assert (first.exported_rows, first.container, first.path) == (1, "exports-lx", standin.exports[0])
    inbox.upload_blob("b2/a2.png", b"y")
    second = client(standin.url, token).export_labels(timeout=10)
    assert second.exported_rows == 2  # cumulative, as Azure ML exports
    data = blobs.get_blob_client("exports-lx", second.path).download_blob().readall()
    parsed = parse_export(data, second.path)
    assert sorted(r.label for r in parsed.rows) == ["cat", "dog"]


def test_an_unknown_labeling_job_raises_the_arm_error(labeling):
    standin, _, _ = labeling
    with pytest.raises(HttpResponseError) as info:
        client(standin.url, StaticToken(), job="nope").export_labels(timeout=5)
    assert info.value.status_code == 404
