"""A token credential for loopback stand-ins (the ADX stand-in and Data Labeling stand-in check that a
bearer token arrives, not whose it is). Test support only."""

from __future__ import annotations

from datetime import UTC, datetime

from azure.core.credentials import AccessToken


class StaticTokenCredential:
    """A TokenCredential that always has a token."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        pass

    def get_token(self, *scopes: str, **kwargs: object) -> AccessToken:
        return AccessToken("test-token", int(datetime.now(UTC).timestamp()) + 3600)

    def close(self) -> None:
        pass
