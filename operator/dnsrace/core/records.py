"""The SkyDNS record format that CoreDNS's etcd plugin serves, and the name-to-key mapping.

This is the only module that builds etcd keys. CoreDNS reads ``/skydns/<reversed labels>/<leaf>``
keys whose values are JSON objects (``{"host": ip, "ttl": s}`` for address records,
``{"text": ..., "ttl": s}`` for TXT); external-dns's CoreDNS provider writes the same layout.
The plugin does a *prefix* read for a name, so a name's records include those of every name below
it: endpoint names in one plan must not nest (``core.plans`` checks that).

Next to the records, dnsrace keeps each endpoint's active-plan marker under ``/dnsrace/active/``,
outside ``/skydns`` so CoreDNS never sees it.
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


def active_key(name: str) -> str:
    """Key of the endpoint's active-plan marker."""
    return f"{ACTIVE_PREFIX}/{'.'.join(_labels(name))}"


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
