"""The HTTP endpoints every component serves: ``/healthz`` and Prometheus ``/metrics``.

Every long-running component (planner, enactors, prober, LB nodes, the cascade's services) calls
``serve`` once at start and ``runner.cleanup()`` on the way out (or wraps its run in ``served``,
which does both), so that Kubernetes probes and Prometheus scrape them all the same way.
``/metrics`` exposes the process's default prometheus_client registry, where each component
registers its metrics at import.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable

import prometheus_client
from aiohttp import web

log = logging.getLogger(__name__)

Health = Callable[[], tuple[bool, str]]
"""Returns (healthy, reason); the reason is the 503 body when unhealthy."""


def make_app(health: Health | None = None) -> web.Application:
    """The application alone, for callers that add routes of their own before serving it."""

    async def healthz(_: web.Request) -> web.Response:
        if health is None:
            return web.Response(text="ok")
        try:
            healthy, reason = health()
        except Exception as exc:  # a broken check is an unhealthy component, not a 500
            log.exception("health check raised")
            healthy, reason = False, f"health check raised: {exc!r}"
        if healthy:
            return web.Response(text="ok")
        return web.Response(status=503, text=reason or "unhealthy")

    async def metrics(_: web.Request) -> web.Response:
        body = prometheus_client.generate_latest(prometheus_client.REGISTRY)
        # aiohttp refuses a charset inside content_type, so the header is set as a whole.
        return web.Response(body=body,
                            headers={"Content-Type": prometheus_client.CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    return app


async def serve(host: str, port: int, health: Health | None = None,
                app: web.Application | None = None) -> web.AppRunner:
    """Start serving ``/healthz`` and ``/metrics`` on ``host:port`` (port 0 picks a free one).

    Stop with ``await runner.cleanup()``. ``app`` is an application from ``make_app`` with more
    routes (the LB nodes add ``/health``); by default a plain one is built.
    """
    runner = web.AppRunner(app or make_app(health), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    log.info("serving /healthz and /metrics on %s", bound_url(runner))
    return runner


@contextlib.asynccontextmanager
async def served(host: str, port: int | None,
                 app: Callable[[], web.Application]) -> AsyncIterator[web.AppRunner | None]:
    """``serve`` what ``app`` builds on ``host:port`` for the block, stopped on the way out
    however the block ends; with ``port`` None nothing is built or served (yields None)."""
    server = None if port is None else await serve(host, port, app=app())
    try:
        yield server
    finally:
        if server is not None:
            await server.cleanup()


def bound_port(runner: web.AppRunner) -> int:
    """The port the runner listens on (the one picked when ``serve`` was given port 0)."""
    address = runner.addresses[0]
    return int(address[1])


def bound_url(runner: web.AppRunner) -> str:
    host, port = runner.addresses[0][:2]
    return f"http://{f'[{host}]' if ':' in str(host) else host}:{port}"
