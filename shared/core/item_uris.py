"""Where an item URI may point. The collector applies this policy to every ``item_uri`` it accepts and
the selector applies it again right before it copies an item into the labeling folder, so neither a
hostile body nor an old row in the store can make the system fetch an arbitrary URL
(``file:///etc/passwd``, ``http://169.254.169.254/…``).

Allowed: ``https://`` on the blob hosts the deployment names (``AL_ALLOWED_ITEM_HOSTS``), and URIs
under the object store's own roots (its ``file://`` folders embedded; its blob endpoint in Azure,
which is ``http://127.0.0.1:…`` under Azurite). Pure: parsing only, no I/O, no name resolution.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import SplitResult, unquote, urlsplit

_DEFAULT_PORTS = {"https": 443, "http": 80}
# The common case, decided without urlsplit: https://<host>/<container>/<name> in plain characters.
_PLAIN_HTTPS = re.compile(r"https://([a-z0-9.-]+)/[a-z0-9][a-z0-9-]*/[A-Za-z0-9_.~/!$&'()*+,;=:@-]+", re.ASCII)
_UNSAFE = re.compile(r"[\x00-\x20\x7f\\]")  # whitespace, control characters, backslashes


@dataclass(frozen=True, slots=True)
class _Root:
    scheme: str
    host: str
    port: int | None
    path: str  # unquoted, ends with "/"


def _port(parts: SplitResult, scheme: str) -> int | None:
    port = parts.port  # ValueError for a port that is not a number in range
    return None if port == _DEFAULT_PORTS.get(scheme) else port


@dataclass(frozen=True, slots=True)
class ItemUriPolicy:
    """``https_hosts``: blob hosts items may be on (https only); ``roots``: URI prefixes of the object
    store itself (``file:///data/blobs/``, ``https://acct.blob.core.windows.net/``)."""

    https_hosts: frozenset[str] = frozenset()
    roots: tuple[str, ...] = ()
    _parsed: tuple[_Root, ...] = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "https_hosts", frozenset(h.strip().lower() for h in self.https_hosts if h.strip()))
        parsed = []
        for root in self.roots:
            parts = urlsplit(root)
            scheme = parts.scheme.lower()
            path = unquote(parts.path)
            parsed.append(_Root(scheme, (parts.hostname or "").lower(), _port(parts, scheme),
                                path if path.endswith("/") else path + "/"))
        object.__setattr__(self, "_parsed", tuple(parsed))

    @classmethod
    def of(cls, *, https_hosts: Iterable[str] = (), roots: Iterable[str] = ()) -> ItemUriPolicy:
        return cls(frozenset(https_hosts), tuple(roots))

    def describe(self) -> str:
        """What is allowed, for a reason a sender can act on."""
        where = [f"https:// on {', '.join(sorted(self.https_hosts))}"] if self.https_hosts else []
        where += [f"under {r}" for r in self.roots]
        return " or ".join(where) if where else "nowhere (no storage configured)"


def item_uri_problem(uri: str, policy: ItemUriPolicy) -> str | None:
    """Why ``uri`` may not name an item under ``policy``, or None if it may."""
    plain = _PLAIN_HTTPS.fullmatch(uri)
    if plain and plain.group(1) in policy.https_hosts and "/." not in uri:
        return None
    allowed = f"item URIs must be {policy.describe()}"
    if _UNSAFE.search(uri):
        return f"contains whitespace, control characters or backslashes; {allowed}"
    try:
        parts = urlsplit(uri)
        scheme = parts.scheme.lower()
        port = _port(parts, scheme)
    except ValueError as exc:
        return f"not a valid URI ({exc}); {allowed}"
    if not scheme:
        return f"not an absolute URI; {allowed}"
    if "@" in parts.netloc:
        return f"user information in the URI is not allowed; {allowed}"
    if parts.fragment or uri.endswith("#"):
        return f"a fragment ('#') is not allowed; {allowed}"
    path = unquote(parts.path)
    if _UNSAFE.search(path.replace(" ", "")):  # a space may be percent-encoded in a blob name
        return f"percent-encoded control characters or backslashes are not allowed; {allowed}"
    segments = path.split("/")
    if any(s in (".", "..") for s in segments):
        return f"'.' and '..' path segments are not allowed; {allowed}"
    host = (parts.hostname or "").lower()
    if scheme == "https" and host in policy.https_hosts and port is None:
        if sum(1 for s in segments if s) < 2:
            return "names no blob: use https://<host>/<container>/<name>"
        return None
    for root in policy._parsed:
        if ((scheme, host, port) == (root.scheme, root.host, root.port) and path.startswith(root.path)
                and len(path) > len(root.path)):
            return None
    schemes = {r.scheme for r in policy._parsed} | ({"https"} if policy.https_hosts else set())
    if scheme not in schemes:
        return f"scheme {scheme!r} is not allowed; {allowed}"
    if scheme == "file":
        return f"{path!r} is outside the object store; {allowed}"
    if host not in policy.https_hosts and all(host != r.host for r in policy._parsed):
        return f"host {host!r} is not an allowed storage account; {allowed}"
    return f"not an allowed location; {allowed}"
