"""A checker counterexample replayed on the real enactors, the DNS etcd and CoreDNS.

``dnsrace check`` finds the race in the enactor's own code; ``scenario run replay`` carries the
trace out with hold Faults at the enactors' hooks and must end where the trace ends. With one
endpoint, the regional one, and two preemptions, the shortest never-empty trace is the incident:
the regional endpoint answers NXDOMAIN through CoreDNS.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from dnsrace.check import checking, model
from dnsrace.components.scenarios import replay
from dnsrace.components.scenarios.lab import dns_query
from dnsrace.core import planning
from tests.conftest import Cluster

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


async def test_the_shortest_never_empty_trace_empties_the_regional_endpoint(
        cluster: Cluster, tmp_path: Path) -> None:
    report = checking.run(model.Bounds(endpoints=1), preemptions=2).to_json()
    trace = next(c for c in report["counterexamples"] if c["property"] == "never-empty")
    assert trace["length"] <= 30
    verdict = await replay.run_replay(cluster.cfg, report, replay.ReplayParams(),
                                      tmp_path / "replay", print)
    assert verdict.passed, verdict.reasons
    regional = planning.regional_endpoint(cluster.cfg.dns.zone)
    short = regional.removesuffix("." + cluster.cfg.dns.zone)
    end = verdict.figures["end"][short]
    assert end["addresses"] == 0
    assert end["serial"] == 1
    assert not end["plan_exists"]
    assert end["dns"]["rcode"] in ("NXDOMAIN", "NOERROR")
    assert end["dns"]["addresses"] == []
    # Independently of the runner: CoreDNS still has nothing for the regional endpoint.
    rcode, addrs = await dns_query(cluster.cfg, regional)
    assert addrs == [], rcode
