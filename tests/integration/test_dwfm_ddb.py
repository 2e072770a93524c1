"""``dnsrace dwfm`` against a real DynamoDB Local (its own, on port 18390): a small fleet takes
its leases, loses them when DynamoDB goes away (the store really gone, nothing flagged), and
re-establishes them through the queue when DynamoDB comes back empty (an in-memory DynamoDB
Local restarted has no table); and the same through the lab's real CoreDNS and DNS etcd, with a
record of the test's own removed (NXDOMAIN) and put back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from dnsrace import settings as settings_mod
from dnsrace.components import dwfm, leasestore
from dnsrace.core import dwfm as core
from dnsrace.core import records
from dnsrace.dnsstore import etcd as etcd_store
from dnsrace.localplane import binaries, dynamodb
from tests.conftest import Cluster

PORT = 18390
NAME = "dynamodb.us-east-1.sim.internal"
FLEET = core.DwfmParams(droplets=50, check_interval=1.0, lease_ttl=3.0, workers=4,
                        service_time=0.05, deadline=3.0)
"""50 droplets renewed every second (50 conditional writes/s); a lease lives 3 s; the queue's
workers re-establish 80 leases a second, so the whole fleet fits in one deadline."""


def _last(out: Path) -> dict[str, Any]:
    lines = out.read_text().splitlines() if out.exists() else []
    for line in reversed(lines):
        try:
            body: dict[str, Any] = json.loads(line)
        except ValueError:
            continue
        return body
    return {}


async def _until(out: Path, what: str, test: Any, timeout: float) -> tuple[dict[str, Any], float]:
    """Wait until the newest figures line satisfies ``test``; (that line, seconds waited)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        line = _last(out)
        if line and test(line):
            return line, time.monotonic() - started
        await asyncio.sleep(0.05)
    raise AssertionError(f"not within {timeout} s: {what}; last figures {_last(out)}")


@contextlib.asynccontextmanager
async def _backend(log: Path) -> AsyncIterator[dynamodb.Backend]:
    cfg = settings_mod.Settings.from_env()
    try:
        dynamodb.locate(cfg)
    except binaries.SetupError as exc:
        pytest.fail(f"{exc} (make setup fetches it)")
    backend = await dynamodb.start(cfg, log, port=PORT)
    print(f"DynamoDB Local answered {backend.started_in:.2f} s after launch")
    try:
        yield backend
    finally:
        await backend.stop()


async def test_an_empty_record_expires_the_leases(tmp_path: Path, cluster: Cluster,
                                                  dns_store: etcd_store.EtcdRecordStore) -> None:
    """Through the lab's real CoreDNS and DNS etcd: a name of this test's own (not the lab's
    regional endpoint, which scenarios reset) whose records are removed and put back."""
    name = f"dwfm-test.{cluster.cfg.dns.zone}"
    key = records.record_key(name, "a1")
    record = records.Record(host="127.0.0.1", ttl=1).encode()
    out = tmp_path / "dwfm.jsonl"
    await dns_store.delete_prefix(records.record_prefix(name))
    await dns_store.put_raw(key, record)
    async with _backend(tmp_path / "dynamodb-local.log"):
        store = leasestore.DynamoLeaseStore(
            endpoint=name, port=PORT, dns_server=cluster.cfg.dns.server_host,
            dns_port=cluster.cfg.dns.server_port, timeout=1.0)
        options = dwfm.Options(params=FLEET, out=out, tick=0.02, record_every=0.1)
        stop = asyncio.Event()
        task = asyncio.create_task(dwfm.run(options, store, stop))
        try:
            await _until(out, "every lease valid", lambda b: b["leases_valid"] == 50, 15.0)
            assert store.target == f"http://127.0.0.1:{PORT}"
            await dns_store.delete_prefix(records.record_prefix(name))  # CoreDNS: NXDOMAIN
            line, waited = await _until(out, "every lease expired",
                                        lambda b: b["leases_valid"] == 0, 15.0)
            print(f"NXDOMAIN: every lease expired {waited:.2f} s after the record was removed")
            assert store.outcomes["dns"] > 0
            assert line["store_unavailable"] > 0
            await dns_store.put_raw(key, record)
            line, waited = await _until(out, "every lease back",
                                        lambda b: b["leases_valid"] == 50, 20.0)
            print(f"every lease re-established {waited:.2f} s after the record came back")
            assert line["useful"] >= 50  # through the queue: the leases had expired
        finally:
            stop.set()
            await asyncio.wait_for(task, 15.0)
            await dns_store.delete_prefix(records.record_prefix(name))


async def test_leases_held_lost_with_dynamodb_and_re_established_after(tmp_path: Path) -> None:
    cfg = settings_mod.Settings.from_env()
    try:
        dynamodb.locate(cfg)
    except binaries.SetupError as exc:
        pytest.fail(f"{exc} (make setup fetches it)")
    log = tmp_path / "dynamodb-local.log"
    backend = await dynamodb.start(cfg, log, port=PORT)
    print(f"DynamoDB Local answered {backend.started_in:.2f} s after launch")
    out = tmp_path / "dwfm.jsonl"
    store = leasestore.DynamoLeaseStore(endpoint_url=backend.url, timeout=1.0)
    options = dwfm.Options(params=FLEET, out=out, tick=0.02, record_every=0.1)
    stop = asyncio.Event()
    launched = time.monotonic()
    task = asyncio.create_task(dwfm.run(options, store, stop))
    try:
        # 1. A fresh table: every lease is provisioned, then renewed by the state checks.
        line, waited = await _until(out, "every lease valid", lambda b: b["leases_valid"] == 50,
                                    15.0)
        print(f"50 leases valid {time.monotonic() - launched:.2f} s after the runner started")
        renewals, t0 = line["renewals"], time.monotonic()
        await asyncio.sleep(3.0)
        line = _last(out)
        rate = (line["renewals"] - renewals) / (time.monotonic() - t0)
        print(f"renewals: {rate:.1f}/s (50 droplets every 1 s), lag {line['lag'] * 1000:.1f} ms")
        assert line["leases_valid"] == 50
        assert line["renewals_failed"] == 0
        assert rate > 35
        assert store.outcomes["ok"] > 100

        # 2. DynamoDB goes away: renewals fail (refused), leases run out within ttl + interval.
        await backend.stop()
        stopped = time.monotonic()
        line, waited = await _until(out, "every lease expired",
                                    lambda b: b["leases_valid"] == 0, FLEET.lease_ttl + 5.0)
        print(f"every lease expired {waited:.2f} s after DynamoDB Local stopped; "
              f"{line['store_unavailable']} store calls unavailable")
        assert waited <= FLEET.lease_ttl + FLEET.check_interval + 1.0
        assert line["store_unavailable"] > 50
        assert line["renewals_failed"] > 0
        assert store.outcomes["connect"] > 0
        assert line["useful"] == 0  # every establish failed or is still queued
        assert line["queue_depth"] + line["in_service"] > 0

        # 3. DynamoDB comes back, in memory and empty: the table is created again and every
        # lease comes back through the queue (useful completions), not by provisioning.
        backend = await dynamodb.start(cfg, log, port=PORT)
        back = time.monotonic()
        print(f"DynamoDB Local back {back - stopped:.1f} s after it stopped")
        line, waited = await _until(out, "every lease re-established",
                                    lambda b: b["leases_valid"] == 50, 20.0)
        print(f"every lease re-established {waited:.2f} s after DynamoDB Local answered; "
              f"useful {line['useful']}, wasted {line['wasted']}, failed {line['failed']}")
        assert line["useful"] >= 50
        assert store.down_since is None
        assert store.outcomes["other"] >= 1  # the first call found no table
    finally:
        stop.set()
        runner = await asyncio.wait_for(task, 15.0)
        await backend.stop()
    assert runner.core is not None
    assert _last(out)["t"] >= line["t"]
