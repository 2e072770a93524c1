"""The serve-stale safeguard on real CoreDNS and a real etcd: while the store does not answer,
the stale port keeps serving the last answer and the plain port fails; a record really deleted
answers NXDOMAIN on both, so the race still shows.

A private etcd and CoreDNS, started here on their own ports with the Corefile the local plane
writes (``controlplane.render_corefile``), so pausing the store disturbs nothing else.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import dns.asyncquery
import dns.exception
import dns.message
import dns.rcode
import dns.rdatatype
import pytest

from dnsrace.core import records, stores
from dnsrace.dnsstore import etcd as etcd_store
from dnsrace.localplane import binaries, controlplane, processes
from tests.conftest import Cluster

NAME = "stale.probe.sim.internal"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclasses.dataclass
class Private:
    store: etcd_store.EtcdRecordStore
    etcd_pid: int
    plain: int
    stale: int


@pytest.fixture
async def private(cluster: Cluster, tmp_path: Path) -> AsyncIterator[Private]:
    bins = binaries.locate(cluster.cfg)
    client, peer = free_port(), free_port()
    url = f"http://127.0.0.1:{client}"
    procs = processes.Processes(tmp_path)
    etcd = procs.start("etcd", [
        str(bins["etcd"]), "--name=s", f"--data-dir={tmp_path / 'etcd'}",
        f"--listen-client-urls={url}", f"--advertise-client-urls={url}",
        f"--listen-peer-urls=http://127.0.0.1:{peer}",
        f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
        f"--initial-cluster=s=http://127.0.0.1:{peer}", "--log-level=warn"])
    local = dataclasses.replace(cluster.cfg.local, coredns_port=free_port(),
                                coredns_stale_port=free_port(),
                                coredns_metrics_port=free_port(),
                                coredns_ready_port=free_port())
    cfg = dataclasses.replace(cluster.cfg, local=local)
    (tmp_path / "Corefile").write_text(controlplane.render_corefile(cfg, url))
    procs.start("coredns", [str(bins["coredns"]), "-conf", str(tmp_path / "Corefile")])
    store = etcd_store.EtcdRecordStore.from_endpoint(f"127.0.0.1:{client}")
    for _ in range(100):
        ok, _ = controlplane.dns_soa_ok("127.0.0.1", local.coredns_stale_port, "sim.internal")
        if ok:
            break
        await asyncio.sleep(0.1)
    try:
        yield Private(store, etcd.pid, local.coredns_port, local.coredns_stale_port)
    finally:
        os.kill(etcd.pid, signal.SIGCONT)
        await store.close()
        procs.stop("coredns")
        procs.stop("etcd")


async def ask(port: int) -> tuple[str, list[str]]:
    query = dns.message.make_query(NAME + ".", dns.rdatatype.A)
    try:
        answer = await dns.asyncquery.udp(query, "127.0.0.1", port=port, timeout=3.0)
    except dns.exception.Timeout:
        return "TIMEOUT", []
    return dns.rcode.to_text(answer.rcode()), sorted(
        rr.to_text() for rrset in answer.answer for rr in rrset)


async def test_the_stale_port_answers_through_a_store_outage_and_still_shows_a_delete(
        private: Private) -> None:
    rec = {"p1-0": records.Record(ttl=1, host="127.0.10.9")}
    await private.store.apply(stores.Change(NAME, put=rec))
    for port in (private.plain, private.stale):
        assert await ask(port) == ("NOERROR", ["127.0.10.9"])

    os.kill(private.etcd_pid, signal.SIGSTOP)  # the store stops answering
    try:
        await asyncio.sleep(2.5)  # past the record's 1 s TTL: both caches must ask the store
        started = time.monotonic()
        stale = await ask(private.stale)
        stale_took = time.monotonic() - started
        plain = await ask(private.plain)
    finally:
        os.kill(private.etcd_pid, signal.SIGCONT)
    assert stale == ("NOERROR", ["127.0.10.9"]), "the last answer, served stale"
    assert stale_took < 1.0, "after the 200 ms verify, not the store's timeout"
    assert plain[0] in ("SERVFAIL", "TIMEOUT"), plain

    await private.store.apply(stores.Change(NAME, delete=rec))
    await asyncio.sleep(2.5)
    for port in (private.plain, private.stale):
        assert (await ask(port))[0] == "NXDOMAIN", "a deleted record is not hidden"
