"""``dnsrace demo``: the main job. Bring the local control plane up, run ``outage-2025`` with the
safeguards off and then on, print each run's phases beside the published ones, and write one
report of both; exit 1 if either contradicts its expectation."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Annotated

import typer

from dnsrace import settings as settings_mod
from dnsrace.cli import console
from dnsrace.cli import outage as outage_cli
from dnsrace.localplane import binaries, controlplane
from dnsrace.report import write_report


def demo(
    runs_dir: Annotated[Path, typer.Option(help="Where the run folders go")] = Path("runs"),
) -> None:
    """Start the local control plane (reused if up), run outage-2025 off then on, report."""
    cfg = settings_mod.Settings.from_env()
    plane = controlplane.LocalPlane(cfg, report=console.progress)
    try:
        plane.up()
    except (binaries.SetupError, controlplane.PlaneError) as exc:
        console.fail(str(exc))
    runs = [r for sg in ("off", "on") for r in outage_cli.run(sg, 1, runs_dir)]
    dirs = [d for _, d in runs if (d / "outage.json").exists()]
    if dirs:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        out = write_report(dirs, runs_dir / f"{stamp}-demo-report.html")
        console.console.print(f"The report, both runs on one time axis: {out.resolve()}")
    console.console.print("Stop the local control plane with: make local-down")
    if not all(ok for ok, _ in runs):
        raise typer.Exit(1)
