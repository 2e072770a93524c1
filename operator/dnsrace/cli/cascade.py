"""``dnsrace dwfm [restart]``: the cascade's components, run in the foreground, and their manual
steps.

``dnsrace dwfm`` runs EC2's DropletWorkflow Manager (``components.dwfm``) until SIGTERM or
Ctrl-C; ``dnsrace dwfm restart [--throttle]`` is the manual step AWS took at 4:14 AM, sent to a
running DWFM's HTTP port. The commands only parse options and call the component.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from dnsrace.cli import components, console
from dnsrace.core import dwfm as core_dwfm

_D = core_dwfm.DwfmParams()

dwfm_app = typer.Typer(
    help="EC2's DropletWorkflow Manager: droplet leases in DynamoDB (reached through the lab's "
         "DNS), renewed by state checks, re-established through a queue with deadlines.",
    invoke_without_command=True,
)


@dwfm_app.callback()
def dwfm_cmd(
    ctx: typer.Context,
    droplets: Annotated[int, typer.Option(help="droplets in the fleet")] = _D.droplets,
    workers: Annotated[int, typer.Option(help="workers re-establishing leases")] = _D.workers,
    service_time: Annotated[float, typer.Option(
        help="seconds of work one re-establish item costs a worker")] = _D.service_time,
    deadline: Annotated[float, typer.Option(
        help="seconds from being queued after which an item's work is wasted")] = _D.deadline,
    lease_ttl: Annotated[float, typer.Option(
        help="seconds a lease stays valid; longer than --check-interval")] = _D.lease_ttl,
    check_interval: Annotated[float, typer.Option(
        help="seconds between two state checks (renewals) of a droplet")] = _D.check_interval,
    safeguards: Annotated[str | None, typer.Option(
        "--safeguards", help="off, on, or a comma list; dwfm-throttle is DWFM's (default: "
        "$DNSRACE_SAFEGUARDS, else off)")] = None,
    out: Annotated[Path, typer.Option(help="JSON-lines file the figures are appended to, "
                                      "one line a second")] = Path("dwfm.jsonl"),
    seed: Annotated[int, typer.Option(help="seeds the check phases and the jitter")] = 0,
    provision: Annotated[bool, typer.Option(
        help="write every lease directly when the table holds none (a fresh table); "
             "--no-provision: a cold start goes through the queue")] = True,
    endpoint_url: Annotated[str | None, typer.Option(
        help="talk to this DynamoDB URL directly, without DNS (tests); default: "
             "http://<ddb.endpoint>:<--port> resolved through $DNSRACE_DNS_SERVER")] = None,
    port: Annotated[int, typer.Option(help="the LB nodes' port")] = 8080,
    timeout: Annotated[float, typer.Option(
        help="connect and read timeout of one DynamoDB call, seconds")] = 1.0,
) -> None:
    """Run DWFM until SIGTERM: a fleet of droplets whose leases live in DynamoDB."""
    if ctx.invoked_subcommand is not None:
        return
    from dnsrace.components import dwfm  # botocore and the rest only when DWFM runs

    cfg = components._settings_or_fail()
    try:
        throttle = dwfm.throttle_on(safeguards if safeguards is not None
                                    else cfg.lab.safeguards)
        params = dwfm.params(droplets=droplets, workers=workers, service_time=service_time,
                             deadline=deadline, lease_ttl=lease_ttl,
                             check_interval=check_interval)
        if not timeout > 0:
            raise ValueError(f"--timeout must be more than 0 s, got {timeout}")
        if endpoint_url is not None and not endpoint_url.startswith(("http://", "https://")):
            raise ValueError(f"--endpoint-url must be an http(s) URL, got {endpoint_url!r}")
        cfg.ddb.validate(cfg.dns.zone)
        options = dwfm.Options(params=params, throttle=throttle, out=out, seed=seed,
                               provision=provision, http_port=cfg.lab.http_port or None)
    except ValueError as exc:
        console.fail(str(exc), code=2)
        return
    store = dwfm.dynamo_store(cfg, endpoint_url=endpoint_url, port=port, timeout=timeout)

    async def main(stop: asyncio.Event) -> None:
        await dwfm.run(options, store, stop)

    components._serve(main)


def _post(url: str, timeout: float) -> dict[str, object]:
    return components.post_step(url, timeout, "DWFM", "dnsrace dwfm", "restart")


@dwfm_app.command("restart")
def restart_cmd(
    throttle: Annotated[bool, typer.Option(
        "--throttle", help="turn dwfm-throttle on before dropping the queues, as AWS did")]
    = False,
    url: Annotated[str | None, typer.Option(
        help="the running DWFM's HTTP address (default: http://127.0.0.1:$DNSRACE_HTTP_PORT)")]
    = None,
    timeout: Annotated[float, typer.Option(help="seconds to wait for the answer")] = 10.0,
) -> None:
    """The manual step (4:14 AM): restart the running DWFM, dropping its queued and
    in-service work, and with --throttle switch admission control on."""
    if url is None:
        cfg = components._settings_or_fail()
        if not cfg.lab.http_port:
            console.fail("DNSRACE_HTTP_PORT is 0 (no HTTP port): give --url", code=2)
        url = f"http://127.0.0.1:{cfg.lab.http_port}"
    target = url.rstrip("/") + "/restart" + ("?throttle=1" if throttle else "")
    result = _post(target, timeout)
    throttle_now = "on" if result.get("throttle") else "off"
    was = "on" if result.get("throttle_was") else "off"
    console.console.print(
        f"DWFM restarted: dropped {result.get('dropped')} items ({result.get('queued')} "
        f"queued, {result.get('in_service')} in service); dwfm-throttle {throttle_now}"
        + (f" (was {was})" if throttle_now != was else ""))
