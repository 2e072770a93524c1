"""The prober and the scenario send DNS to an IP; a Service name (in a cluster) is resolved."""

from __future__ import annotations

from dnsrace.components import prober


def test_ip_passes_through_and_a_name_is_resolved() -> None:
    assert prober.server_address("127.0.0.1") == "127.0.0.1"
    assert prober.server_address("::1") == "::1"
    assert prober.server_address("localhost") in ("127.0.0.1", "::1")
