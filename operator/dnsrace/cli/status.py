"""``dnsrace status``: a live view of the lab (rich), one snapshot (``--once``), or JSON.

The command only parses options, runs ``components.status.Reader`` and renders the
``core.status.Snapshot`` it returns; what each state means is decided in ``core.status``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import sys
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from dnsrace import settings as settings_mod
from dnsrace.cli import console
from dnsrace.core import scrape as scrape_mod
from dnsrace.core import status as core_status
from dnsrace.core.safeguards import Safeguards

if TYPE_CHECKING:
    # Imported where used: it pulls the Kubernetes client, which ``import dnsrace.cli.status``
    # (every command's start) should not pay for.
    from dnsrace.components import status as status_mod

STATE_STYLES = {
    "down": "bold red", "paused": "bold magenta", "unresponsive": "bold red",
    "held": "magenta", "blocked": "bold red", "cleaning-up": "yellow", "applying": "cyan",
    "skipped": "dim", "idle": "green", "unknown": "dim",
}
DNS_STYLES = {"NOERROR": "green", "NODATA": "bold red", "NXDOMAIN": "bold red",
              "SERVFAIL": "red", "TIMEOUT": "red"}


def _text(value: object, style: str = "") -> Text:
    return Text("-" if value is None else str(value), style=style)


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    return str(int(value)) if float(value).is_integer() else f"{value:.2f}"


def _enactors(snap: core_status.Snapshot) -> Table:
    tbl = Table(title="Enactors", title_justify="left", expand=False)
    for column in ("enactor", "state", "applied", "behind", "walking", "last report"):
        tbl.add_column(column, no_wrap=True)
    tbl.add_column("why", min_width=30)
    tbl.add_column("heartbeat")
    tbl.add_column("/metrics")
    for e in snap.enactors:
        walking = None
        if e.progress is not None:
            total = f"/{e.progress.endpoints}" if e.progress.endpoints is not None else ""
            walking = f"plan {e.progress.serial}: {e.progress.written}{total}"
        last = f"{e.last.serial} {e.last.phase}" if e.last is not None else None
        beat = None
        if e.heartbeat_age is not None:
            beat = f"{e.heartbeat_age:.0f}s ago" + ("" if e.heartbeat_valid else " (expired)")
        tbl.add_row(
            e.name, _text(e.state, STATE_STYLES.get(e.state, "")), _text(e.applied_serial),
            _text(e.behind, "yellow" if e.behind else ""), _text(walking), _text(last),
            _text(e.why), _text(beat, "" if e.heartbeat_valid is not False else "red"),
            _text(e.metrics, "" if e.metrics == "ok" else "dim"),
        )
    return tbl


def _endpoints(snap: core_status.Snapshot) -> Table:
    tbl = Table(title="Endpoints (store: DNS etcd; CoreDNS: its answer now)",
                title_justify="left")
    tbl.add_column("endpoint", no_wrap=True)
    tbl.add_column("store", no_wrap=True)
    tbl.add_column("store addresses", min_width=11)
    tbl.add_column("CoreDNS", no_wrap=True)
    tbl.add_column("CoreDNS addresses", min_width=11)
    tbl.add_column("flags", min_width=22, no_wrap=True)
    for ep in snap.endpoints:
        addrs = None if ep.store_addresses is None else (
            ", ".join(ep.store_addresses) or "none")
        flags = [*ep.flags, *(["prober-sees-empty"] if ep.prober_empty else [])]
        store = None if ep.store_serial is None else f"{ep.store_serial} {ep.store_enactor}"
        answer = None if ep.dns is None else (
            ep.dns + (f" {ep.dns_serial}" if ep.dns_serial is not None else ""))
        tbl.add_row(
            _text(ep.name, "" if ep.in_newest_plan else "dim"), _text(store),
            _text(addrs, "red" if addrs == "none" else ""),
            _text(answer, DNS_STYLES.get(ep.dns or "", "")),
            _text(", ".join(ep.dns_addresses) or None),
            _text("\n".join(flags) or None, "bold red" if flags else ""),
        )
    return tbl


def _faults(snap: core_status.Snapshot) -> Table:
    tbl = Table(title="Faults", title_justify="left")
    for column in ("fault", "target", "effect", "injected", "phase", "acting"):
        tbl.add_column(column, overflow="fold")
    for f in snap.faults:
        tbl.add_row(f.name, f.target, f.effect, str(f.injected), _text(f.phase),
                    _text("yes" if f.active else "no", "bold magenta" if f.active else "dim"))
    return tbl


def render(snap: core_status.Snapshot) -> RenderableType:
    """The snapshot as rich renderables (the live view and ``--once`` on a terminal)."""
    stamp = datetime.datetime.fromtimestamp(snap.time).strftime("%H:%M:%S")
    p = snap.plans
    head = Text(f"dnsrace status · namespace {snap.namespace} · {stamp} · ", style="bold")
    head.append(f"newest plan {p.newest_serial if p.newest_serial is not None else '-'}",
                style="bold cyan")
    head.append(f" ({p.live} live, {p.newest_endpoints} endpoints"
                + (f", {len(p.terminating)} terminating" if p.terminating else "") + ")"
                + (f" · planner at {p.planner_serial}" if p.planner_serial is not None
                   else ""))
    sources = Text("sources: ")
    for name, state in snap.sources.items():
        sources.append(f"{name} ", style="bold")
        sources.append(state, style="green" if state == "ok" else "bold red")
        sources.append("  ")
    sg = snap.safeguards
    guards = Text(f"safeguards ({sg.source}): {', '.join(sg.configured) or 'off'}")
    if sg.writer_lease_holder:
        guards.append(f" · writer lease held by {sg.writer_lease_holder}")
    parts: list[RenderableType] = [head, sources, guards]
    if not snap.api_reachable:
        parts.append(Text(f"API server: {snap.sources.get('api')}; retrying", style="bold red"))
    parts += [_enactors(snap), _endpoints(snap)]
    parts.append(_faults(snap) if snap.faults else Text("no Faults", style="dim"))
    parts += _cascade(snap.cascade)
    return Group(*parts)


def _on_off(flag: bool | None) -> str:
    return "-" if flag is None else ("on" if flag else "off")


def _per_az(counts: dict[str, float]) -> str:
    return ", ".join(f"{az} {_num(n)}" for az, n in counts.items()) or "-"


def _cascade(c: core_status.CascadeStatus) -> list[RenderableType]:
    """One line per cascade component that was scraped (left out when not: no URL given)."""
    lines: list[RenderableType] = []
    lau, net, nlb = c.launcher, c.network_manager, c.nlb
    for label, state, figures in (
        ("DWFM", c.dwfm, (
            f"leases valid {_num(c.leases_valid)} of {_num(c.droplets)} droplets · queue "
            f"{_num(c.queue_depth)} (oldest {_num(c.queue_oldest_age_seconds)} s, in service "
            f"{_num(c.in_service)}) · goodput {_num(c.goodput_ratio)} · throttle "
            f"{_on_off(c.throttle)}")),
        ("launcher", lau.metrics, (
            f"launches ok {_num(lau.launched)} · InsufficientCapacity "
            f"{_num(lau.insufficient_capacity)} · RequestLimitExceeded "
            f"{_num(lau.request_limit_exceeded)} · gave up {_num(lau.gave_up)} · pending "
            f"{_num(lau.pending)} (oldest {_num(lau.oldest_pending_seconds)} s) · instances "
            f"{_num(lau.instances)}")),
        ("Network Manager", net.metrics, (
            f"backlog {_num(net.backlog)} (oldest {_num(net.oldest_age_seconds)} s) · "
            f"propagated {_num(net.propagated)} · throttle {_on_off(net.throttle)}")),
        ("NLB", nlb.metrics, (
            f"healthy {_per_az(nlb.healthy)} · unhealthy {_per_az(nlb.unhealthy)} · failed "
            f"over {', '.join(nlb.failed_over) or 'none'} · capacity removed "
            f"{_num(nlb.capacity_removed)}")),
    ):
        if state == "not scraped":
            continue
        if state == "ok":
            lines.append(Text(f"cascade: {label} {figures}",
                              style="bold red" if label == "NLB" and nlb.failed_over else ""))
        else:
            lines.append(Text(f"cascade: {label} /metrics {state}", style="dim"))
    return lines


async def _once(cfg: settings_mod.Settings, options: status_mod.Options) -> (
        core_status.Snapshot):
    from dnsrace.components import status as status_mod

    async with status_mod.Reader(cfg, options) as reader:
        return await reader.snapshot()


async def _live(cfg: settings_mod.Settings, options: status_mod.Options, interval: float,
                output: str) -> None:
    from dnsrace.components import status as status_mod

    async with status_mod.Reader(cfg, options) as reader:
        if output == "json":  # one JSON object per line, every interval
            while True:
                snap = await reader.snapshot()
                print(json.dumps(snap.to_json(), sort_keys=True), flush=True)
                await asyncio.sleep(interval)
        with Live(Text("reading the lab…"), console=console.console, auto_refresh=False,
                  transient=False) as live:
            while True:
                snap = await reader.snapshot()
                live.update(render(snap), refresh=True)
                await asyncio.sleep(interval)


def status_cmd(
    once: Annotated[bool, typer.Option("--once", help="Print one snapshot and exit (exit "
                                       "code 1 when the API server cannot be read)")] = False,
    output: Annotated[str, typer.Option("-o", "--output", help="table (rich) or json (stable "
                                        "keys, docs/report.md; without --once one object "
                                        "per line per interval)")] = "table",
    interval: Annotated[float, typer.Option(help="Seconds between two snapshots of the "
                                            "live view")] = 1.0,
    metrics_base: Annotated[int, typer.Option(help="Port of the planner's /metrics; enactor "
                                              "i at base+1+i, the prober at base+5, as the "
                                              "scenarios assign them; 0: scrape nothing")] =
    scrape_mod.BASE_PORT,
    metrics_host: Annotated[str, typer.Option(help="Host of the components' /metrics")] =
    "127.0.0.1",
    dwfm_url: Annotated[str | None, typer.Option(help="DWFM's base URL (http://host:port) "
                                                 "for the cascade's figures; the lab's is "
                                                 "http://127.0.0.1:"
                                                 f"{scrape_mod.CASCADE_PORTS['dwfm']}")] = None,
    launcher_url: Annotated[str | None, typer.Option(
        help="The launcher's base URL, as --dwfm-url; the lab's is http://127.0.0.1:"
        f"{scrape_mod.CASCADE_PORTS['launcher']}")] = None,
    network_manager_url: Annotated[str | None, typer.Option(
        help="The Network Manager's base URL, as --dwfm-url; the lab's is http://127.0.0.1:"
        f"{scrape_mod.CASCADE_PORTS['network-manager']}")] = None,
    nlb_url: Annotated[str | None, typer.Option(
        help="The NLB's base URL, as --dwfm-url; the lab's is http://127.0.0.1:"
        f"{scrape_mod.CASCADE_PORTS['nlb']}")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds each read gets")] = 2.0,
    safeguards: Annotated[str | None, typer.Option(
        "--safeguards", help="What the lab runs with, for the view (default: "
        "$DNSRACE_SAFEGUARDS); the components do not publish theirs")] = None,
) -> None:
    """Show the lab live: the newest plan, each enactor's state (applying, cleaning up,
    blocked and why, paused or delayed by a Fault), each endpoint's active serial in the DNS
    etcd and what CoreDNS answers now, the Faults, the safeguards, the cascade's figures (DWFM,
    the launcher, the Network Manager, the NLB) when their URLs are given."""
    from dnsrace.components import status as status_mod

    if output not in ("table", "json"):
        console.fail(f"unknown output {output!r}: available: table, json", code=2)
    if interval <= 0 or timeout <= 0:
        console.fail("--interval and --timeout must be more than 0", code=2)
    if safeguards is not None:
        try:
            Safeguards.parse(safeguards)
        except ValueError as exc:
            console.fail(str(exc), code=2)
    cfg = settings_mod.Settings.from_env()
    options = status_mod.Options(metrics_host=metrics_host, metrics_base=metrics_base or None,
                                 dwfm_url=dwfm_url, launcher_url=launcher_url,
                                 network_manager_url=network_manager_url, nlb_url=nlb_url,
                                 timeout=timeout, safeguards=safeguards)
    if not once:
        with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C (and SIGTERM) end it cleanly
            asyncio.run(_live(cfg, options, interval, output))
        return
    snap = asyncio.run(_once(cfg, options))
    if not snap.api_reachable:
        # One plain line (no wrapping), for scripts and for people.
        print(f"error: API server ({cfg.kubeconfig}): {snap.sources.get('api')}",
              file=sys.stderr)
        raise typer.Exit(1)
    if output == "json":
        sys.stdout.write(json.dumps(snap.to_json(), indent=2, sort_keys=True) + "\n")
    else:
        console.console.print(render(snap))
