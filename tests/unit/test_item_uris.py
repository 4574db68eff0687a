"""The item URI policy: https on the named blob hosts, or under the object store's own roots."""

from __future__ import annotations

import pytest

from shared.core.item_uris import ItemUriPolicy, item_uri_problem

AZURE = ItemUriPolicy.of(https_hosts=["Acct.blob.core.windows.net"], roots=["https://own.blob.core.windows.net/"])
EMBEDDED = ItemUriPolicy.of(roots=["file:///data/blobs/", "file:///shared/items"])
AZURITE = ItemUriPolicy.of(roots=["http://127.0.0.1:10000/devstoreaccount1/"])


@pytest.mark.parametrize(("policy", "uri"), [
    (AZURE, "https://acct.blob.core.windows.net/items/a.png"),
    (AZURE, "https://ACCT.blob.core.windows.net/items/a%20b.png?sv=2024&sig=x"),
    (AZURE, "https://acct.blob.core.windows.net:443/items/sub/dir/a.png"),
    (AZURE, "https://own.blob.core.windows.net/items/sha256/abc"),  # the store's own account
    (EMBEDDED, "file:///data/blobs/items/sha256/abc"),
    (EMBEDDED, "file:///shared/items/a%20b.png"),  # an encoded space is a legal blob or file name
    (AZURITE, "http://127.0.0.1:10000/devstoreaccount1/items/a.png"),
])
def test_allowed(policy, uri):
    assert item_uri_problem(uri, policy) is None


@pytest.mark.parametrize(("policy", "uri", "needle"), [
    (AZURE, "file:///etc/passwd", "scheme 'file' is not allowed"),
    (AZURE, "http://169.254.169.254/metadata/instance?api-version=2021-02-01", "scheme 'http' is not allowed"),
    (AZURE, "https://169.254.169.254/metadata/instance", "host '169.254.169.254' is not an allowed storage"),
    (AZURE, "ftp://acct.blob.core.windows.net/items/a.png", "scheme 'ftp'"),
    (AZURE, "http://acct.blob.core.windows.net/items/a.png", "scheme 'http'"),
    (AZURE, "https://acct.blob.core.windows.net.evil.example/items/a.png", "not an allowed storage account"),
    (AZURE, "https://acct.blob.core.windows.net@evil.example/items/a.png", "user information"),
    (AZURE, "https://acct.blob.core.windows.net:8443/items/a.png", "not an allowed location"),
    (AZURE, "https://acct.blob.core.windows.net/items/../../x", "'..'"),
    (AZURE, "https://acct.blob.core.windows.net/items/%2e%2e/x", "'..'"),
    (AZURE, "https://acct.blob.core.windows.net/items", "names no blob"),
    (AZURE, "https://acct.blob.core.windows.net/items/a.png#frag", "fragment"),
    (AZURE, "https://acct.blob.core.windows.net/items/a b.png", "whitespace"),
    (AZURE, "https://acct.blob.core.windows.net\\@evil/items/a", "backslashes"),
    (AZURE, "https://acct.blob.core.windows.net:99999/items/a", "not a valid URI"),
    (AZURE, "https://acct.blob.core.windows.net/items/a%00.png", "percent-encoded control characters"),
    (AZURE, "https://acct.blob.core.windows.net/items/a%5C..%5Cb", "backslashes"),
    (AZURE, "items/a.png", "not an absolute URI"),
    (EMBEDDED, "file:///etc/passwd", "'/etc/passwd' is outside the object store"),
    (EMBEDDED, "file:///data/blobs/../../etc/passwd", "'..'"),
    (EMBEDDED, "file:///data/blobsX/a", "outside the object store"),
    (EMBEDDED, "file:///data/blobs/", "outside the object store"),  # the root itself names no item
    (EMBEDDED, "file://remote.example/data/blobs/a", "outside the object store"),
    (EMBEDDED, "https://acct.blob.core.windows.net/items/a.png", "scheme 'https' is not allowed"),
    (AZURITE, "http://127.0.0.1:10001/devstoreaccount1/items/a.png", "not an allowed location"),
    (AZURITE, "http://127.0.0.1:10000/otheraccount/items/a.png", "not an allowed location"),
])
def test_refused_with_a_reason(policy, uri, needle):
    why = item_uri_problem(uri, policy)
    assert why is not None and needle in why, why


def test_the_reason_says_what_is_allowed():
    why = item_uri_problem("ftp://x/y", AZURE)
    assert "https:// on acct.blob.core.windows.net" in why and "under https://own.blob.core.windows.net/" in why
    assert "nowhere" in item_uri_problem("https://a.b/c/d", ItemUriPolicy())
