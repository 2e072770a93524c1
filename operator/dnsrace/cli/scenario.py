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
from dnsrace.components.scenarios import race
from dnsrace.core import verdicts
from dnsrace.core.safeguards import Safeguards

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
            # A run that could not be carried out (the lab did not come up, a store or the API
            # server gone for longer than the runner waits) counts as not as expected; the
            # series goes on.
            verdict = verdicts.Verdict(
                safeguards=str(params.safeguards), expected="a run", passed=False,
                reasons=[f"the run could not be carried out: {exc!r}"], figures={},
                run_dir=str(run_dir))
        print_verdict(verdict)
        judged.append(verdict)
    return judged


@app.command("run")
def run(
    name: Annotated[str, typer.Argument(help="Scenario name (race)")],
    safeguards: Annotated[str, typer.Option(
        help="off, on (fencing, protect-active, no-empty, self-heal, serve-stale), or a comma "
        "list of "
        "those and single-writer")] = "off",
    repeat: Annotated[int, typer.Option(min=1, help="Runs in a row")] = 1,
    runs_dir: Annotated[Path, typer.Option(help="Where run folders go")] = Path("runs"),
    stall: Annotated[float | None, typer.Option(
        help="enactor-a's stall on the regional endpoint, seconds (default: derived)")] = None,
) -> None:
    """Run a scenario; exit 1 when what was observed contradicts the expectation."""
    if name != "race":
        console.fail(f"unknown scenario {name!r}: available: race", code=2)
    try:
        Safeguards.parse(safeguards)
    except ValueError as exc:
        console.fail(str(exc), code=2)
    judged = run_race(safeguards, repeat, runs_dir, stall)
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
    judged = [verdicts.judge(verdicts.RunRecord.load(d), str(d)) for d in run_dirs]
    for v in judged:
        print_verdict(v)
    if len(judged) > 1:
        console.table("series", ["figure", "value"], [
            [k, v] for k, v in verdicts.series(judged).items()])
    passed = sum(v.passed for v in judged)
    console.console.print(f"\n{passed}/{len(judged)} runs as expected")
    if passed != len(judged):
        raise typer.Exit(1)
