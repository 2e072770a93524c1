"""Following the namespace's ``Instance`` objects: one list, then a watch resumed from its
``resourceVersion``, a new list when the watch expired (410 Gone).

Who calls it: the Network Manager (``components.netmanager``: which Instances were launched) and
the instance hosts (``components.instancehost``: which ones are network-ready, so they serve).
Why a plain watch rather than kopf: both need the first list as a whole (the Network Manager
enqueues the Instances launched while it was down in ``launchedAt`` order, not in the order
kopf would hand them over one by one), both only read Instances (no handlers, no progress
annotations), and an outage of the API server must cost one log line and a back-off, never the
process.

A ``Follower`` gets ``on_list(items)`` after every (re)list with every Instance there is (the
ones it knew and that are gone were deleted meanwhile), then ``on_event(type, body)`` for each
ADDED, MODIFIED and DELETED event. Its calls are awaited one at a time, in order.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any, Protocol

from kubernetes_asyncio import client, watch

from dnsrace.components import outages, retrying
from dnsrace.core import instances

log = logging.getLogger(__name__)

WATCH_SECONDS = 300
"""Server-side timeout of one watch request; the watch is resumed from where it was."""

Body = Mapping[str, Any]


class Follower(Protocol):
    async def on_list(self, items: list[Body]) -> None: ...

    async def on_event(self, kind: str, body: Body) -> None: ...


# -- reading an Instance ---------------------------------------------------------------------


def name_of(body: Body) -> str:
    return str(body.get("metadata", {}).get("name", ""))


def uid_of(body: Body) -> str:
    return str(body.get("metadata", {}).get("uid", ""))


def status_of(body: Body) -> Mapping[str, Any]:
    status = body.get("status")
    return status if isinstance(status, Mapping) else {}


def launched(body: Body) -> bool:
    return status_of(body).get("phase") == instances.LAUNCHED


def network_ready(body: Body) -> bool:
    return status_of(body).get("networkReady") is True


def launched_at(body: Body) -> float | None:
    value = status_of(body).get("launchedAt")
    return float(value) if isinstance(value, int | float) else None


def endpoint_of(body: Body) -> tuple[str, int] | None:
    """``status.endpoint`` as (host, port), None when it is missing or not ``host:port``."""
    text = status_of(body).get("endpoint")
    if not isinstance(text, str):
        return None
    host, _, port = text.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    return host, int(port)


# -- the list and the watch ------------------------------------------------------------------


async def follow(api: client.ApiClient, namespace: str, follower: Follower,
                 stop: asyncio.Event, *, backoff: outages.Backoff | None = None,
                 synced: asyncio.Event | None = None) -> None:
    """List the namespace's Instances and watch them until ``stop``; ``synced`` is set after
    the first list was handed over. An unreachable API server is one log line (and one when it
    answers again) and a back-off; any other failure is logged with its traceback and retried
    the same way: this never raises but for cancellation."""
    co = client.CustomObjectsApi(api)
    backoff = backoff or outages.Backoff()
    version: str | None = None
    down: str | None = None
    while not stop.is_set():
        try:
            if version is None:
                listed = await co.list_namespaced_custom_object(
                    instances.GROUP, instances.VERSION, namespace, instances.PLURAL)
                version = str(listed["metadata"]["resourceVersion"])
                if down is not None:
                    log.info("Instances listed again (API server back after: %s)", down)
                    down = None
                backoff.reset()
                await follower.on_list(list(listed.get("items") or []))
                if synced is not None:
                    synced.set()
            w = watch.Watch()
            try:
                async for event in w.stream(
                        co.list_namespaced_custom_object, instances.GROUP, instances.VERSION,
                        namespace, instances.PLURAL, resource_version=version,
                        allow_watch_bookmarks=True, timeout_seconds=WATCH_SECONDS,
                        _request_timeout=WATCH_SECONDS + 30):
                    kind = str(event.get("type", ""))
                    body = event.get("raw_object")
                    if not isinstance(body, Mapping):
                        continue
                    version = str(body.get("metadata", {}).get("resourceVersion") or version)
                    if down is not None:
                        log.info("watching Instances again (API server back after: %s)", down)
                        down = None
                        backoff.reset()
                    if kind in ("ADDED", "MODIFIED", "DELETED"):
                        await follower.on_event(kind, body)
            finally:
                await w.close()
        except asyncio.CancelledError:
            raise
        except client.ApiException as exc:
            if exc.status == 410:  # the watch's version is gone: list again
                log.info("Instance watch expired (%s): listing again", exc.reason)
                version = None
                continue
            what = outages.describe(exc)
            if what is None:
                refused = f"refused: {exc.status} {exc.reason}"
                if down != refused:  # once, not at every retry (a CRD or a Role missing)
                    log.error("listing or watching Instances %s; retrying with back-off",
                              refused)
                down = refused
            elif down is None:
                log.warning("Instances not readable, %s; retrying with back-off", what)
                down = what
            await retrying.pause(stop, backoff.next())
        except Exception as exc:
            what = outages.describe(exc)
            if what is None:
                log.exception("following Instances failed; retrying")
                down = down or repr(exc)
            elif down is None:
                log.warning("Instances not readable, %s; retrying with back-off", what)
                down = what
            await retrying.pause(stop, backoff.next())
