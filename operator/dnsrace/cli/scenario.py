"""``dnsrace scenario run race``: run the race on the current cluster and print the verdict."""

from __future__ import annotations

import asyncio
import datetime
import json
from pathlib import Path
from typing import Annotated

import typer

from dnsrace import settings as settings_mod
from dnsrace.cli import console
from dnsrace.cli import outage as outage_cli
from dnsrace.components.scenarios import chaos as chaos_run
from dnsrace.components.scenarios import outage as outage_run
from dnsrace.components.scenarios import race
from dnsrace.components.scenarios import replay as replay_run
from dnsrace.core import chaos, outage, verdicts
from dnsrace.core import replay as replay_core
from dnsrace.core.safeguards import Safeguards

_O = outage_run.OutageParams()

app = typer.Typer(help="Scenarios: start the lab, inject faults, observe, judge.",
                  no_args_is_help=True)


def _pct(share: float | None) -> str:
    return "-" if share is None else f"{share:.2%}"


def print_verdict(v: verdicts.Verdict) -> None:
    f = v.figures
    colour = "green" if v.passed else "red"
    console.console.print(
        f"\n[bold]race, safeguards {v.safeguards}[/bold]: "
        f"[{colour}]{'as expected' if v.passed else 'NOT as expected'}[/{colour}] "
        f"({v.expected})")
    rows = [
        ["time to first NXDOMAIN/NODATA answer (s after the stall)",
         str(f.get("time_to_first_empty", "-"))],
        ["records removed in the DNS etcd (s after the stall)",
         str(f.get("time_to_records_removed", "-"))],
        ["enactor-a stalls served until then", str(f.get("stall_attempts", "-"))],
        ["stall retuned (times)", str(len(f.get("stall_retunes") or []))],
        ["regional NXDOMAIN/NODATA window (s)", str(f.get("regional_empty_window"))],
        ["empty answers / answers (expected)",
         f"{f.get('empty_answers')} / {f.get('answers')} ({f.get('answers_expected')})"],
        ["  of which SERVFAIL or timeout", str(f.get("failed_answers"))],
        ["endpoints with empty answers", ", ".join(f.get("endpoints_empty", [])) or "none"],
        ["endpoints emptied in the store", ", ".join(f.get("store_endpoints_emptied", []))
         or "none"],
        ["stale regressions: through CoreDNS / in the store",
         f"{f.get('stale_regressions')} / {f.get('store_regressions')}"],
        ["plans created under the faults", str(f.get("plans_during_faults"))],
        ["faults injected", ", ".join(f"{k} {v}" for k, v in
                                      (f.get("fault_injections") or {}).items()) or "none"],
        ["independent query of regional", json.dumps(f.get("direct_query_regional"))],
        ["endpoints on deleted plans", ", ".join(f.get("endpoints_on_deleted_plans", []))
         or "none"],
        ["blocked (Warning events)", f"{f.get('blocked')} ({f.get('blocked_warnings')})"],
        ["converged on newest plan", str(f.get("converged"))],
        ["repair: endpoints changed, restored in (s)",
         f"{f.get('repair_changed', '-')}, {f.get('time_to_restore', '-')}"],
    ]
    if "client_requests" in f:
        rows += [
            ["DynamoDB clients: requests, outcomes",
             f"{f['client_requests']}, {json.dumps(f.get('client_outcomes'))}"],
            ["  succeeded before the fault", _pct(f.get("client_ok_before_fault"))],
            ["  DNS errors under the faults", str(f.get("client_dns_errors"))],
            ["  failed with a DNS error while the record was empty",
             _pct(f.get("client_dns_share_while_empty"))],
            ["  succeeding again after the repair (s), share from 10 s on",
             f"{f.get('client_time_to_recover', '-')}, "
             f"{_pct(f.get('client_ok_after_recovery'))}"],
        ]
    console.table(f"figures ({v.run_dir})", ["figure", "value"], rows)
    for reason in v.reasons:
        console.console.print(f"[red]- {reason}[/red]")


def print_chaos(v: verdicts.Verdict) -> None:
    colour = "green" if v.passed else "red"
    console.console.print(
        f"\n[bold]chaos, safeguards {v.safeguards}[/bold]: "
        f"[{colour}]{'as expected' if v.passed else 'NOT as expected'}[/{colour}] "
        f"({v.expected})")

    def show(x: object) -> str:
        return "-" if x is None else str(x)

    console.table(f"faults ({v.run_dir})", [
        "fault", "lasted (s)", "answers", "regional empty", "empty: controllers / data plane "
        "/ no listener", "stale (CoreDNS / store)", "back after (s)", "converged after (s)",
        "other restarts", "stuck Terminating"], [
        [r["fault"], show(r["duration"]), show(r["answers"]), show(r["regional_empty"]),
         f"{r['empty_by_controllers']} / {r['empty_by_data_plane']} / "
         f"{r['empty_while_no_listener']}",
         f"{r['stale_regressions']} / {r['store_regressions']}", show(r["back_after"]),
         show(r["converged_after"]), ", ".join(r["other_restarts"]) or "-",
         ", ".join(r["stuck_terminating"]) or "-"]
        for r in v.figures.get("steps", [])])
    for reason in v.reasons:
        console.console.print(f"[red]- {reason}[/red]")


def print_any(v: verdicts.Verdict) -> None:
    if "steps" in v.figures:
        print_chaos(v)
    elif "trace_final" in v.figures:
        print_replay(v)
    else:
        print_verdict(v)


def judge_dir(run_dir: Path) -> verdicts.Verdict:
    record = verdicts.RunRecord.load(run_dir)
    if record.observed.get("scenario") == "chaos":
        return chaos.judge_record(record, str(run_dir))
    if record.observed.get("scenario") == "replay":
        return replay_run.judge(record.observed, str(run_dir))
    return verdicts.judge(record, str(run_dir))


def _failed_run(safeguards: str, run_dir: Path, exc: Exception) -> verdicts.Verdict:
    # A run that could not be carried out (the lab did not come up, a store or the API server
    # gone for longer than the runner waits) counts as not as expected; the series goes on.
    return verdicts.Verdict(
        safeguards=safeguards, expected="a run", passed=False,
        reasons=[f"the run could not be carried out: {type(exc).__name__}: "
                 f"{str(exc).strip()[:800] or repr(exc)}"], figures={},
        run_dir=str(run_dir))


def run_chaos(safeguards: str, repeat: int, runs_dir: Path, faults: list[str],
              pause: float) -> list[verdicts.Verdict]:
    cfg = settings_mod.Settings.from_env()
    judged: list[verdicts.Verdict] = []
    for i in range(repeat):
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        run_dir = runs_dir / f"{stamp}-chaos-{safeguards.replace(',', '+')}-{i + 1}"
        params = chaos_run.ChaosParams(safeguards=Safeguards.parse(safeguards),
                                       faults=tuple(faults), pause=pause)
        console.progress(f"run {i + 1}/{repeat}: chaos with safeguards {safeguards} -> {run_dir}")
        try:
            verdict = asyncio.run(chaos_run.run_chaos(cfg, params, run_dir, console.progress))
        except Exception as exc:
            verdict = _failed_run(str(params.safeguards), run_dir, exc)
        print_any(verdict)
        judged.append(verdict)
    return judged


def run_replay(trace_path: Path, prop: str | None, repeat: int,
               runs_dir: Path) -> list[verdicts.Verdict]:
    cfg = settings_mod.Settings.from_env()
    try:
        trace = json.loads(trace_path.read_text())
        schedule = replay_core.compile_trace(trace, prop)
    except (OSError, ValueError) as exc:  # TraceError and JSON errors are ValueErrors
        console.fail(f"{trace_path}: {exc}", code=2)
    judged: list[verdicts.Verdict] = []
    for i in range(repeat):
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        run_dir = runs_dir / f"{stamp}-replay-{schedule.prop}-{i + 1}"
        console.progress(f"run {i + 1}/{repeat}: replay of the {schedule.prop} trace "
                         f"({len(schedule.actions)} actions) -> {run_dir}")
        try:
            verdict = asyncio.run(replay_run.run_replay(
                cfg, trace, replay_run.ReplayParams(prop=schedule.prop), run_dir,
                console.progress))
        except Exception as exc:
            verdict = _failed_run(schedule.safeguards, run_dir, exc)
        print_replay(verdict)
        judged.append(verdict)
    return judged


def print_replay(v: verdicts.Verdict) -> None:
    colour = "green" if v.passed else "red"
    console.console.print(
        f"\n[bold]replay, safeguards {v.safeguards}[/bold]: "
        f"[{colour}]{'as expected' if v.passed else 'NOT as expected'}[/{colour}] "
        f"({v.expected})")
    final = v.figures.get("trace_final", {})
    console.table(f"endpoints at the end ({v.run_dir})", [
        "endpoint", "trace: plan, addresses", "DNS etcd: plan, addresses", "plan exists",
        "through CoreDNS"], [
        [name, f"{final.get(name, ['-', '-'])[0]}, {final.get(name, ['-', '-'])[1]}",
         f"{e['serial']}, {e['addresses']}", str(e["plan_exists"]),
         f"{e['dns']['rcode']} {', '.join(e['dns']['addresses'])}"]
        for name, e in sorted(v.figures.get("end", {}).items())])
    for reason in v.reasons:
        console.console.print(f"[red]- {reason}[/red]")


def run_race(safeguards: str, repeat: int, runs_dir: Path,
             stall: float | None = None) -> list[verdicts.Verdict]:
    cfg = settings_mod.Settings.from_env()
    judged: list[verdicts.Verdict] = []
    for i in range(repeat):
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        label = safeguards.replace(",", "+")
        run_dir = runs_dir / f"{stamp}-race-{label}-{i + 1}"
        params = race.RaceParams(safeguards=Safeguards.parse(safeguards), stall=stall)
        console.progress(f"run {i + 1}/{repeat}: race with safeguards {safeguards} -> {run_dir}")
        try:
            verdict = asyncio.run(race.run_race(cfg, params, run_dir, console.progress))
        except Exception as exc:
            verdict = _failed_run(str(params.safeguards), run_dir, exc)
        print_verdict(verdict)
        judged.append(verdict)
    return judged


@app.command("run")
def run(
    name: Annotated[str, typer.Argument(
        help="race: the incident's faults; chaos: kill, pause and restart each component "
        "and part of the control plane, one at a time; replay: a `dnsrace check -o json` "
        "counterexample on the real enactors; outage-2025: the race, then the cascade "
        "(DWFM, launcher, Network Manager, NLB) and the recovery")],
    trace: Annotated[Path | None, typer.Argument(
        help="replay: the `dnsrace check -o json` report", exists=True,
        dir_okay=False)] = None,
    safeguards: Annotated[str | None, typer.Option(
        help="off, on (fencing, protect-active, no-empty, self-heal, serve-stale), or a comma "
        "list of those and single-writer [default: off for race, on for chaos]")] = None,
    repeat: Annotated[int, typer.Option(min=1, help="Runs in a row")] = 1,
    runs_dir: Annotated[Path, typer.Option(help="Where run folders go")] = Path("runs"),
    stall: Annotated[float | None, typer.Option(
        help="enactor-a's stall on the regional endpoint, seconds (default: derived)")] = None,
    fault: Annotated[list[str] | None, typer.Option(
        help="chaos: a fault to inject, KIND:TARGET (kill:enactor-a, pause:planner, "
        "restart:kube-apiserver|dns-etcd|coredns); repeat it; default: the whole matrix")] = None,
    pause: Annotated[float, typer.Option(
        min=1, help="chaos: seconds a paused component stays stopped")] = 10.0,
    prop: Annotated[str | None, typer.Option(
        "--property", help="replay: the counterexample to replay (default: never-empty, "
        "else the report's first)")] = None,
    outside_fault: Annotated[bool, typer.Option(
        help="outage-2025: pause DynamoDB Local for --outage s instead of the race (an "
        "outage no DNS safeguard helps with)")] = False,
    outage_seconds: Annotated[float, typer.Option(
        "--outage", min=1, help="outage-2025: seconds the record stays empty before the "
        "repair (or DynamoDB Local stays paused)")] = _O.outage,
    dwfm_restart_after: Annotated[float, typer.Option(
        min=0, help="outage-2025: seconds after DynamoDB answers again at which "
        "`dnsrace dwfm restart --throttle` is taken (safeguards off)")] = _O.dwfm_restart_after,
    failover_off_after: Annotated[float, typer.Option(
        min=0, help="outage-2025: seconds after DynamoDB answers again at which "
        "`dnsrace nlb failover off` is taken (safeguards off)")] = _O.failover_off_after,
) -> None:
    """Run a scenario; exit 1 when what was observed contradicts the expectation."""
    if name not in ("race", "chaos", "replay", "outage-2025"):
        console.fail(f"unknown scenario {name!r}: available: race, chaos, replay, outage-2025",
                     code=2)
    if name == "outage-2025":
        sg = safeguards or "off"
        try:
            kind = outage_run.OutageParams(safeguards=Safeguards.parse(sg),
                                           outside_fault=outside_fault).kind
        except ValueError as exc:
            console.fail(str(exc), code=2)
        console.progress(f"outage-2025, safeguards {sg}: expected: {outage.EXPECTED[kind]}")
        ok = outage_cli.run(sg, repeat, runs_dir, outside_fault=outside_fault,
                            outage_seconds=outage_seconds, dwfm_restart_after=dwfm_restart_after,
                            failover_off_after=failover_off_after)
        passed = sum(good for good, _ in ok)
        console.console.print(f"\n{passed}/{len(ok)} runs as expected")
        if passed != len(ok):
            raise typer.Exit(1)
        return
    if (name == "replay") != (trace is not None):
        console.fail("replay takes a trace (dnsrace check -o json > trace.json), and only "
                     "replay does", code=2)
    if name == "replay":
        assert trace is not None
        judged = run_replay(trace, prop, repeat, runs_dir)
        _sum_up(judged)
        return
    sg = safeguards or ("on" if name == "chaos" else "off")
    try:
        Safeguards.parse(sg)
        for f in fault or []:
            chaos.parse_fault(f)
    except ValueError as exc:
        console.fail(str(exc), code=2)
    if fault and name != "chaos":
        console.fail("--fault belongs to the chaos scenario", code=2)
    judged = (run_chaos(sg, repeat, runs_dir, fault or [], pause) if name == "chaos"
              else run_race(sg, repeat, runs_dir, stall))
    _sum_up(judged)


def _sum_up(judged: list[verdicts.Verdict]) -> None:
    passed = sum(v.passed for v in judged)
    console.console.print(f"\n{passed}/{len(judged)} runs as expected")
    if passed != len(judged):
        raise typer.Exit(1)


@app.command("judge")
def judge(
    run_dirs: Annotated[list[Path], typer.Argument(
        help="Run folders (runs/<stamp>-race-<safeguards>-<n>)", exists=True, file_okay=False)],
) -> None:
    """Judge recorded race runs again from their folders alone, and sum a series up.

    Prints each verdict and, for several, the series' figures (medians and ranges) that
    docs/benchmarks.md quotes; exit 1 when any run is not as expected.
    """
    outages = [d for d in run_dirs if outage_cli.is_outage_dir(d)]
    outage_ok = [outage_cli.judge_dir(d) for d in outages]
    judged = [judge_dir(d) for d in run_dirs if d not in outages]
    for v in judged:
        print_any(v)
    if len(outages) > 1:
        outage_cli.print_series(outages)
    rows = chaos.series([v.figures for v in judged if "steps" in v.figures])
    if rows:
        console.table("chaos series", list(rows[0]), [[str(x) for x in r.values()]
                                                      for r in rows])
    races = [v for v in judged if "steps" not in v.figures and "trace_final" not in v.figures]
    if len(races) > 1:
        console.table("series", ["figure", "value"], [
            [k, v] for k, v in verdicts.series(races).items()])
    passed = sum(v.passed for v in judged) + sum(outage_ok)
    total = len(judged) + len(outage_ok)
    console.console.print(f"\n{passed}/{total} runs as expected")
    if passed != total:
        raise typer.Exit(1)
