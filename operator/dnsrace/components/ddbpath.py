"""Resolving the DynamoDB endpoint through the lab's CoreDNS: the query and the reading of its
answer, shared by the asynchronous clients and the synchronous lease store.

Who calls it: ``components.ddbclient.LabResolver`` (aiohttp, ``dns.asyncquery``) and
``components.leasestore`` (botocore's synchronous client in DWFM's thread, ``lookup``). Why one
module: a DNS failure must mean the same thing to every DynamoDB client of the lab (NXDOMAIN for
an emptied record, NODATA, SERVFAIL, REFUSED, TIMEOUT; a positive answer kept for its TTL capped
at ``ddb.max_ttl``), and this module imports neither aiobotocore nor aiohttp, so DWFM starts
without them.
"""

from __future__ import annotations

import functools
import ipaddress
import socket

import dns.exception
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype

from dnsrace.core import ddb

NEGATIVE = ("NXDOMAIN", "SERVFAIL", "REFUSED")
"""Rcodes that are a failure by themselves (NODATA is a NOERROR answer without addresses)."""


def query(host: str) -> dns.message.Message:
    """The A query for ``host`` (made absolute)."""
    return dns.message.make_query(host.rstrip(".") + ".", dns.rdatatype.A)


def answer(host: str, response: dns.message.Message, max_ttl: float) -> tuple[list[str], float]:
    """The addresses of a response and their TTL (the lowest A rrset's, at most ``max_ttl``);
    raises ``ddb.DnsFailure`` naming NXDOMAIN, SERVFAIL, REFUSED or NODATA."""
    rcode = dns.rcode.to_text(response.rcode())
    if rcode in NEGATIVE:
        raise ddb.DnsFailure(host, rcode)
    addresses: list[str] = []
    ttl: float = max_ttl
    for rrset in response.answer:
        if rrset.rdtype == dns.rdatatype.A:
            ttl = min(ttl, float(rrset.ttl))
            addresses.extend(rdata.address for rdata in rrset)
    if not addresses:
        raise ddb.DnsFailure(host, "NODATA")
    return addresses, ttl


@functools.cache
def server_address(host: str) -> str:
    """dnspython sends to IP addresses only; in a cluster the DNS server is a Service name
    (``dnsrace-coredns.<ns>.svc``), so resolve it once with the system resolver."""
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        return str(socket.getaddrinfo(host, None, type=socket.SOCK_DGRAM)[0][4][0])


def lookup(host: str, server: str, port: int, cache: ddb.ResolutionCache, timeout: float,
           now: float) -> ddb.Resolved:
    """Synchronous: the cached answer for ``host``, or CoreDNS's at ``server:port`` (put in the
    cache); raises ``ddb.DnsFailure`` (TIMEOUT when CoreDNS did not answer in ``timeout``)."""
    entry = cache.get(host, now)
    if entry is not None:
        return entry
    try:
        response = dns.query.udp(query(host), server_address(server), timeout=timeout,
                                 port=port)
    except (dns.exception.Timeout, OSError) as exc:  # OSError: socket.gaierror too
        raise ddb.DnsFailure(host, "TIMEOUT") from exc
    addresses, ttl = answer(host, response, cache.max_ttl)
    return cache.put(host, addresses, ttl, now)
