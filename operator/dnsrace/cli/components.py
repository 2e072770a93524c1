"""``dnsrace planner|enactor|prober|lbnode|ddb-client|repair``: run one component in the
foreground.

Each command only parses options, sets up logging and signals, and calls the component's
``run``; SIGTERM and SIGINT set the stop flag so the component shuts down cleanly (its
EndpointSlice or status written, files flushed).

A component's modules are imported inside its command: every ``dnsrace`` process starts by
importing the CLI, and a lab starts about twenty of them on two cores (after a crash too), so
each pays only for its own dependencies (the Kubernetes client, kopf, aiobotocore).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import signal
import urllib.error
import urllib.request
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any

import typer

from dnsrace import settings as settings_mod
from dnsrace.cli import console
from dnsrace.core import planning, scrape
from dnsrace.core.safeguards import Safeguards

SafeguardsOpt = Annotated[
    str | None,
    typer.Option("--safeguards", help="off, on, or a comma list of fencing, protect-active, "
                 "no-empty, self-heal, single-writer, serve-stale (default: $DNSRACE_SAFEGUARDS, "
                 "else off)"),
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
    from dnsrace.components import planner

    cfg = _settings()
    _serve(lambda stop: planner.run(cfg, stop))


def enactor_cmd(
    name: Annotated[str, typer.Option("--name", help="This enactor's name, e.g. enactor-a")],
    safeguards: SafeguardsOpt = None,
) -> None:
    """Apply the newest DnsPlan to the DNS etcd, endpoint by endpoint, then clean up."""
    from dnsrace.components import enactor

    cfg = _settings(safeguards)
    _serve(lambda stop: enactor.run(cfg, name, stop))


def prober_cmd(
    out: Annotated[Path, typer.Option(help="JSON-lines file the answers are appended to")] =
    Path("prober.jsonl"),
    rate: Annotated[float, typer.Option(help="Rounds per second (each queries every "
                                        "endpoint's A and TXT records)")] = 10.0,
) -> None:
    """Query every lab endpoint through CoreDNS at a fixed rate and record the answers."""
    from dnsrace.components import prober

    cfg = _settings()
    endpoints = planning.lab_endpoints(cfg.dns.zone, cfg.lab.accounts)
    port = cfg.lab.http_port or None
    _serve(lambda stop: prober.run(endpoints, cfg.dns.server_host, cfg.dns.server_port, out,
                                   rate, stop, http_port=port))


def _with_ddb(cfg: settings_mod.Settings, **changes: Any) -> settings_mod.Settings:
    """``cfg`` with the given ``ddb`` fields replaced (None leaves a field as it is), validated:
    a bad value ends the command with the setting's name (exit 2)."""
    given = {k: v for k, v in changes.items() if v is not None}
    ddb = dataclasses.replace(cfg.ddb, **given)
    try:
        ddb.validate(cfg.dns.zone)
    except ValueError as exc:
        console.fail(str(exc), code=2)
    return dataclasses.replace(cfg, ddb=ddb)


def _settings_or_fail() -> settings_mod.Settings:
    try:
        return _settings()
    except ValueError as exc:  # a DNSRACE_* variable that does not parse
        console.fail(str(exc), code=2)
        raise  # not reached: fail exits


def lbnode_cmd(
    name: Annotated[str, typer.Option("--name", help="lbnode-<n>; serves on 127.0.10.<n+1>")],
    backend: Annotated[str | None, typer.Option(
        help="host:port of DynamoDB to forward the DynamoDB API to (default: "
             "$DNSRACE_DDB_BACKEND; without either, the node serves /health only)")] = None,
    capacity: Annotated[int | None, typer.Option(
        help="requests forwarded at once (ddb.lb_capacity)")] = None,
    wait: Annotated[float | None, typer.Option(
        help="seconds a request may wait for a slot before it is throttled (ddb.lb_wait)")]
    = None,
) -> None:
    """One load-balancer node: a health endpoint on its own address, registered in the
    dynamodb-lb Service's EndpointSlices; with a backend, the DynamoDB service's front door."""
    from dnsrace.components import lbnode

    cfg = _settings_or_fail()
    host, port = None, None
    if backend is not None:
        host, _, raw_port = backend.rpartition(":")
        if not host or not raw_port.isdigit():
            console.fail(f"--backend must be host:port, got {backend!r}", code=2)
        port = int(raw_port)
    cfg = _with_ddb(cfg, backend_host=host, backend_port=port, lb_capacity=capacity,
                    lb_wait=wait, lb_forward=True if backend is not None else None)
    try:
        index = int(name.rsplit("-", 1)[1])
    except (IndexError, ValueError):
        console.fail(f"--name must look like lbnode-<n>, got {name!r}", code=2)
    try:
        if cfg.kube.in_cluster:  # a pod behind the Service: Kubernetes lists it in the slices
            _serve(lambda stop: lbnode.run(name, index, None, cfg.kube.namespace, stop,
                                           address="0.0.0.0", register_slice=False,
                                           ddb=cfg.ddb))
        else:
            _serve(lambda stop: lbnode.run(name, index, cfg.api_kubeconfig,
                                           cfg.kube.namespace, stop, ddb=cfg.ddb))
    except lbnode.BackendMissing as exc:
        console.fail(str(exc))


def ddbclient_cmd(
    out: Annotated[Path, typer.Option(help="JSON-lines file each request is appended to")] =
    Path("ddb-client.jsonl"),
    workers: Annotated[int | None, typer.Option(
        help="concurrent workers (default: ddb.client_workers, $DNSRACE_DDB_WORKERS)")] = None,
    rate: Annotated[float | None, typer.Option(
        help="requests per second per worker; 0 is back to back (ddb.client_rate)")] = None,
    endpoint: Annotated[str | None, typer.Option(
        help="name to resolve through the lab's CoreDNS; must be in the lab zone "
             "(ddb.endpoint, $DNSRACE_DDB_ENDPOINT)")] = None,
    port: Annotated[int, typer.Option(help="the LB nodes' port")] = scrape.LBNODE_PORT,
) -> None:
    """DynamoDB clients (aiobotocore) that resolve the regional endpoint through CoreDNS for
    every new connection, and record the outcome of every request."""
    cfg = _with_ddb(_settings_or_fail(), client_workers=workers, client_rate=rate,
                    endpoint=endpoint)
    http_port = cfg.lab.http_port or None
    from dnsrace.components import ddbclient

    _serve(lambda stop: ddbclient.run(cfg, out, stop, port=port, http_port=http_port))


def repair_cmd() -> None:
    """The manual repair: put every endpoint on the newest plan, and say what changed."""
    from dnsrace.components import repairing

    cfg = _settings()
    changed = asyncio.run(repairing.repair(cfg))
    if not changed:
        console.console.print("nothing to repair: every endpoint is on the newest plan")
        return
    console.table("repair", ["endpoint", "was on plan", "now on plan"],
                  [[n, str(old) if old is not None else "none", str(new)]
                   for n, old, new in changed])


def post_step(url: str, timeout: float, component: str, command: str,
              action: str) -> dict[str, object]:
    """A manual step (``dnsrace dwfm restart``, ``dnsrace nlb failover``): POST to the running
    component's HTTP port and return its JSON answer; a refusal or no answer ends the command
    with exit 1 and says which."""
    request = urllib.request.Request(url, data=b"", method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            body: dict[str, object] = json.loads(resp.read())
            return body
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")
        with contextlib.suppress(ValueError, AttributeError):
            detail = str(json.loads(detail).get("error", detail))
        console.fail(f"{component} at {url} refused the {action} ({exc.code}): {detail}")
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        console.fail(f"cannot reach {component} at {url}: {getattr(exc, 'reason', exc)} (is "
                     f"`{command}` running, with DNSRACE_HTTP_PORT as given here?)")
    raise AssertionError("not reached")
