"""The fault matrix end to end: with the safeguards on, each component killed and paused and each
part of the control plane restarted, one at a time, while plans are applied.

The runner injects the faults (Faults for the components, process restarts for kube-apiserver,
the DNS etcd and CoreDNS) and records; ``core.chaos`` judges each step from the prober's answers
and the DNS store's transactions. The matrix runs once here (about four minutes); the three-run
series is in docs/benchmarks.md.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from dnsrace.components.scenarios import chaos as chaos_run
from dnsrace.components.scenarios.lab import dns_query
from dnsrace.core import planning
from tests.conftest import Cluster

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]


async def test_every_fault_of_the_matrix_is_ridden_out(cluster: Cluster,
                                                       tmp_path: Path) -> None:
    if cluster.cfg.external_cluster:
        pytest.fail("the matrix restarts the local control plane's processes; run it locally")
    params = chaos_run.ChaosParams()
    verdict = await chaos_run.run_chaos(cluster.cfg, params, tmp_path / "chaos", print)
    steps = {row["fault"]: row for row in verdict.figures["steps"]}
    assert set(steps) == set(chaos_run.default_faults(cluster.cfg.lab.enactors))
    assert verdict.passed, verdict.reasons
    for fault, row in steps.items():
        assert row["answers"] > 0, fault
        assert row["regional_empty"] == 0, fault
        assert row["stale_regressions"] == row["store_regressions"] == 0, fault
        assert row["converged_after"] is not None, fault
        assert row["converged_after"] <= 10, fault
    # The runner kept calling through the restarts of the API server and the DNS etcd, rode
    # the outages out and recorded them.
    assert verdict.figures["outages"] >= 2
    killed = [f.split(":", 1)[1] for f in steps if f.startswith("kill:")]
    assert all(steps[f"kill:{n}"]["back_after"] is not None for n in killed)
    assert verdict.figures["final"]["converged"]
    assert verdict.figures["final"]["terminating"] == []
    # Independently of the prober: the regional endpoint answers after everything.
    rcode, addrs = await dns_query(cluster.cfg, planning.regional_endpoint(cluster.cfg.dns.zone))
    assert rcode == "NOERROR"
    assert addrs
