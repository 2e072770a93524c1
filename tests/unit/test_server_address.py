"""DNS goes to an IP; a Service name (the chart gives `dnsrace-coredns.<ns>.svc...`) is
resolved first, by the prober, the scenario, the DynamoDB clients and DWFM's lease store."""

from __future__ import annotations

import socket

import pytest

from dnsrace.components import ddbpath, prober
from dnsrace.core import ddb


def test_ip_passes_through_and_a_name_is_resolved() -> None:
    assert prober.server_address("127.0.0.1") == "127.0.0.1"
    assert prober.server_address("::1") == "::1"
    assert prober.server_address("localhost") in ("127.0.0.1", "::1")


def _silent_port() -> tuple[socket.socket, int]:
    """A bound UDP socket that never answers: a DNS server that does not reply."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    return sock, sock.getsockname()[1]


def test_a_server_given_by_name_is_asked_not_refused() -> None:
    # Before, dnspython raised ValueError for a name, which the lease store did not catch:
    # DWFM exited at its first call in a cluster.
    sock, port = _silent_port()
    try:
        cache = ddb.ResolutionCache(5.0)
        with pytest.raises(ddb.DnsFailure, match="TIMEOUT"):
            ddbpath.lookup("dynamodb.us-east-1.sim.internal", "localhost", port, cache, 0.2, 0.0)
    finally:
        sock.close()


def test_a_server_name_that_does_not_resolve_is_a_dns_failure() -> None:
    cache = ddb.ResolutionCache(5.0)
    with pytest.raises(ddb.DnsFailure, match="TIMEOUT"):
        ddbpath.lookup("dynamodb.us-east-1.sim.internal", "no-such-host.invalid", 53, cache,
                       0.2, 0.0)
