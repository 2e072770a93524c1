"""``dnsrace nlb [failover off|on]``: the Network Load Balancer in the foreground, and its
manual step.

``dnsrace nlb`` runs the NLB (``components.nlbctl``) until SIGTERM or Ctrl-C: it health-checks
the namespace's launched Instances and publishes the healthy ones as its DNS record;
``dnsrace nlb failover off|on`` is the manual step AWS took at 9:36 AM (automatic AZ failover
off), sent to a running NLB's HTTP port. The commands only parse options and call the component.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from dnsrace.cli import components, console
from dnsrace.core import nlb as core_nlb

_D = core_nlb.NlbParams()

nlb_app = typer.Typer(
    help="A Network Load Balancer: HTTP health checks of the launched Instances, automatic AZ "
         "DNS failover, and its DNS record (one A record per published host) in the lab's DNS.",
    invoke_without_command=True,
)


@nlb_app.callback()
def nlb_cmd(
    ctx: typer.Context,
    interval: Annotated[float, typer.Option(
        help="seconds between two health checks of one target")] = _D.interval,
    unhealthy_threshold: Annotated[int, typer.Option(
        help="failed checks in a row after which a target is unhealthy")]
    = _D.unhealthy_threshold,
    healthy_threshold: Annotated[int, typer.Option(
        help="passed checks in a row after which a target is healthy again")]
    = _D.healthy_threshold,
    failover_share: Annotated[float, typer.Option(
        help="an AZ is failed over when more than this share of its capacity is unhealthy, "
             "in [0, 1)")] = _D.failover_share,
    name: Annotated[str | None, typer.Option(
        help="the NLB's DNS name (default: nlb.us-east-1.<zone>)")] = None,
    check_timeout: Annotated[float, typer.Option(
        help="seconds one health check may take")] = 1.0,
    safeguards: Annotated[str | None, typer.Option(
        "--safeguards", help="off, on, or a comma list; velocity-control is the NLB's "
        "(default: $DNSRACE_SAFEGUARDS, else off)")] = None,
    out: Annotated[Path, typer.Option(help="JSON-lines file the figures are appended to, "
                                      "one line per AZ and one for all, a second")]
    = Path("nlb.jsonl"),
    port: Annotated[int | None, typer.Option(
        help="HTTP port of /healthz, /metrics and /failover (default: $DNSRACE_HTTP_PORT, "
             "else 8080; 0: none)")] = None,
    seed: Annotated[int, typer.Option(help="seeds the targets' check phases")] = 0,
) -> None:
    """Run the NLB until SIGTERM: check the namespace's launched Instances, publish the
    healthy ones in DNS."""
    if ctx.invoked_subcommand is not None:
        return
    from dnsrace.components import nlbctl  # aiohttp, aetcd and the rest only when it runs

    cfg = components._settings_or_fail()
    try:
        velocity = nlbctl.velocity_on(safeguards if safeguards is not None
                                      else cfg.lab.safeguards)
        params = nlbctl.params(interval=interval, unhealthy_threshold=unhealthy_threshold,
                               healthy_threshold=healthy_threshold,
                               failover_share=failover_share)
        dns_name = nlbctl.check_name(name if name is not None
                                     else nlbctl.default_name(cfg.dns.zone), cfg.dns.zone)
        http_port = port if port is not None else cfg.lab.http_port
        if not 0 <= http_port < 65536:
            raise ValueError(f"--port must be in [0, 65535], got {http_port}")
        options = nlbctl.Options(params=params, velocity=velocity, name=dns_name,
                                 namespace=cfg.kube.namespace, ttl=cfg.dns.record_ttl,
                                 check_timeout=check_timeout, out=out, seed=seed,
                                 http_port=http_port or None)
    except ValueError as exc:
        console.fail(str(exc), code=2)
        return

    async def main(stop: asyncio.Event) -> None:
        from dnsrace.kube import client as kube_client

        api = await kube_client.api_client(cfg.api_kubeconfig)
        store = nlbctl.etcd_store(cfg)
        try:
            await nlbctl.run(options, store, api, stop)
        finally:
            await store.close()
            await api.close()

    components._serve(main)


def _post(url: str, timeout: float) -> dict[str, object]:
    return components.post_step(url, timeout, "the NLB", "dnsrace nlb", "switch")


def _azs(value: object) -> set[str]:
    return {str(v) for v in value} if isinstance(value, list) else set()


def describe(result: dict[str, object]) -> str:
    """What ``POST /failover`` changed, in one line."""
    now = "on" if result.get("auto_failover") else "off"
    was = "on" if result.get("was") else "off"
    before, after = _azs(result.get("failed_over_before")), _azs(result.get("failed_over"))
    parts = [f"NLB automatic AZ failover {now}"
             + (f" (was {was})" if now != was else " (unchanged)")]
    if before - after:
        parts.append(f"back in DNS: {', '.join(sorted(before - after))}")
    if after - before:
        parts.append(f"failed over: {', '.join(sorted(after - before))}")
    if after and not after - before:
        parts.append(f"still failed over: {', '.join(sorted(after))}")
    added = result.get("added")
    parts.append(f"{added} target{'' if added == 1 else 's'} added, {result.get('removed')} "
                 f"removed, {result.get('published')} published")
    return "; ".join(parts)


@nlb_app.command("failover")
def failover_cmd(
    state: Annotated[str, typer.Argument(help="off (the manual step of 9:36 AM) or on")],
    url: Annotated[str | None, typer.Option(
        help="the running NLB's HTTP address (default: http://127.0.0.1:$DNSRACE_HTTP_PORT)")]
    = None,
    timeout: Annotated[float, typer.Option(help="seconds to wait for the answer")] = 10.0,
) -> None:
    """The manual step (9:36 AM): switch the running NLB's automatic AZ failover off (its
    failed-over AZs come back in DNS) or on again."""
    if state not in ("off", "on"):
        console.fail(f"failover: {state!r}: use off or on", code=2)
    if url is None:
        cfg = components._settings_or_fail()
        if not cfg.lab.http_port:
            console.fail("DNSRACE_HTTP_PORT is 0 (no HTTP port): give --url", code=2)
        url = f"http://127.0.0.1:{cfg.lab.http_port}"
    result = _post(url.rstrip("/") + f"/failover?enabled={1 if state == 'on' else 0}", timeout)
    console.console.print(describe(result))
