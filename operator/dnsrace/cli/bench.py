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
    ddb_seconds: Annotated[float, typer.Option(
        help="Seconds per DynamoDB throughput case (0 skips them)")] = 10.0,
) -> None:
    """Plan-to-answer latency (p50/p99) with 3 enactors, one enactor's writes per second, and
    DynamoDB requests per second (p50/p99) through one LB node and through three."""
    cfg = settings_mod.Settings.from_env()
    run_dir = runs_dir / datetime.datetime.now().strftime("%Y%m%d-%H%M%S-bench")
    rate = asyncio.run(bench.enactor_writes(cfg, writes))
    console.progress(f"one enactor: {rate:.0f} endpoint writes/s over {writes} endpoints")
    latency = asyncio.run(bench.plan_to_answer(cfg, run_dir, console.progress,
                                               endpoints=endpoints, iterations=iterations))
    print(bench.summary(latency, rate, endpoints))
    if ddb_seconds > 0:
        from dnsrace.components import ddbbench  # aiobotocore: slow to import

        result = asyncio.run(ddbbench.bench_ddb(cfg, run_dir / "ddb", console.progress,
                                                seconds=ddb_seconds))
        print(f"\nDynamoDB Local answered {result.backend_start_seconds:.1f} s after launch\n")
        print("| case | LB nodes | workers | ok requests/s | p50 | p99 | outcomes |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for c in result.cases:
            print(f"| {c.case} | {c.nodes} | {c.workers} | {c.ok_per_second:.0f} | "
                  f"{c.p50_ms:.1f} ms | {c.p99_ms:.1f} ms | {c.outcomes} |")
