"""``dnsrace planner|enactor|prober|lbnode|repair``: run one component in the foreground.

Each command only parses options, sets up logging and signals, and calls the component's
``run``; SIGTERM and SIGINT set the stop flag so the component shuts down cleanly (its
EndpointSlice or status written, files flushed).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any

import typer

from dnsrace import settings as settings_mod
from dnsrace.cli import console
from dnsrace.components import enactor, lbnode, planner, prober, repairing
from dnsrace.core import planning
from dnsrace.core.safeguards import Safeguards

SafeguardsOpt = Annotated[
    str | None,
    typer.Option("--safeguards", help="off, on, or a comma list of fencing, protect-active, "
                 "no-empty, self-heal, single-writer (default: $DNSRACE_SAFEGUARDS, else off)"),
]


def _settings(safeguards: str | None = None) -> settings_mod.Settings:
    cfg = settings_mod.Settings.from_env()
    if safeguards is not None:
        try:
            Safeguards.parse(safeguards)
        except ValueError as exc:
            console.fail(str(exc), code=2)
        cfg = dataclasses.replace(cfg, lab=dataclasses.replace(cfg.lab, safeguards=safeguards))
    return cfg


def _serve(main: Callable[[asyncio.Event], Coroutine[Any, Any, None]]) -> None:
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("kopf").setLevel(logging.WARNING)

    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await main(stop)

    asyncio.run(runner())


def planner_cmd() -> None:
    """Create a new DnsPlan every interval and whenever the LB pool changes."""
    cfg = _settings()
    _serve(lambda stop: planner.run(cfg, stop))


def enactor_cmd(
    name: Annotated[str, typer.Option("--name", help="This enactor's name, e.g. enactor-a")],
    safeguards: SafeguardsOpt = None,
) -> None:
    """Apply the newest DnsPlan to the DNS etcd, endpoint by endpoint, then clean up."""
    cfg = _settings(safeguards)
    _serve(lambda stop: enactor.run(cfg, name, stop))


def prober_cmd(
    out: Annotated[Path, typer.Option(help="JSON-lines file the answers are appended to")] =
    Path("prober.jsonl"),
    rate: Annotated[float, typer.Option(help="Rounds per second (each queries every "
                                        "endpoint's A and TXT records)")] = 10.0,
) -> None:
    """Query every lab endpoint through CoreDNS at a fixed rate and record the answers."""
    cfg = _settings()
    endpoints = planning.lab_endpoints(cfg.dns.zone, cfg.lab.accounts)
    port = cfg.lab.http_port or None
    _serve(lambda stop: prober.run(endpoints, cfg.dns.server_host, cfg.dns.server_port, out,
                                   rate, stop, http_port=port))


def lbnode_cmd(
    name: Annotated[str, typer.Option("--name", help="lbnode-<n>; serves on 127.0.10.<n+1>")],
) -> None:
    """One load-balancer node: a health endpoint on its own address, registered in the
    dynamodb-lb Service's EndpointSlices."""
    cfg = _settings()
    try:
        index = int(name.rsplit("-", 1)[1])
    except (IndexError, ValueError):
        console.fail(f"--name must look like lbnode-<n>, got {name!r}", code=2)
    if cfg.kube.in_cluster:  # a pod behind the Service: Kubernetes lists it in the slices
        _serve(lambda stop: lbnode.run(name, index, None, cfg.kube.namespace, stop,
                                       address="0.0.0.0", register_slice=False))
    else:
        _serve(lambda stop: lbnode.run(name, index, cfg.api_kubeconfig, cfg.kube.namespace,
                                       stop))


def repair_cmd() -> None:
    """The manual repair: put every endpoint on the newest plan, and say what changed."""
    cfg = _settings()
    changed = asyncio.run(repairing.repair(cfg))
    if not changed:
        console.console.print("nothing to repair: every endpoint is on the newest plan")
        return
    console.table("repair", ["endpoint", "was on plan", "now on plan"],
                  [[n, str(old) if old is not None else "none", str(new)]
                   for n, old, new in changed])
