"""``dnsrace scenario run outage-2025``: the run and its phase table beside the published one.

The command only parses options (in ``cli.scenario``), calls the runner
(``components.scenarios.outage``) and prints what the verdict (``core.outage``) found.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import statistics
from pathlib import Path

from dnsrace import settings as settings_mod
from dnsrace.cli import console
from dnsrace.components.scenarios import outage as outage_run
from dnsrace.core import outage
from dnsrace.core.safeguards import Safeguards
from dnsrace.report import phases as published

_D = outage_run.OutageParams()

PUBLISHED = dict(zip(outage.PHASES, published.PHASES, strict=False))
"""The lab's phase -> the incident's (the recovery has no row of its own there)."""


def _rel(t: float | None, t0: float) -> str:
    return "-" if t is None else f"{t - t0:+.1f}s"


def print_outage(j: outage.Judged, run_dir: Path, t_fault: float) -> None:
    colour = "green" if j.passed else "red"
    console.console.print(
        f"\n[bold]outage-2025, {j.kind}[/bold]: "
        f"[{colour}]{'as expected' if j.passed else 'NOT as expected'}[/{colour}] "
        f"({outage.EXPECTED[j.kind]})")
    rows = []
    for name in outage.PHASES:
        span = j.phases.get(name)
        aws = PUBLISHED.get(name)
        length = "-" if span is None or span.end is None else f"{span.end - span.start:.1f}s"
        rows.append([name, _rel(span.start if span else None, t_fault),
                     _rel(span.end if span else None, t_fault), length,
                     aws.span() if aws else "by 1:50 PM (EC2), 2:20 PM (event ends)"])
    console.table(f"phases, seconds after the fault ({run_dir})",
                  ["phase", "lab start", "lab end", "lab length", "AWS (PDT)"], rows)
    f = j.figures
    console.table("figures", ["figure", "value"], [[k, str(v)] for k, v in f.items()])
    for reason in j.reasons:
        console.console.print(f"[red]- {reason}[/red]")


def run(safeguards: str, repeat: int, runs_dir: Path, *, outside_fault: bool = False,
        outage_seconds: float = _D.outage, dwfm_restart_after: float = _D.dwfm_restart_after,
        failover_off_after: float = _D.failover_off_after) -> list[tuple[bool, Path]]:
    """Each run's outcome and folder."""
    cfg = settings_mod.Settings.from_env()
    params = outage_run.OutageParams(
        safeguards=Safeguards.parse(safeguards), outside_fault=outside_fault,
        outage=outage_seconds, dwfm_restart_after=dwfm_restart_after,
        failover_off_after=failover_off_after)
    results: list[tuple[bool, Path]] = []
    for i in range(repeat):
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        label = safeguards.replace(",", "+") + ("-outside" if outside_fault else "")
        run_dir = runs_dir / f"{stamp}-outage-2025-{label}-{i + 1}"
        console.progress(f"run {i + 1}/{repeat}: outage-2025 ({params.kind}) -> {run_dir}")
        try:
            judged = asyncio.run(outage_run.run_outage(cfg, params, run_dir, console.progress))
        except Exception as exc:  # a run that could not be carried out; the series goes on
            console.console.print(f"[red]the run could not be carried out: "
                                  f"{type(exc).__name__}: {str(exc)[:800]}[/red]")
            results.append((False, run_dir))
            continue
        rec, _, _ = outage.load(run_dir.resolve())
        print_outage(judged, run_dir, rec.t_fault)
        results.append((judged.passed, run_dir))
    return results


def is_outage_dir(run_dir: Path) -> bool:
    path = run_dir / "observed.json"
    return path.is_file() and json.loads(path.read_text()).get("scenario") == "outage-2025"


def judge_dir(run_dir: Path) -> bool:
    """Judge an outage-2025 folder again, print it; whether it was as expected."""
    rec, steps, kind = outage.load(run_dir.resolve())
    judged = outage.judge(rec, kind, steps)
    print_outage(judged, run_dir, rec.t_fault)
    return judged.passed


def print_series(run_dirs: list[Path]) -> None:
    """Each phase's length over a series: median and range, per kind (docs/benchmarks.md)."""
    by_kind: dict[str, list[outage.Judged]] = {}
    for d in run_dirs:
        rec, steps, kind = outage.load(d.resolve())
        by_kind.setdefault(kind, []).append(outage.judge(rec, kind, steps))
    for kind, runs in by_kind.items():
        rows = []
        for name in outage.PHASES:
            spans = [j.phases[name] for j in runs if name in j.phases]
            lengths = [s.end - s.start for s in spans if s.end is not None]
            rows.append([name, f"{len(lengths)}/{len(runs)}",
                         f"{statistics.median(lengths):.1f}" if lengths else "-",
                         f"{min(lengths):.1f} to {max(lengths):.1f}" if lengths else "-"])
        console.table(f"outage-2025 series, {kind}: {sum(j.passed for j in runs)}/{len(runs)} "
                      "as expected", ["phase", "runs with it", "median length (s)", "range (s)"],
                      rows)
