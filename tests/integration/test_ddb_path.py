"""The DynamoDB data path on real parts: DynamoDB Local, LB nodes, CoreDNS and the DNS etcd.

- An LB node process (``dnsrace lbnode --backend``) at its capacity answers throttled
  (``ThrottlingException``) instead of dropping: every request of a burst gets an answer.
- A node whose backend is missing fails at start naming the setting; capacity 0 is refused.
- ``dnsrace ddb-client`` workers: a name with no records in the real CoreDNS gives ``dns``
  (NXDOMAIN); through a node to DynamoDB Local they get ``ok``; a backend killed mid-run gives
  ``connect``, never ``dns``; the record deleted reaches every worker as ``dns`` within its TTL
  plus CoreDNS's cache.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiobotocore.session
import pytest
from aiobotocore.config import AioConfig

from dnsrace import settings as settings_mod
from dnsrace.components import ddbclient, lbnode, serving
from dnsrace.core import ddb, records
from dnsrace.dnsstore import etcd as etcd_store
from dnsrace.localplane import binaries, dynamodb
from tests.conftest import Cluster


def free_port(address: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
async def backend(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[dynamodb.Backend]:
    cfg = settings_mod.Settings.from_env()
    try:
        dynamodb.locate(cfg)
    except binaries.SetupError as exc:
        pytest.fail(str(exc))
    log = tmp_path_factory.mktemp("ddb") / "dynamodb-local.log"
    started = await dynamodb.start(cfg, log, port=free_port("127.0.0.1"))
    print(f"DynamoDB Local answered {started.started_in:.2f}s after launch")
    try:
        yield started
    finally:
        await started.stop()


def _ddb_cfg(cfg: settings_mod.Settings, **changes: Any) -> settings_mod.Settings:
    return dataclasses.replace(cfg, ddb=dataclasses.replace(cfg.ddb, **changes))


async def _create_table(url: str, table: str) -> None:
    session = aiobotocore.session.get_session()
    async with session.create_client(
            "dynamodb", region_name="us-east-1", endpoint_url=url,
            aws_access_key_id="t", aws_secret_access_key="t") as client:
        with contextlib.suppress(client.exceptions.ResourceInUseException):
            await client.create_table(
                TableName=table, BillingMode="PAY_PER_REQUEST",
                AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}])


async def _wait_http(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not await dynamodb.ping(url, timeout=0.5):
        if time.monotonic() > deadline:
            pytest.fail(f"nothing answered the DynamoDB API at {url} within {timeout}s")
        await asyncio.sleep(0.2)


# --- LB node ----------------------------------------------------------------------------------


async def test_lbnode_at_capacity_throttles_rather_than_drops(
        cluster: Cluster, namespace: str, backend: dynamodb.Backend, tmp_path: Path) -> None:
    await _create_table(backend.url, "burst")
    index = 45
    address = lbnode.address_for(index)
    env = dict(os.environ, DNSRACE_KUBECONFIG=str(cluster.kubeconfig),
               DNSRACE_NAMESPACE=namespace, DNSRACE_HTTP_PORT="0", PYTHONUNBUFFERED="1")
    log = tmp_path / "lbnode.log"
    with log.open("w") as fh:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "dnsrace", "lbnode", f"--name=lbnode-{index}",
            f"--backend={backend.host}:{backend.port}", "--capacity=2", "--wait=0.2",
            env=env, stdout=fh, stderr=subprocess.STDOUT)
    url = f"http://{address}:{lbnode.PORT}"
    try:
        await _wait_http(url, 30)
        session = aiobotocore.session.get_session()
        config = AioConfig(retries={"total_max_attempts": 1}, max_pool_connections=200,
                           read_timeout=10, connect_timeout=5)
        async with session.create_client(
                "dynamodb", region_name="us-east-1", endpoint_url=url,
                aws_access_key_id="t", aws_secret_access_key="t", config=config) as client:

            async def one(i: int) -> tuple[ddb.Classified, float]:
                started = time.perf_counter()
                try:
                    await client.put_item(
                        TableName="burst", Item={"pk": {"S": f"k{i % 16}"},
                                                 "version": {"N": str(i)}},
                        ConditionExpression="attribute_not_exists(pk) OR version < :v",
                        ExpressionAttributeValues={":v": {"N": str(i)}})
                    got = ddb.classify(None)
                except ddbclient.client_errors() as exc:
                    got = ddb.classify(exc)
                return got, time.perf_counter() - started

            results = await asyncio.gather(*(one(i) for i in range(200)))
            outcomes = collections.Counter(r.outcome for r, _ in results)
            assert set(outcomes) <= {ddb.Outcome.OK, ddb.Outcome.THROTTLED}, \
                f"every request answered, none dropped: {outcomes}"
            assert outcomes[ddb.Outcome.OK] >= 2
            assert outcomes[ddb.Outcome.THROTTLED] >= 50, outcomes
            assert {r.detail for r, _ in results if r.outcome is ddb.Outcome.THROTTLED} == \
                {"ThrottlingException"}
            # Below capacity the same node serves everything.
            calm = [await one(1000 + i) for i in range(20)]
            assert all(r.outcome is ddb.Outcome.OK for r, _ in calm)
    finally:
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), 20) == 0, log.read_text()


async def test_lbnode_without_backend_fails_naming_the_setting() -> None:
    cfg = _ddb_cfg(settings_mod.Settings(), backend_port=free_port("127.0.0.1"),
                   lb_forward=True)
    front = lbnode.FrontDoor("lbnode-46", cfg.ddb)
    with pytest.raises(lbnode.BackendMissing, match="DNSRACE_DDB_BACKEND"):
        await front.start(wait=1.0)
    await front.close()


def test_lbnode_capacity_zero_and_negative_wait_are_refused() -> None:
    for args, setting in ((["--capacity=0"], "ddb.lb_capacity"), (["--wait=-1"], "ddb.lb_wait")):
        proc = subprocess.run(
            [sys.executable, "-m", "dnsrace", "lbnode", "--name=lbnode-46", *args],
            capture_output=True, text=True, timeout=60, check=False)
        assert proc.returncode == 2
        assert setting in proc.stderr + proc.stdout


def test_client_outside_the_zone_is_refused() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "dnsrace", "ddb-client",
         "--endpoint=dynamodb.us-east-1.amazonaws.com"],
        capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2
    assert "ddb.endpoint" in proc.stderr + proc.stdout


# --- client -----------------------------------------------------------------------------------


async def _run_client(cfg: settings_mod.Settings, out: Path, port: int,
                      stop: asyncio.Event) -> asyncio.Task[None]:
    return asyncio.create_task(ddbclient.run(cfg, out, stop, port=port, workers=3, rate=20.0))


def _since(out: Path, t: float) -> list[ddbclient.Request]:
    return [r for r in ddbclient.read_records(out) if r.t >= t] if out.exists() else []


async def test_client_name_without_records_is_dns(cluster: Cluster, tmp_path: Path) -> None:
    name = f"{uuid.uuid4().hex[:8]}.ddb.{cluster.cfg.dns.zone}"
    cfg = _ddb_cfg(cluster.cfg, endpoint=name)
    out = tmp_path / "client.jsonl"
    stop = asyncio.Event()
    task = await _run_client(cfg, out, lbnode.PORT, stop)
    await asyncio.sleep(2.0)
    stop.set()
    await asyncio.wait_for(task, 20)
    seen = ddbclient.read_records(out)
    assert len(seen) >= 20
    assert {(r.outcome, r.detail) for r in seen} == {("dns", "NXDOMAIN")}
    assert {r.worker for r in seen} == {0, 1, 2}
    assert all(r.target is None for r in seen)


async def test_client_ok_then_dead_backend_is_connect_then_empty_record_is_dns(
        cluster: Cluster, dns_store: etcd_store.EtcdRecordStore, backend: dynamodb.Backend,
        tmp_path: Path) -> None:
    name = f"{uuid.uuid4().hex[:8]}.ddb.{cluster.cfg.dns.zone}"
    index = 47
    address = lbnode.address_for(index)
    port = free_port(address)
    cfg = _ddb_cfg(cluster.cfg, endpoint=name, backend_host=backend.host,
                   backend_port=backend.port, lb_forward=True, table="path-test")
    front = lbnode.FrontDoor(f"lbnode-{index}", cfg.ddb)
    await front.start(wait=10)
    runner = await serving.serve(address, port,
                                 app=lbnode.make_app(f"lbnode-{index}", index, address, front))
    ttl = 1
    key = records.record_key(name, "x1")
    await dns_store.put_raw(key, records.Record(ttl=ttl, host=address).encode())
    out = tmp_path / "client.jsonl"
    stop = asyncio.Event()
    task = await _run_client(cfg, out, port, stop)
    try:
        # Through the node to DynamoDB Local: ok, once the client has created its table.
        deadline = time.monotonic() + 20
        while True:
            recent = _since(out, time.time() - 1.0)
            if len(recent) > 20 and all(r.outcome == "ok" for r in recent):
                break
            if time.monotonic() > deadline or task.done():
                pytest.fail(f"no steady ok: {collections.Counter(r.outcome for r in recent)}")
            await asyncio.sleep(0.3)
        assert {r.target for r in recent} == {address}

        await backend.stop()
        killed = time.time()
        await asyncio.sleep(2.0)
        after = _since(out, killed + 0.5)
        assert len(after) > 10
        assert {r.outcome for r in after} == {"connect"}, \
            collections.Counter((r.outcome, r.detail) for r in after)

        await dns_store.delete_prefix(records.record_prefix(name))
        deleted = time.time()
        # Within the record's TTL plus CoreDNS's cache bound, every worker sees the name gone.
        window = ttl + cluster.cfg.dns.cache_ttl + 1.0
        await asyncio.sleep(window + 1.0)
        late = _since(out, deleted + window)
        assert {r.worker for r in late} == {0, 1, 2}
        assert {(r.outcome, r.detail) for r in late} == {("dns", "NXDOMAIN")}
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)
        await runner.cleanup()
        await front.close()
        await dns_store.delete_prefix(records.record_prefix(name))
