"""``dnsrace network-manager`` and ``dnsrace instances``: the cascade's Network Manager and the
hosts of the launched instances, run in the foreground until SIGTERM or Ctrl-C.

The commands only parse options and call the components (``components.netmanager``,
``components.instancehost``); bad options exit 2 naming the option.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Annotated

import typer

from dnsrace import settings as settings_mod
from dnsrace.cli import components, console
from dnsrace.core import instances, propagation

log = logging.getLogger(__name__)

_P = propagation.PropagationParams()
_T = propagation.PropagationThrottle()

PortOpt = Annotated[int | None, typer.Option(
    "--port", help="HTTP port of /healthz and /metrics (default: $DNSRACE_HTTP_PORT; "
                   "0: not served)")]


def _http_port(cfg: settings_mod.Settings, port: int | None) -> int | None:
    """``--port`` when given, else the lab's ``DNSRACE_HTTP_PORT``; 0 is none."""
    chosen = cfg.lab.http_port if port is None else port
    if not 0 <= chosen < 65536:
        console.fail(f"--port must be a TCP port (0 to 65535), got {chosen}", code=2)
    return chosen or None


def network_manager_cmd(
    rate: Annotated[float, typer.Option(
        help="network states propagated per second")] = _P.rate,
    max_backlog: Annotated[int, typer.Option(
        help="propagation-throttle's limit: /admit refuses while this many states wait "
             "(with the launches already admitted)")] = _T.max_backlog,
    safeguards: Annotated[str | None, typer.Option(
        "--safeguards", help="off, on, or a comma list; propagation-throttle is the Network "
        "Manager's (default: $DNSRACE_SAFEGUARDS, else off)")] = None,
    out: Annotated[Path, typer.Option(
        help="JSON-lines file the figures are appended to, one line a second")]
    = Path("netmanager.jsonl"),
    port: PortOpt = None,
) -> None:
    """Run EC2's Network Manager until SIGTERM: each launched Instance's network state
    propagated at --rate, then marked networkReady; POST /admit is the launcher's gate."""
    from dnsrace.components import netmanager  # the client libraries only when it runs
    from dnsrace.kube import client as kube_client

    cfg = components._settings_or_fail()
    http_port = _http_port(cfg, port)
    try:
        throttle = netmanager.throttle_on(safeguards if safeguards is not None
                                          else cfg.lab.safeguards)
        options = netmanager.options(rate=rate, max_backlog=max_backlog, throttle=throttle,
                                     out=out, http_port=http_port)
    except ValueError as exc:
        console.fail(str(exc), code=2)
        return

    async def main(stop: asyncio.Event) -> None:
        try:
            api = await kube_client.api_client(cfg.api_kubeconfig)
        except Exception as exc:  # no kubeconfig, or a broken one
            log.error("no Kubernetes client (%s): %s", cfg.api_kubeconfig or "in-cluster", exc)
            raise SystemExit(1) from None
        try:
            await netmanager.run(options, api, cfg.kube.namespace, stop)
        finally:
            await api.close()

    components._serve(main)


def instances_cmd(
    bind_all: Annotated[bool, typer.Option(
        "--bind-all", help="listen on 0.0.0.0:<the endpoint's port> instead of the endpoint's "
        "own address (kind: one pod hosts every instance, endpoint style port)")] = False,
    retry: Annotated[float, typer.Option(
        help="seconds between two attempts to bind an endpoint that is in use")] = 3.0,
    port: PortOpt = None,
) -> None:
    """Serve every launched, network-ready Instance on its endpoint (GET /healthz, GET /)
    until SIGTERM; nothing listens on an instance's endpoint before its network is ready."""
    from dnsrace.components import instancehost
    from dnsrace.kube import client as kube_client

    cfg = components._settings_or_fail()
    http_port = _http_port(cfg, port)
    if not retry > 0:
        console.fail(f"--retry must be more than 0 s, got {retry}", code=2)
    if http_port == instances.ADDRESS_PORT and not bind_all:
        # Linux refuses a bind of 127.0.20.7:8080 while 0.0.0.0:8080 listens.
        console.fail(f"--port {http_port} is the instances' own port (endpoint style address: "
                     f"each listens on its address:{instances.ADDRESS_PORT}); serve /healthz "
                     "on another (DNSRACE_HTTP_PORT, 18210 in the lab)", code=2)

    async def main(stop: asyncio.Event) -> None:
        try:
            api = await kube_client.api_client(cfg.api_kubeconfig)
        except Exception as exc:
            log.error("no Kubernetes client (%s): %s", cfg.api_kubeconfig or "in-cluster", exc)
            raise SystemExit(1) from None
        try:
            await instancehost.run(api, cfg.kube.namespace, stop, http_port=http_port,
                                   bind_all=bind_all, retry=retry)
        finally:
            await api.close()

    components._serve(main)
