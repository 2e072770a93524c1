"""Benchmark of the DynamoDB data path: requests per second through one LB node and through all.

Who calls it: ``dnsrace bench`` (``bench_ddb``), whose table goes into docs/benchmarks.md by
hand. Why: the cascade's load (DWFM's lease checks, the clients' retries) must be sized against
what the front door and DynamoDB Local really carry on the machine.

What runs: DynamoDB Local (``localplane.dynamodb.start``), ``nodes`` LB node processes (each a
``FrontDoor`` on 127.0.10.<101+i>, started as ``python -m dnsrace.components.ddbbench node``
so that they do not share the client's event loop, and registered nowhere), and the
``ddbclient`` workers in this process, closed loop (no pacing), resolving a fresh bench name
through the real CoreDNS. The name's records are written to the DNS etcd directly: first one
node's address, then every node's. Figures are ok requests per second and the p50/p99 of their
latency; other outcomes (throttled above all) are counted beside them. An unmeasured warm-up
case runs first, so that the JVM's warm-up is charged to neither.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import os
import signal
import socket
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

from dnsrace import settings as settings_mod
from dnsrace.components import ddbclient, lbnode, serving
from dnsrace.core import records
from dnsrace.dnsstore import etcd as etcd_store
from dnsrace.localplane import dynamodb

Report = Callable[[str], None]
FIRST_NODE = 100
"""Bench nodes use indexes 100.. (127.0.10.101..), away from the lab's lbnode-0..."""


@dataclasses.dataclass(frozen=True)
class Throughput:
    case: str
    nodes: int
    workers: int
    seconds: float
    ok_per_second: float
    p50_ms: float
    p99_ms: float
    outcomes: dict[str, int]


@dataclasses.dataclass(frozen=True)
class DdbBench:
    backend_start_seconds: float
    cases: list[Throughput]


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _free_port(address: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])


async def _start_node(index: int, port: int, cfg: settings_mod.Settings,
                      log: Path) -> asyncio.subprocess.Process:
    env = dict(os.environ, DNSRACE_DDB_BACKEND=f"{cfg.ddb.backend_host}:{cfg.ddb.backend_port}",
               DNSRACE_LB_CAPACITY=str(cfg.ddb.lb_capacity),
               DNSRACE_LB_WAIT=str(cfg.ddb.lb_wait))
    with log.open("ab") as fh:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "dnsrace.components.ddbbench", "node", str(index), str(port),
            env=env, stdout=fh, stderr=fh)


async def _case(cfg: settings_mod.Settings, store: etcd_store.EtcdRecordStore, run_dir: Path,
                case: str, addresses: Sequence[str], port: int, workers: int,
                seconds: float) -> Throughput:
    name = f"{case}-{uuid.uuid4().hex[:6]}.bench.{cfg.dns.zone}"
    for i, address in enumerate(addresses):
        await store.put_raw(records.record_key(name, f"n{i}"),
                            records.Record(ttl=cfg.dns.record_ttl, host=address).encode())
    out = run_dir / f"ddb-bench-{case}.jsonl"
    bench_cfg = dataclasses.replace(cfg, ddb=dataclasses.replace(cfg.ddb, endpoint=name))
    stop = asyncio.Event()
    task = asyncio.create_task(ddbclient.run(bench_cfg, out, stop, port=port, workers=workers,
                                             rate=0.0))
    try:
        await asyncio.sleep(2.0)  # warm-up: connections, the JVM's JIT
        started = time.time()
        await asyncio.sleep(seconds)
        ended = time.time()
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await store.delete_prefix(records.record_prefix(name))
    window = [r for r in ddbclient.read_records(out) if started <= r.t < ended]
    ok = [r.latency_ms for r in window if r.outcome == "ok"]
    return Throughput(case, len(addresses), workers, round(ended - started, 2),
                      round(len(ok) / (ended - started), 1), round(percentile(ok, 0.5), 2),
                      round(percentile(ok, 0.99), 2),
                      dict(collections.Counter(r.outcome for r in window)))


async def bench_ddb(cfg: settings_mod.Settings, run_dir: Path, report: Report, *,
                    nodes: int = 3, workers: int = 16, seconds: float = 10.0) -> DdbBench:
    """DynamoDB requests per second, p50 and p99 through one LB node, then through ``nodes``.

    Needs the local plane's CoreDNS and DNS etcd (``make local-up``) and DynamoDB Local in the
    cache (``make setup``). Everything it starts it stops; the records it writes it deletes.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    port = _free_port("127.0.0.1")
    backend = await dynamodb.start(cfg, run_dir / "dynamodb-local.log", port=port)
    cfg = dataclasses.replace(cfg, ddb=dataclasses.replace(
        cfg.ddb, backend_host=backend.host, backend_port=backend.port, lb_forward=True))
    report(f"DynamoDB Local {dynamodb.VERSION} answered {backend.started_in:.1f}s after launch")
    addresses = [lbnode.address_for(FIRST_NODE + i) for i in range(nodes)]
    node_port = _free_port(addresses[0])
    procs: list[asyncio.subprocess.Process] = []
    store = etcd_store.EtcdRecordStore.from_endpoint(cfg.dns.etcd_endpoint)
    try:
        for i in range(nodes):
            procs.append(await _start_node(FIRST_NODE + i, node_port, cfg,
                                           run_dir / f"lbnode-{FIRST_NODE + i}.log"))
        for address in addresses:
            deadline = time.monotonic() + 30
            while not await dynamodb.ping(f"http://{address}:{node_port}", timeout=0.5):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"bench LB node {address}:{node_port} did not start")
                await asyncio.sleep(0.2)
        # Unmeasured: a cold JVM's first seconds (class loading, JIT) would otherwise be
        # charged to whichever case ran first.
        await _case(cfg, store, run_dir, "warm-up", addresses, node_port, workers, seconds / 2)
        cases = []
        for case, targets in (("one-node", addresses[:1]), ("all-nodes", addresses)):
            result = await _case(cfg, store, run_dir, case, targets, node_port, workers,
                                 seconds)
            report(f"{case}: {result.ok_per_second:.0f} ok/s, p50 {result.p50_ms:.1f} ms, "
                   f"p99 {result.p99_ms:.1f} ms, outcomes {result.outcomes}")
            cases.append(result)
        return DdbBench(round(backend.started_in, 2), cases)
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        await store.close()
        await backend.stop()


async def _node(index: int, port: int) -> None:
    """One bench LB node: the front door and /health, on its address, until SIGTERM."""
    cfg = settings_mod.Settings.from_env()
    name = f"lbnode-{index}"
    address = lbnode.address_for(index)
    front = lbnode.FrontDoor(name, cfg.ddb)
    await front.start(cfg.ddb.backend_start_timeout)
    runner = await serving.serve(address, port, app=lbnode.make_app(name, index, address, front))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        await front.close()


if __name__ == "__main__":
    if sys.argv[1:2] != ["node"] or len(sys.argv) != 4:
        sys.exit("usage: python -m dnsrace.components.ddbbench node INDEX PORT")
    asyncio.run(_node(int(sys.argv[2]), int(sys.argv[3])))
