"""``dnsrace instances``: the launched instances, serving on their endpoints once their network
state has propagated.

Who calls it: the CLI (``dnsrace instances``, ``run``), the scenario lab (as a process) and the
tests (``Listeners.on_event`` driven directly; ``run`` against the real API server). Why: the
NLB's health checks must be real HTTP requests that fail for a real reason. An instance whose
network state has not propagated has no network: nothing listens on its endpoint, so a check
gets connection refused; once the Network Manager marks it ``networkReady``, a listener opens
on ``status.endpoint`` and answers ``GET /healthz`` (200 ``ok <name>``) and ``GET /``.

Endpoints: in local mode each instance has a loopback address of its own (Linux routes all of
127/8 to lo, so binding 127.0.20.7:8080 needs no set-up); in kind one pod hosts them all, one
port each, and ``bind_all`` listens on 0.0.0.0:<the endpoint's port>. An Instance deleted (or
no longer ready) closes its listener. A bind that fails (the address in use) is one log line
and is retried every ``retry`` s.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import prometheus_client
from aiohttp import web
from kubernetes_asyncio import client

from dnsrace.components import instancewatch, serving

log = logging.getLogger(__name__)

SERVING = prometheus_client.Gauge(
    "dnsrace_instances_serving", "Instances whose listener is open on their endpoint.")
REQUESTS = prometheus_client.Counter(
    "dnsrace_instance_requests_total",
    "Requests the instances answered, by path: /healthz, /, other.", ["path"])


@dataclasses.dataclass
class Listener:
    """One instance's listener (open, or waiting to bind)."""

    name: str
    uid: str
    host: str
    port: int
    az: str
    runner: web.ServerRunner | None = None
    retry: asyncio.Task[None] | None = None
    failures: int = 0

    @property
    def open(self) -> bool:
        return self.runner is not None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


class Listeners:
    """One listener per ready Instance; an ``instancewatch.Follower``."""

    def __init__(self, *, bind_all: bool = False, retry: float = 3.0,
                 shutdown_timeout: float = 1.0) -> None:
        self.bind_all = bind_all
        self.retry = retry
        self.shutdown_timeout = shutdown_timeout
        self.listeners: dict[str, Listener] = {}
        for path in ("/healthz", "/", "other"):
            REQUESTS.labels(path)

    @property
    def serving(self) -> set[str]:
        """Names of the instances whose listener is open."""
        return {name for name, lis in self.listeners.items() if lis.open}

    def _gauge(self) -> None:
        SERVING.set(sum(lis.open for lis in self.listeners.values()))

    # -- what the watch says -------------------------------------------------------------------

    def _wanted(self, body: Mapping[str, Any]) -> tuple[str, int] | None:
        """Where ``body`` should listen, None when it should not (not launched, not ready,
        no endpoint)."""
        if not (instancewatch.launched(body) and instancewatch.network_ready(body)):
            return None
        endpoint = instancewatch.endpoint_of(body)
        if endpoint is None:
            return None
        host, port = endpoint
        return ("0.0.0.0" if self.bind_all else host), port

    async def on_instance(self, body: Mapping[str, Any]) -> None:
        """An Instance as it is now: open its listener when it is launched and network-ready,
        close it when it is not (or its endpoint moved)."""
        name = instancewatch.name_of(body)
        where = self._wanted(body)
        current = self.listeners.get(name)
        if current is not None and (where is None or (current.host, current.port) != where
                                    or current.uid != instancewatch.uid_of(body)):
            await self._close(name)
            current = None
        if where is None or current is not None:
            return
        az = str(body.get("spec", {}).get("az", ""))
        listener = Listener(name, instancewatch.uid_of(body), where[0], where[1], az)
        self.listeners[name] = listener
        if not await self._bind(listener):
            listener.retry = asyncio.get_running_loop().create_task(self._rebind(listener))

    async def on_deleted(self, body: Mapping[str, Any]) -> None:
        await self._close(instancewatch.name_of(body))

    async def on_list(self, items: list[Mapping[str, Any]]) -> None:
        names = {instancewatch.name_of(b) for b in items}
        for gone in [n for n in self.listeners if n not in names]:
            await self._close(gone)
        for body in items:
            await self.on_instance(body)

    async def on_event(self, kind: str, body: Mapping[str, Any]) -> None:
        if kind == "DELETED":
            await self.on_deleted(body)
        else:
            await self.on_instance(body)

    # -- sockets -------------------------------------------------------------------------------

    def _handler(self, listener: Listener
                 ) -> Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]:
        name = listener.name

        async def handle(request: web.BaseRequest) -> web.StreamResponse:
            if request.path == "/healthz":
                REQUESTS.labels("/healthz").inc()
                return web.Response(text=f"ok {name}")
            if request.path == "/":
                REQUESTS.labels("/").inc()
                return web.Response(text=f"instance {name} in {listener.az or 'its AZ'}, "
                                         f"serving on {listener.address}\n")
            REQUESTS.labels("other").inc()
            return web.Response(status=404, text="not found\n")

        return handle

    async def _bind(self, listener: Listener) -> bool:
        runner = web.ServerRunner(web.Server(self._handler(listener)),
                                  shutdown_timeout=self.shutdown_timeout)
        await runner.setup()
        site = web.TCPSite(runner, listener.host, listener.port)
        try:
            await site.start()
        except BaseException as exc:
            await runner.cleanup()
            if not isinstance(exc, OSError):  # cancelled (the Instance went) or a bug
                raise
            listener.failures += 1
            if listener.failures == 1:
                log.warning("%s cannot listen on %s (%s): retrying every %.0f s",
                            listener.name, listener.address, exc.strerror or exc, self.retry)
            return False
        listener.runner = runner
        if listener.failures:
            log.info("%s listening on %s after %d failed binds", listener.name,
                     listener.address, listener.failures)
        else:
            log.debug("%s listening on %s", listener.name, listener.address)
        self._gauge()
        return True

    async def _rebind(self, listener: Listener) -> None:
        while self.listeners.get(listener.name) is listener:
            await asyncio.sleep(self.retry)
            if self.listeners.get(listener.name) is not listener:
                return
            if await self._bind(listener):
                listener.retry = None
                return

    async def _close(self, name: str) -> None:
        listener = self.listeners.pop(name, None)
        if listener is None:
            return
        if listener.retry is not None:
            listener.retry.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener.retry
        if listener.runner is not None:
            runner, listener.runner = listener.runner, None
            await runner.cleanup()
            log.debug("%s stopped listening on %s", name, listener.address)
        self._gauge()

    async def close(self) -> None:
        """Close every listener (at once)."""
        await asyncio.gather(*(self._close(name) for name in list(self.listeners)))


async def run(api: client.ApiClient, namespace: str, stop: asyncio.Event, *,
              http_port: int | None, http_host: str = "0.0.0.0", bind_all: bool = False,
              retry: float = 3.0,
              started: Callable[[Listeners], None] | None = None) -> Listeners:
    """Serve the namespace's ready instances until ``stop``; every listener closed on the way
    out. ``started`` gets the ``Listeners`` once they exist."""
    listeners = Listeners(bind_all=bind_all, retry=retry)
    server = None
    if http_port is not None:
        server = await serving.serve(http_host, http_port)
    log.info("instance hosts: serving each network-ready Instance of %s on %s", namespace,
             "0.0.0.0:<its endpoint's port>" if bind_all else "its endpoint")
    if started is not None:
        started(listeners)
    follow = asyncio.create_task(instancewatch.follow(api, namespace, listeners, stop))
    try:
        await stop.wait()
        return listeners
    finally:
        follow.cancel()
        await asyncio.gather(follow, return_exceptions=True)
        count = len(listeners.serving)
        await listeners.close()
        log.info("closed %d listeners", count)
        if server is not None:
            await server.cleanup()
