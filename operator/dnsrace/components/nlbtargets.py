"""The NLB's targets: which Instances it registers in the core, and where they serve.

Who calls it: ``components.nlbctl`` (its ``Runner`` feeds ``Targets`` the Instance list and
watch events), ``nlbprobe`` and ``nlbrecord`` (``split_endpoint``). Why apart from the runner:
deciding what an Instance object stands for is plain bookkeeping over the core, with no I/O;
the list-then-watch that reads the objects stays with the runner.

An Instance is a target as soon as its ``status.phase`` is ``Launched`` with an endpoint and
an AZ, before its network state has propagated (as NLB did: that is what makes the checks flap
by themselves); a deleted Instance is deregistered.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from dnsrace.core import instances, nlb

# The NLB's lines keep the name they always had: operators filter its log on it.
log = logging.getLogger("dnsrace.components.nlbctl")


@dataclasses.dataclass(frozen=True)
class Member:
    """A launched Instance as the NLB sees it: a target."""

    name: str
    az: str
    endpoint: str
    """``host:port`` the instance serves on."""


def member(obj: Mapping[str, Any]) -> Member | None:
    """The target an Instance object stands for: None unless it is Launched, with an endpoint
    and an AZ, and not being deleted."""
    meta = obj.get("metadata") or {}
    status = obj.get("status") or {}
    spec = obj.get("spec") or {}
    if meta.get("deletionTimestamp") or status.get("phase") != instances.LAUNCHED:
        return None
    name, az, endpoint = meta.get("name"), spec.get("az"), status.get("endpoint")
    if not (isinstance(name, str) and isinstance(az, str) and isinstance(endpoint, str)
            and name and az and endpoint):
        return None
    return Member(name, az, endpoint)


def split_endpoint(endpoint: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` too) -> (host, port); a ValueError when it is neither."""
    host, sep, port = endpoint.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"endpoint {endpoint!r} is not host:port")
    return host, int(port)


class Targets:
    """The registered members, kept in step with the core's registrations."""

    def __init__(self, core: nlb.Nlb, clock: Callable[[], float]) -> None:
        self.core = core
        self.clock = clock
        self.members: dict[str, Member] = {}
        self.synced = False
        """True once the Instances were listed: before, the record is not touched."""

    def _add(self, m: Member) -> None:
        current = self.members.get(m.name)
        if current == m:
            return
        if current is not None:  # moved (a new endpoint): a new registration
            self.core.deregister(m.name)
        self.core.register(m.name, m.az, self.clock())
        self.members[m.name] = m
        log.debug("target %s registered in %s at %s", m.name, m.az, m.endpoint)

    def _remove(self, name: str) -> None:
        if self.members.pop(name, None) is not None:
            self.core.deregister(name)
            log.debug("target %s deregistered", name)

    def sync(self, objects: Iterable[Mapping[str, Any]]) -> None:
        """A full list of Instances: register the launched ones not yet registered,
        deregister those gone; registered ones keep their health."""
        found = {m.name: m for m in (member(o) for o in objects) if m is not None}
        for name in set(self.members) - set(found):
            self._remove(name)
        for m in found.values():
            self._add(m)
        self.synced = True

    def event(self, kind: str, obj: Mapping[str, Any]) -> None:
        """One watch event of an Instance."""
        name = (obj.get("metadata") or {}).get("name")
        if not isinstance(name, str):
            return
        m = None if kind == "DELETED" else member(obj)
        if m is None:
            self._remove(name)
        else:
            self._add(m)

    @property
    def endpoints(self) -> dict[str, str]:
        return {name: m.endpoint for name, m in self.members.items()}
