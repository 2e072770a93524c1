"""``dnsrace bench``: run the benchmarks on the local control plane and print a Markdown table."""

from __future__ import annotations

import asyncio
import datetime
from pathlib import Path
from typing import Annotated

import typer

from dnsrace import settings as settings_mod
from dnsrace.cli import console
from dnsrace.components import bench


def bench_cmd(
    endpoints: Annotated[int, typer.Option(help="Endpoints per plan")] = 100,
    iterations: Annotated[int, typer.Option(help="Plans created (samples = plans x endpoints)")]
    = 30,
    writes: Annotated[int, typer.Option(help="Endpoints written in the write-rate run")] = 2000,
    runs_dir: Annotated[Path, typer.Option(help="Where the enactors' logs go")] = Path("runs"),
) -> None:
    """Plan-to-answer latency (p50/p99) with 3 enactors, and one enactor's writes per second."""
    cfg = settings_mod.Settings.from_env()
    run_dir = runs_dir / datetime.datetime.now().strftime("%Y%m%d-%H%M%S-bench")
    rate = asyncio.run(bench.enactor_writes(cfg, writes))
    console.progress(f"one enactor: {rate:.0f} endpoint writes/s over {writes} endpoints")
    latency = asyncio.run(bench.plan_to_answer(cfg, run_dir, console.progress,
                                               endpoints=endpoints, iterations=iterations))
    print(bench.summary(latency, rate, endpoints))
