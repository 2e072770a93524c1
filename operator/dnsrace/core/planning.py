"""What the DNS Planner decides, as pure functions: the lab's endpoints and each plan's targets.

Called by ``components.planner`` with the load-balancer nodes it observed (address, readiness,
reported capacity). One regional plan covers every endpoint so endpoints that share capacity stay
consistent, as in the published design. The enactors walk a plan in order and the regional
endpoint comes last: in the incident the stalled enactor had been retrying several endpoints when
it wrote the regional one, so that one write is what held the stale plan when clean-up ran.
"""

from __future__ import annotations

import dataclasses
import hashlib

from dnsrace.core import plans

REGION = "us-east-1"


@dataclasses.dataclass(frozen=True)
class Node:
    name: str
    address: str
    capacity: int
    """Reported spare capacity, 0 to 100; 0 or unreachable means the node takes no traffic."""


def regional_endpoint(zone: str) -> str:
    return f"dynamodb.{REGION}.{zone}"


def lab_endpoints(zone: str, accounts: int = 8) -> list[str]:
    """Account-specific, FIPS, dual-stack (regional and FIPS) and, last, the regional endpoint."""
    names = []
    for i in range(accounts):
        account = 100000000000 + 7919 * (i + 1)
        names.append(f"{account}.ddb.{REGION}.{zone}")
    names += [
        f"dynamodb-fips.{REGION}.{zone}",
        f"dynamodb.{REGION}.api.{zone}",
        f"dynamodb-fips.{REGION}.api.{zone}",
        regional_endpoint(zone),
    ]
    return names


def _rank(endpoint: str, node: Node) -> str:
    """A stable per-endpoint order, so endpoints spread over nodes but shift with capacity."""
    return hashlib.sha256(f"{endpoint}/{node.name}".encode()).hexdigest()


def make_plan(
    serial: int, endpoints: list[str], nodes: list[Node], *, per_endpoint: int = 3,
    ttl: int = plans.DEFAULT_TTL,
) -> plans.Plan | None:
    """The plan for ``serial``; None when no node has capacity (never plan an empty endpoint)."""
    usable = [n for n in nodes if n.capacity > 0]
    if not usable:
        return None
    top = max(n.capacity for n in usable)
    built = []
    for name in endpoints:
        # The busiest nodes drop out first: rank by capacity, ties broken per endpoint.
        chosen = sorted(usable, key=lambda n: (-n.capacity, _rank(name, n)))[:per_endpoint]
        targets = tuple(
            plans.Target(address=n.address, weight=max(1, round(255 * n.capacity / top)))
            for n in sorted(chosen, key=lambda n: n.address)
        )
        built.append(plans.Endpoint(name=name, targets=targets, ttl=ttl))
    return plans.Plan(serial=serial, endpoints=tuple(built), name=plans.object_name(serial))
