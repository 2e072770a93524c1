"""The SkyDNS record format that CoreDNS's etcd plugin serves, and the name-to-key mapping.

This is the only module that builds etcd keys. CoreDNS reads ``/skydns/<reversed labels>/<leaf>``
keys whose values are JSON objects (``{"host": ip, "ttl": s}`` for address records,
``{"text": ..., "ttl": s}`` for TXT); external-dns's CoreDNS provider writes the same layout.
The plugin does a *prefix* read for a name, so a name's records include those of every name below
it: endpoint names in one plan must not nest (``core.plans`` checks that).

Next to the records, dnsrace keeps each endpoint's active-plan marker under
``/dnsrace/active/<scope>/``, outside ``/skydns`` so CoreDNS never sees it. The scope is the lab's
namespace: plans are namespaced, and serials restart in every namespace, so two labs sharing one
DNS etcd must not read or clear each other's markers.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json

SKYDNS_PREFIX = "/skydns"
ACTIVE_PREFIX = "/dnsrace/active"


def _labels(name: str) -> list[str]:
    name = name.rstrip(".").lower()
    if not name:
        raise ValueError("empty DNS name")
    return name.split(".")


def name_path(name: str) -> str:
    """``dynamodb.us-east-1.sim.internal`` -> ``/skydns/internal/sim/us-east-1/dynamodb``."""
    return "/".join([SKYDNS_PREFIX, *reversed(_labels(name))])


def record_prefix(name: str) -> str:
    """The prefix under which all of a name's record keys live (trailing slash included)."""
    return name_path(name) + "/"


def record_key(name: str, leaf: str) -> str:
    if not leaf or "/" in leaf:
        raise ValueError(f"record leaf must be a non-empty path segment, got {leaf!r}")
    return record_prefix(name) + leaf


DEFAULT_SCOPE = "default"


def active_prefix(scope: str = DEFAULT_SCOPE) -> str:
    """The prefix of one scope's markers (trailing slash included)."""
    if not scope or "/" in scope:
        raise ValueError(f"marker scope must be a non-empty path segment, got {scope!r}")
    return f"{ACTIVE_PREFIX}/{scope}/"


def active_key(name: str, scope: str = DEFAULT_SCOPE) -> str:
    """Key of the endpoint's active-plan marker in ``scope``."""
    return active_prefix(scope) + ".".join(_labels(name))


def parse_record_key(key: str) -> tuple[str, str] | None:
    """``/skydns/internal/sim/x/leaf`` -> (``x.sim.internal``, ``leaf``); None for other keys."""
    parts = key.split("/")
    if len(parts) < 4 or parts[0] != "" or "/" + parts[1] != SKYDNS_PREFIX:
        return None
    return ".".join(reversed(parts[2:-1])), parts[-1]


def parse_active_key(key: str) -> tuple[str, str] | None:
    """``/dnsrace/active/<scope>/<name>`` -> (scope, name); None for other keys."""
    if not key.startswith(ACTIVE_PREFIX + "/"):
        return None
    scope, _, name = key[len(ACTIVE_PREFIX) + 1:].partition("/")
    return (scope, name) if scope and name else None


@dataclasses.dataclass(frozen=True, order=True)
class Record:
    """One SkyDNS value: an address record (``host``) or a TXT record (``text``)."""

    ttl: int
    host: str | None = None
    text: str | None = None

    def __post_init__(self) -> None:
        if (self.host is None) == (self.text is None):
            raise ValueError("a record has exactly one of host and text")
        if self.host is not None:
            ipaddress.ip_address(self.host)  # raises ValueError with the bad value
        if not 0 < self.ttl <= 86400:
            raise ValueError(f"ttl out of range: {self.ttl}")

    def encode(self) -> bytes:
        body: dict[str, object] = {"ttl": self.ttl}
        if self.host is not None:
            body["host"] = self.host
        else:
            body["text"] = self.text
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, raw: bytes) -> Record:
        body = json.loads(raw)
        return cls(ttl=int(body["ttl"]), host=body.get("host"), text=body.get("text"))
