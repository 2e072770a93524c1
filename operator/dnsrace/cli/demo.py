"""``dnsrace demo``: the main job. Bring the local control plane up, run the race with the
safeguards off and then on, and print both verdicts; exit 1 if either contradicts expectation."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from dnsrace import settings as settings_mod
from dnsrace.cli import console
from dnsrace.cli import scenario as scenario_cli
from dnsrace.localplane import binaries, controlplane
from dnsrace.report import write_report


def _clients(f: dict[str, Any]) -> str:
    """The DynamoDB clients' view in one cell: the same shares the verdict judged."""
    def pct(key: str) -> str:
        value = f.get(key)
        return "-" if value is None else f"{value:.1%}"

    during = pct("client_dns_share_while_empty") if "client_dns_share_while_empty" in f \
        else f"{f.get('client_dns_errors', '-')} errors"
    after = pct("client_ok_after_recovery") if "client_ok_after_recovery" in f \
        else pct("client_ok_after_fault")
    return f"{pct('client_ok_before_fault')} / {during} / {after}"


def demo(
    runs_dir: Annotated[Path, typer.Option(help="Where the run folders go")] = Path("runs"),
) -> None:
    """Start the local control plane (reused if up), run the race off then on, report."""
    cfg = settings_mod.Settings.from_env()
    plane = controlplane.LocalPlane(cfg, report=console.progress)
    try:
        plane.up()
    except (binaries.SetupError, controlplane.PlaneError) as exc:
        console.fail(str(exc))
    verdicts = [v for sg in ("off", "on") for v in scenario_cli.run_race(sg, 1, runs_dir)]
    console.table("demo: the race, safeguards off then on",
                  ["safeguards", "as expected", "records removed (s)", "first NXDOMAIN (s)",
                   "regional empty (s)", "empty answers", "stale: DNS / store", "blocked",
                   "clients ok before / DNS errors while empty / ok after",
                   "run folder"],
                  [[v.safeguards, "yes" if v.passed else "NO",
                    str(v.figures.get("time_to_records_removed", "-")),
                    str(v.figures.get("time_to_first_empty", "-")),
                    str(v.figures.get("regional_empty_window")),
                    str(v.figures.get("empty_answers")),
                    f"{v.figures.get('stale_regressions')} / {v.figures.get('store_regressions')}",
                    str(v.figures.get("blocked")), _clients(v.figures), v.run_dir]
                   for v in verdicts])
    dirs = [Path(v.run_dir) for v in verdicts if (Path(v.run_dir) / "verdict.json").exists()]
    if dirs:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        out = write_report(dirs, runs_dir / f"{stamp}-demo-report.html")
        console.console.print(f"The report, both runs on one time axis: {out.resolve()}")
    console.console.print("Stop the local control plane with: make local-down")
    if not all(v.passed for v in verdicts):
        raise typer.Exit(1)
