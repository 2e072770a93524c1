"""The DnsPlan custom resource as Python types: parsing, the checks the CRD cannot express,
and the records a plan puts on each endpoint.

The CRD in ``manifests/crds/`` validates shape and values first (the API server refuses bad
plans); ``Plan.from_body`` parses what the API returns and applies the controller's own checks
(names that nest, which CoreDNS's prefix reads would mix). A unit test keeps these types and the
CRD YAML in agreement.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Mapping
from typing import Any

from dnsrace.core import records

GROUP = "dnsrace.io"
VERSION = "v1alpha1"
PLURAL = "dnsplans"
KIND = "DnsPlan"
MAX_ENDPOINTS = 256
MAX_TARGETS = 16
DEFAULT_TTL = 5


class PlanError(ValueError):
    """A plan that the controller refuses; the message names the field."""


@dataclasses.dataclass(frozen=True)
class Target:
    address: str
    weight: int


@dataclasses.dataclass(frozen=True)
class Endpoint:
    name: str
    targets: tuple[Target, ...]
    ttl: int = DEFAULT_TTL

    def records(self, serial: int) -> dict[str, records.Record]:
        """The SkyDNS records this endpoint holds while plan ``serial`` is active on it.

        Leaves carry the serial, so a plan's records are told apart from another plan's; a TXT
        record carries the serial so DNS clients (the prober) can see which plan answers.
        Zero-weight targets get no record, as a weighted Route 53 record of weight 0 gets no
        traffic.
        """
        out = {
            f"p{serial}-{i}": records.Record(ttl=self.ttl, host=t.address)
            for i, t in enumerate(self.targets)
            if t.weight > 0
        }
        out[f"p{serial}-txt"] = records.Record(ttl=self.ttl, text=f"serial={serial}")
        return out


@dataclasses.dataclass(frozen=True)
class Plan:
    serial: int
    endpoints: tuple[Endpoint, ...]
    name: str = ""
    """The DnsPlan object's metadata.name."""
    uid: str = ""
    """The DnsPlan object's metadata.uid (markers carry it; see ``core.stores.ActiveMarker``)."""

    def endpoint(self, name: str) -> Endpoint | None:
        return next((e for e in self.endpoints if e.name == name), None)

    @classmethod
    def from_body(cls, body: Mapping[str, Any], zone: str) -> Plan:
        """Parse a DnsPlan object (as the API returns it) and apply the controller's checks."""
        spec = body.get("spec") or {}
        try:
            serial = int(spec["serial"])
            endpoints = tuple(
                Endpoint(
                    name=str(e["name"]),
                    ttl=int(e.get("ttl", DEFAULT_TTL)),
                    targets=tuple(
                        Target(address=str(t["address"]), weight=int(t["weight"]))
                        for t in e["targets"]
                    ),
                )
                for e in spec["endpoints"]
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise PlanError(f"spec is malformed: {exc!r}") from exc
        meta = body.get("metadata") or {}
        plan = cls(serial=serial, endpoints=endpoints, name=str(meta.get("name", "")),
                   uid=str(meta.get("uid", "")))
        plan.check(zone)
        return plan

    def check(self, zone: str) -> None:
        if self.serial < 1:
            raise PlanError(f"spec.serial: must be positive, got {self.serial}")
        if not self.endpoints:
            raise PlanError("spec.endpoints: at least one endpoint is required")
        if len(self.endpoints) > MAX_ENDPOINTS:
            raise PlanError(f"spec.endpoints: at most {MAX_ENDPOINTS} endpoints")
        names = [e.name for e in self.endpoints]
        seen: set[str] = set()
        for i, ep in enumerate(self.endpoints):
            where = f"spec.endpoints[{i}]"
            if ep.name in seen:
                raise PlanError(f"{where}.name: duplicate endpoint {ep.name}")
            seen.add(ep.name)
            if not ep.name.endswith("." + zone) or ep.name != ep.name.lower():
                raise PlanError(f"{where}.name: {ep.name} is not a lower-case name in {zone}")
            if not ep.targets or not any(t.weight > 0 for t in ep.targets):
                raise PlanError(f"{where}.targets: needs a target with a positive weight")
            for j, t in enumerate(ep.targets):
                try:
                    ipaddress.ip_address(t.address)
                except ValueError as exc:
                    raise PlanError(f"{where}.targets[{j}].address: {exc}") from exc
        for name in names:
            for other in names:
                if other != name and other.endswith("." + name):
                    raise PlanError(
                        f"spec.endpoints: {other} nests under {name}; CoreDNS would serve "
                        f"{other}'s records as {name}'s"
                    )

    def to_spec(self) -> dict[str, Any]:
        return {
            "serial": self.serial,
            "endpoints": [
                {
                    "name": e.name,
                    "ttl": e.ttl,
                    "targets": [{"address": t.address, "weight": t.weight} for t in e.targets],
                }
                for e in self.endpoints
            ],
        }


def object_name(serial: int) -> str:
    """Plan object names sort by serial and make a repeated serial a create conflict."""
    return f"plan-{serial:010d}"
