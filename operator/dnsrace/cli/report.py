"""``dnsrace report``: the incident report of recorded race runs (HTML or Markdown)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from dnsrace import report as report_mod
from dnsrace.cli import console


def report_cmd(
    run_dirs: Annotated[list[Path], typer.Argument(
        help="Run folders (runs/<stamp>-race-<safeguards>-<n>); several are stacked on one "
        "time axis", exists=True, file_okay=False)],
    out: Annotated[Path | None, typer.Option(
        help="Where to write it (default: RUN_DIR/report.<format> for one run, "
        "./report.<format> for several)")] = None,
    fmt: Annotated[str, typer.Option(
        "--format", help="html (one self-contained file) or md (Markdown for a pull-request "
        "comment, its PNGs beside it)")] = "html",
) -> None:
    """Draw the timelines of recorded runs, the published AWS phases, the verdicts (recomputed
    and checked against verdict.json), what happened in order and how to run it again."""
    if fmt not in ("html", "md"):
        console.fail(f"unknown format {fmt!r}: available: html, md", code=2)
    target = out or (run_dirs[0] if len(run_dirs) == 1 else Path(".")) / f"report.{fmt}"
    started = time.monotonic()
    written = report_mod.write_report(run_dirs, target, fmt)
    console.progress(f"report: {written} ({time.monotonic() - started:.1f}s)")
