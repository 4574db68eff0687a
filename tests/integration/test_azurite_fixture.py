from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueClient


def test_azurite_serves_blob_and_queue(azurite):
    blobs = BlobServiceClient.from_connection_string(azurite.connection_string)
    container = blobs.create_container("fixture-check")
    container.upload_blob("a.txt", b"hello")
    assert container.download_blob("a.txt").readall() == b"hello"
    queue = QueueClient.from_connection_string(azurite.connection_string, "fixture-check")
    queue.create_queue()
    queue.send_message("hi")
    assert [m.content for m in queue.receive_messages()] == ["hi"]
