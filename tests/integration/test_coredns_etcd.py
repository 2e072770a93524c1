"""CoreDNS serving the lab zone from the DNS etcd: real queries against the real processes.

Which answer each failure gives matters for the race: deleted keys give NXDOMAIN (after the
cache's TTL), and an unreachable DNS etcd gives SERVFAIL.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import dns.message
import dns.query
import dns.rcode
import dns.rdatatype

from dnsrace.core import records, stores
from dnsrace.dnsstore import etcd as etcd_store
from tests.conftest import Cluster, local_only


def query(cluster: Cluster, name: str, rdtype: str = "A",
          timeout: float = 8.0) -> dns.message.Message:
    dnscfg = cluster.cfg.dns
    msg = dns.message.make_query(name + ".", dns.rdatatype.from_text(rdtype))
    return dns.query.udp(msg, dnscfg.server_host, port=dnscfg.server_port, timeout=timeout)


def addresses(answer: dns.message.Message) -> set[str]:
    return {rr.to_text() for rrset in answer.answer for rr in rrset
            if rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA)}


def poll(cluster: Cluster, name: str, want_rcode: int, timeout: float) -> dns.message.Message:
    """Query until the answer has ``want_rcode``; the cache may serve the old answer for a TTL."""
    deadline = time.monotonic() + timeout
    while True:
        answer = query(cluster, name)
        if answer.rcode() == want_rcode or time.monotonic() > deadline:
            return answer
        time.sleep(0.25)


def _name(cluster: Cluster) -> str:
    return f"it-{uuid.uuid4().hex[:8]}.ddb.us-east-1.{cluster.cfg.dns.zone}"


async def test_a_record_written_to_etcd_is_answered_then_nxdomain_after_delete(
    cluster: Cluster, dns_store: etcd_store.EtcdRecordStore
) -> None:
    name = _name(cluster)
    assert query(cluster, name).rcode() == dns.rcode.NXDOMAIN, "a fresh name does not exist"

    recs = {"a": records.Record(ttl=2, host="127.0.10.7"),
            "b": records.Record(ttl=2, host="127.0.10.8")}
    await dns_store.apply(stores.Change(name=name, put=recs,
                                        marker=stores.ActiveMarker(1, "test")))
    answer = poll(cluster, name, dns.rcode.NOERROR, timeout=10)
    assert answer.rcode() == dns.rcode.NOERROR
    assert addresses(answer) == {"127.0.10.7", "127.0.10.8"}
    assert all(rrset.ttl <= 2 for rrset in answer.answer)

    await dns_store.apply(stores.Change(name=name, delete=recs))
    answer = poll(cluster, name, dns.rcode.NXDOMAIN, timeout=15)
    assert answer.rcode() == dns.rcode.NXDOMAIN, answer
    assert any(rrset.rdtype == dns.rdatatype.SOA for rrset in answer.authority)


async def test_txt_only_name_gives_nodata_for_a(
    cluster: Cluster, dns_store: etcd_store.EtcdRecordStore
) -> None:
    """Keys with no usable address: NOERROR with an empty answer (NODATA), not NXDOMAIN."""
    name = _name(cluster)
    await dns_store.apply(stores.Change(name=name, put={"txt": records.Record(ttl=2,
                                                                              text="serial=1")}))
    answer = poll(cluster, name, dns.rcode.NOERROR, timeout=10)
    assert answer.rcode() == dns.rcode.NOERROR
    assert addresses(answer) == set()
    txt = query(cluster, name, "TXT")
    assert any("serial=1" in rr.to_text() for rrset in txt.answer for rr in rrset)


@local_only
async def test_servfail_while_dns_etcd_is_stopped_then_recovers(
    cluster: Cluster, dns_store: etcd_store.EtcdRecordStore
) -> None:
    assert cluster.plane is not None
    name = _name(cluster)
    await dns_store.apply(stores.Change(name=name, put={"a": records.Record(ttl=1,
                                                                            host="127.0.10.9")}))
    assert poll(cluster, name, dns.rcode.NOERROR, timeout=10).rcode() == dns.rcode.NOERROR

    assert cluster.plane.stop_component("dns-etcd")
    try:
        fresh = _name(cluster)  # never cached, so CoreDNS must ask etcd
        answer = query(cluster, fresh, timeout=15)
        assert answer.rcode() == dns.rcode.SERVFAIL, dns.rcode.to_text(answer.rcode())
        await asyncio.sleep(1.5)  # let the cached positive answer (TTL 1) expire
        answer = query(cluster, name, timeout=15)
        assert answer.rcode() == dns.rcode.SERVFAIL, dns.rcode.to_text(answer.rcode())
    finally:
        cluster.plane.start_component("dns-etcd")

    answer = poll(cluster, name, dns.rcode.NOERROR, timeout=20)
    assert answer.rcode() == dns.rcode.NOERROR
    assert addresses(answer) == {"127.0.10.9"}
