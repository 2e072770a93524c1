"""``dnsrace launcher``: EC2's launch requests, run in the foreground until SIGTERM or Ctrl-C.

Each request becomes an ``Instance`` in the lab's namespace; it is placed on a droplet holding
a DWFM lease (read from DWFM's ``GET /leases``) or fails ``InsufficientCapacity``, and with
``propagation-throttle`` it needs the Network Manager's ``POST /admit`` or fails
``RequestLimitExceeded``. The command only parses options and calls ``components.launcher``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from dnsrace.cli import components, console
from dnsrace.core import instances
from dnsrace.core import launching as core_launching

_L = core_launching.LauncherParams()
LIFETIME = 60.0
"""The command's instance lifetime: a minute of arrivals (60 instances at the default rate)
makes the fleet the NLB balances, whatever happened before the outage."""


def launcher_cmd(
    rate: Annotated[float, typer.Option(help="new launch requests per second (round robin "
                                        "over the 3 AZs)")] = _L.rate,
    slots: Annotated[int, typer.Option(help="instances one droplet can host")] = _L.slots,
    retry_after: Annotated[float, typer.Option(
        help="seconds after which a failed request is tried again (jittered by +-50 %)")]
    = _L.retry_after,
    patience: Annotated[float | None, typer.Option(
        help="seconds after which a request never placed is given up (default: never)")]
    = None,
    lifetime: Annotated[float, typer.Option(
        help="seconds an instance runs before its owner terminates it (its Instance deleted): "
             "fleets turn over, so the fleet settles at about rate x lifetime however long "
             "the run; 0: never")] = LIFETIME,
    dwfm_url: Annotated[str, typer.Option(
        help="DWFM's HTTP address; its GET /leases is the lease view")]
    = "http://127.0.0.1:18207",
    admit_url: Annotated[str, typer.Option(
        help="the Network Manager's POST /admit, asked for each launch with "
             "propagation-throttle on")] = "http://127.0.0.1:18209/admit",
    endpoints: Annotated[str, typer.Option(
        "--endpoints", help="where instances serve: address (one loopback address each, "
        "port 8080; local mode) or port (--endpoint-host, one port each; kind)")]
    = instances.ADDRESS,
    endpoint_host: Annotated[str | None, typer.Option(
        help="the host serving every instance, with --endpoints port")] = None,
    endpoint_base: Annotated[int, typer.Option(
        help="with --endpoints port, request n serves on base + n % 20000")]
    = instances.PORT_BASE,
    safeguards: Annotated[str | None, typer.Option(
        "--safeguards", help="off, on, or a comma list; propagation-throttle is the "
        "launcher's (default: $DNSRACE_SAFEGUARDS, else off)")] = None,
    out: Annotated[Path, typer.Option(help="JSON-lines file the figures are appended to, "
                                      "one line per outcome a second")]
    = Path("launcher.jsonl"),
    seed: Annotated[int, typer.Option(help="seeds the retries' jitter")] = 0,
    port: Annotated[int | None, typer.Option(
        help="HTTP port of /healthz and /metrics (default: $DNSRACE_HTTP_PORT, else 8080)")]
    = None,
) -> None:
    """Run the launcher until SIGTERM: launch requests placed on droplets holding a DWFM
    lease, each an Instance object."""
    from dnsrace.components import launcher  # the clients only when the launcher runs

    cfg = components._settings_or_fail()
    try:
        throttle = launcher.throttle_on(safeguards if safeguards is not None
                                        else cfg.lab.safeguards)
        params = launcher.params(rate=rate, slots=slots, retry_after=retry_after,
                                 patience=patience, lifetime=lifetime or None)
        if port is not None and not 0 <= port < 65536:
            raise ValueError(f"--port must be a TCP port (0 for none), got {port}")
        http_port = port if port is not None else cfg.lab.http_port
        options = launcher.Options(
            params=params, namespace=cfg.kube.namespace, dwfm_url=dwfm_url,
            admit_url=admit_url if throttle else None, endpoint_style=endpoints,
            endpoint_host=endpoint_host, endpoint_base=endpoint_base, out=out, seed=seed,
            http_port=http_port or None)
    except ValueError as exc:
        console.fail(str(exc), code=2)
        return
    kubeconfig = cfg.api_kubeconfig

    async def main(stop: asyncio.Event) -> None:
        await launcher.run(options, kubeconfig, stop)

    components._serve(main)
