"""Benchmarks: plan-to-answer latency through the whole loop, and one enactor's write rate.

Called by ``dnsrace bench`` (``make bench``); results go into docs/benchmarks.md by hand, with
the command. Timed assertions never live in tests; these numbers are measured here.

Plan-to-answer: three enactor processes run (no planner, no faults); each iteration creates one
DnsPlan whose endpoints are fresh names, then watches the DNS etcd's active markers and, the
moment an endpoint's marker shows the new plan, asks CoreDNS for it once. Fresh names mean that
first query is never answered from CoreDNS's cache (a name polled before it exists would get a
cached NXDOMAIN for up to 5 s), so the latency is creation -> first correct answer. Clean-up
deletes nothing meanwhile (see ``plan_to_answer``).

Writes per second: one in-process ``core.enacting.Enactor`` against the real DNS etcd applies a
plan with many endpoints; each endpoint is a read plus one transaction, as in production.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from pathlib import Path
from typing import Any

from dnsrace import settings as settings_mod
from dnsrace.components.scenarios import lab as lab_mod
from dnsrace.core import enacting, plans, records, stores
from dnsrace.core.safeguards import Safeguards
from dnsrace.dnsstore import etcd as etcd_store
from dnsrace.kube import plans as kube_plans

Report = lab_mod.Report


@dataclasses.dataclass(frozen=True)
class Latency:
    samples: int
    p50: float
    p99: float
    max: float


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _bench_plan(serial: int, tag: str, endpoints: int) -> plans.Plan:
    return plans.Plan(serial=serial, name=plans.object_name(serial), endpoints=tuple(
        plans.Endpoint(name=f"{tag}-{i}.bench.{settings_mod.ZONE}", ttl=5,
                       targets=(plans.Target(f"127.0.20.{1 + i % 200}", 10),))
        for i in range(endpoints)))


async def plan_to_answer(cfg: settings_mod.Settings, run_dir: Path, report: Report, *,
                         endpoints: int = 100, iterations: int = 10,
                         safeguards: str = "off") -> Latency:
    # Fresh names make every earlier plan active on its own endpoints, so a clean-up would
    # remove 100 endpoints' records in each of the three finalizers, which the real loop never
    # does (its older plans are active nowhere); the plans are therefore all kept.
    params = lab_mod.LabParams(safeguards=Safeguards.parse(safeguards),
                                 keep=iterations + 1)
    samples: list[float] = []
    async with lab_mod.Lab(cfg, params, run_dir, report) as lab:
        await lab.reset()
        for i, name in enumerate(cfg.lab.enactors):
            await lab.start(name, "enactor", "--name", name, port=18300 + i)
        store = kube_plans.KubePlanStore(lab.api, lab.ns, cfg.dns.zone)
        serial = await lab.newest_serial() + 1000
        await asyncio.sleep(8)  # enactors' watches up (kopf start-up)
        prefix = records.active_prefix(lab.ns).encode()
        for it in range(iterations):
            serial += 1
            plan = _bench_plan(serial, f"b{uuid.uuid4().hex[:6]}", endpoints)
            pending = {e.name for e in plan.endpoints}
            answers: list[asyncio.Task[tuple[str, list[str]]]] = []
            # A watch on the markers, not polling, so the measurement adds no load of its own.
            watch = await lab.store.client.watch_prefix(prefix)
            started = time.monotonic()
            await store.create(plan)

            async def answer(name: str, t0: float = started) -> tuple[str, list[str]]:
                result = await lab_mod.dns_query(cfg, name)
                samples.append(time.monotonic() - t0)
                return result

            async def follow(serial: int = serial, pending: set[str] = pending,
                             answers: list[asyncio.Task[tuple[str, list[str]]]] = answers,
                             watch: Any = watch) -> None:
                async for event in watch:
                    if event.kind != "PUT":
                        continue
                    name = event.kv.key.decode()[len(prefix):]
                    marker = stores.ActiveMarker.decode(event.kv.value)
                    if marker.serial == serial and name in pending:
                        pending.discard(name)
                        answers.append(asyncio.create_task(answer(name)))
                        if not pending:
                            return

            try:
                await asyncio.wait_for(follow(), timeout=30)
            except TimeoutError:
                pass
            finally:
                await watch.cancel()
            results = await asyncio.gather(*answers)
            wrong = [r for r in results if r[0] != "NOERROR" or not r[1]]
            if pending or wrong:
                raise RuntimeError(f"iteration {it}: {len(pending)} endpoints never applied, "
                                   f"{len(wrong)} answered wrongly")
            report(f"plan {serial}: {endpoints} endpoints answered, last after "
                   f"{max(samples[-endpoints:]):.3f}s")
    return Latency(len(samples), _percentile(samples, 0.5), _percentile(samples, 0.99),
                   max(samples))


async def enactor_writes(cfg: settings_mod.Settings, endpoints: int = 2000) -> float:
    """Endpoint writes per second of one enactor, against the real DNS etcd."""
    store = etcd_store.EtcdRecordStore.from_endpoint(cfg.dns.etcd_endpoint, scope="bench")
    try:
        plan_store = enacting.MemoryPlanStore()
        plan = _bench_plan(1, f"w{uuid.uuid4().hex[:6]}", endpoints)
        plan_store.add(plan)
        enactor = enacting.Enactor("bench", store, plan_store, Safeguards())
        started = time.monotonic()
        for endpoint in plan.endpoints:
            outcome = await enactor.apply_endpoint(plan, endpoint)
            if outcome.result is not enacting.Result.APPLIED:
                raise RuntimeError(f"{endpoint.name}: {outcome}")
        rate = endpoints / (time.monotonic() - started)
        await store.delete_prefix(records.name_path(f"bench.{settings_mod.ZONE}") + "/")
        await store.delete_prefix(records.active_prefix("bench"))
        return rate
    finally:
        await store.close()


def summary(latency: Latency, rate: float, endpoints: int) -> str:
    return "\n".join([
        "| figure | value |",
        "| --- | --- |",
        f"| plan-to-answer p50 ({endpoints} endpoints, 3 enactors, {latency.samples} samples) "
        f"| {latency.p50 * 1000:.0f} ms |",
        f"| plan-to-answer p99 | {latency.p99 * 1000:.0f} ms |",
        f"| plan-to-answer max | {latency.max * 1000:.0f} ms |",
        f"| one enactor's endpoint writes per second | {rate:.0f} /s |",
    ])
