"""The Blob adapter against Azurite: the same behaviour the local-folder adapter has."""

import pytest
from azure.storage.blob import BlobServiceClient

from shared.adapters.blob_objects import BlobObjectStore
from shared.adapters.local_objects import LocalFolderObjectStore
from shared.errors import NotFoundError


@pytest.fixture(params=["blob", "local"])
def objects(request, tmp_path):
    if request.param == "local":
        return LocalFolderObjectStore(tmp_path)
    az = request.getfixturevalue("azurite")
    return BlobObjectStore(BlobServiceClient.from_connection_string(az.connection_string))


def test_object_store_contract(objects):
    uri = objects.put("items", "sha256/abc.png", b"one")
    assert objects.put("items", "sha256/abc.png", b"two") == uri  # kept, not overwritten
    assert objects.read(uri) == b"one" and objects.get("items", "sha256/abc.png") == b"one"
    objects.put("items", "sha256/abc.png", b"two", overwrite=True)
    assert objects.get("items", "sha256/abc.png") == b"two"
    copied = objects.copy(uri, "labeling-input", "batch-1/item%2F1.png")
    assert objects.read(copied) == b"two"
    assert objects.list("labeling-input", "batch-1/") == ["batch-1/item%2F1.png"]
    assert objects.exists("labeling-input", "batch-1/item%2F1.png")
    objects.delete("labeling-input", "batch-1/item%2F1.png")
    assert not objects.exists("labeling-input", "batch-1/item%2F1.png")
    assert objects.list("never-made") == []
    with pytest.raises(NotFoundError):
        objects.get("items", "missing")
