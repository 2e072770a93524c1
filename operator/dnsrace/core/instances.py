"""The ``Instance`` resource (dnsrace.io/v1alpha1): names, endpoints, conditions, status.

Who calls it: ``components.launcher`` (it creates an Instance on a request's first attempt and
writes its status until it is launched), the Network Manager (``NetworkReady``) and the instance
hosts (``status.endpoint``), and the tests. Why one pure module: the name of a request, the
address an instance serves on and the merging of conditions must be computed the same way by
every component that touches an Instance, and be tested without a cluster. The CRD is
``manifests/crds/instances.dnsrace.io.yaml`` (a unit test keeps the two in step); the contract
between the components is in docs/cascade.md ("The Instance resource").

Numbering: the contract numbers launch requests from 1 (``spec.request``, the name
``i-000001``); ``core.launching`` counts them from 0 (``Attempt.request``): ``number_of`` is the
one place that converts.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Mapping, Sequence
from typing import Any

from dnsrace.core import launching

GROUP = "dnsrace.io"
VERSION = "v1alpha1"
PLURAL = "instances"
SINGULAR = "instance"
KIND = "Instance"
SHORT_NAME = "inst"
API_VERSION = f"{GROUP}/{VERSION}"

AZ_LABEL = "dnsrace.io/az"
"""Label holding the Instance's AZ (``spec.az``), for selecting one AZ's instances."""

PENDING = "Pending"
LAUNCHED = launching.LAUNCHED
GAVE_UP = launching.GAVE_UP
PHASES = (PENDING, LAUNCHED, GAVE_UP)
"""``status.phase`` values."""
REASONS = ("", launching.INSUFFICIENT_CAPACITY, launching.REQUEST_LIMIT_EXCEEDED)
"""``status.reason`` values: the last failed attempt's reason, empty when none failed."""

CONDITION_LAUNCHED = "Launched"
"""Condition written by the launcher."""
CONDITION_NETWORK_READY = "NetworkReady"
"""Condition written by the Network Manager, once the instance is Launched."""

ADDRESS = "address"
"""Endpoint style of local mode: one loopback address per instance, port ``ADDRESS_PORT``."""
PORT = "port"
"""Endpoint style of kind: one host (the pod hosting every instance), one port per instance."""
ENDPOINT_STYLES = (ADDRESS, PORT)
ADDRESS_PORT = 8080
PORT_BASE = 20000
PORT_SPAN = 20000
"""Style ``port``: request n serves on ``base + n % PORT_SPAN``."""

_NAME = re.compile(r"^i-(\d{6,})$")


def number_of(attempt: launching.Attempt, offset: int = 0) -> int:
    """The contract's request number (from 1) of a ``core.launching`` attempt (counted from 0);
    ``offset`` shifts it past the requests of an earlier run (the highest ``spec.request``
    already in the namespace), so a restarted launcher never reuses a name."""
    return attempt.request + 1 + offset


def name_of(request: int) -> str:
    """``i-%06d`` of the request number: ``name_of(42) == "i-000042"``."""
    if request < 1:
        raise ValueError(f"request numbers start at 1, got {request}")
    return f"i-{request:06d}"


def request_of(name: str) -> int | None:
    """The request number an Instance's name carries, None when it is not such a name."""
    m = _NAME.match(name)
    return int(m.group(1)) if m and int(m.group(1)) >= 1 else None


def endpoint_for(request: int, style: str = ADDRESS, host: str | None = None,
                 base: int = PORT_BASE) -> str:
    """``host:port`` request ``request`` serves on. ``address``: its own loopback address,
    ``127.0.{20 + (n-1)//250}.{1 + (n-1)%250}:8080`` (up to request 59,000, in 127.0.255;
    beyond, a ValueError); ``port``: ``<host>:<base + n % 20000>``."""
    if request < 1:
        raise ValueError(f"request numbers start at 1, got {request}")
    if style == ADDRESS:
        third, fourth = 20 + (request - 1) // 250, 1 + (request - 1) % 250
        if third > 255:
            raise ValueError(f"request {request} has no loopback address of its own "
                             "(style address ends at request 59,000): use style port")
        return f"127.0.{third}.{fourth}:{ADDRESS_PORT}"
    if style == PORT:
        if not host:
            raise ValueError("endpoint style port needs a host (--endpoint-host)")
        port = base + request % PORT_SPAN
        if not 0 < port < 65536:
            raise ValueError(f"endpoint port {port} (base {base}) is not a TCP port")
        return f"{host}:{port}"
    raise ValueError(f"unknown endpoint style {style!r}: use one of {', '.join(ENDPOINT_STYLES)}")


def timestamp(t: float) -> str:
    """Unix seconds as a Kubernetes date-time (UTC, whole seconds)."""
    return datetime.datetime.fromtimestamp(t, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def condition(type_: str, status: bool | str, reason: str, message: str,
              t: float) -> dict[str, Any]:
    """A condition as the CRD holds it; ``status`` True/False or "Unknown"; ``t`` in Unix s."""
    value = status if isinstance(status, str) else ("True" if status else "False")
    if value not in ("True", "False", "Unknown"):
        raise ValueError(f"condition status must be True, False or Unknown, got {status!r}")
    return {"type": type_, "status": value, "reason": reason or type_,
            "message": message[:32000], "lastTransitionTime": timestamp(t)}


def merge_condition(conditions: Sequence[Mapping[str, Any]] | None,
                    new: Mapping[str, Any]) -> list[dict[str, Any]]:
    """``conditions`` with ``new`` in place of the condition of its type (appended when there is
    none). The old ``lastTransitionTime`` is kept when the status did not change: it says when
    the status last changed, not when it was last written. The others are left as they are."""
    out: list[dict[str, Any]] = []
    placed = False
    for old in conditions or ():
        if old.get("type") != new["type"]:
            out.append(dict(old))
            continue
        merged = dict(new)
        if old.get("status") == new["status"] and old.get("lastTransitionTime"):
            merged["lastTransitionTime"] = old["lastTransitionTime"]
        out.append(merged)
        placed = True
    if not placed:
        out.append(dict(new))
    return out


def body(request: int, az: str) -> dict[str, Any]:
    """The Instance the launcher creates on a request's first attempt (no status yet)."""
    if az not in launching.AZS:
        raise ValueError(f"unknown AZ {az!r}: use one of {', '.join(launching.AZS)}")
    return {"apiVersion": API_VERSION, "kind": KIND,
            "metadata": {"name": name_of(request), "labels": {AZ_LABEL: az}},
            "spec": {"az": az, "request": request}}


def _launched_message(attempt: launching.Attempt) -> str:
    tries = f"{attempt.attempt} attempt" + ("s" if attempt.attempt != 1 else "")
    return (f"launched on {attempt.droplet} in {attempt.az} at attempt {attempt.attempt} "
            f"({tries}, {attempt.waited:.1f} s after the request)")


def _failed_message(attempt: launching.Attempt, retry_after: float | None) -> str:
    why = {launching.INSUFFICIENT_CAPACITY: f"no droplet in {attempt.az} holds a valid lease "
                                            "with a free slot",
           launching.REQUEST_LIMIT_EXCEEDED: "the launch could be placed but was refused "
                                             "by the propagation throttle"}.get(
        attempt.reason, attempt.reason or "refused")
    head = f"attempt {attempt.attempt} failed {attempt.reason}: {why}"
    if attempt.outcome == launching.GAVE_UP:
        return f"{head}; gave up {attempt.waited:.1f} s after the request"
    if retry_after is not None:
        return f"{head}; tried again in about {retry_after:g} s"
    return head


def status_patch(attempt: launching.Attempt, conditions: Sequence[Mapping[str, Any]] | None,
                 *, endpoint: str | None = None,
                 retry_after: float | None = None) -> dict[str, Any]:
    """The merge patch of ``status`` one attempt makes (``{"status": {...}}``).

    A failed attempt: ``Pending`` (or ``GaveUp``), the attempts, the reason, the ``Launched``
    condition False with that reason. A launch: ``Launched``, the droplet, ``endpoint``,
    ``launchedAt`` and the condition True; ``reason`` is left out, so it keeps the last failed
    attempt's (a merge patch leaves what it does not name). ``conditions`` is the list the
    launcher last wrote (it is the only writer until the launch)."""
    if attempt.outcome == launching.LAUNCHED:
        if endpoint is None or attempt.droplet is None:
            raise ValueError("a launch's status needs its droplet and endpoint")
        status: dict[str, Any] = {
            "phase": LAUNCHED, "attempts": attempt.attempt, "droplet": attempt.droplet,
            "endpoint": endpoint, "launchedAt": round(attempt.t, 3),
            "conditions": merge_condition(conditions, condition(
                CONDITION_LAUNCHED, True, LAUNCHED, _launched_message(attempt), attempt.t)),
        }
        return {"status": status}
    phase = GAVE_UP if attempt.outcome == launching.GAVE_UP else PENDING
    cond_reason = GAVE_UP if phase == GAVE_UP else attempt.reason
    return {"status": {
        "phase": phase, "attempts": attempt.attempt, "reason": attempt.reason,
        "conditions": merge_condition(conditions, condition(
            CONDITION_LAUNCHED, False, cond_reason, _failed_message(attempt, retry_after),
            attempt.t)),
    }}


def event_for(attempt: launching.Attempt,
              retry_after: float | None = None) -> tuple[str, str, str]:
    """(type, reason, message) of the Event an attempt writes on its Instance: Normal
    ``Launched``, or Warning with the failure's reason (``InsufficientCapacity``,
    ``RequestLimitExceeded``), a give-up included."""
    if attempt.outcome == launching.LAUNCHED:
        return "Normal", LAUNCHED, _launched_message(attempt)
    return "Warning", attempt.reason or GAVE_UP, _failed_message(attempt, retry_after)
