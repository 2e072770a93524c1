"""The race end to end on the local control plane: real planner, enactors, prober, CoreDNS.

Each test runs the scenario runner's ``race`` (components as processes, faults as Fault CRs)
and asserts its figures, which come from the prober's record, plus independent DNS queries made
here. Nothing in the scenario writes the outcome: it starts, injects and observes.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from dnsrace.components import scenario
from dnsrace.core import planning
from dnsrace.core.safeguards import Safeguards
from tests.conftest import Cluster

pytestmark = pytest.mark.e2e


def regional(cluster: Cluster) -> str:
    return planning.regional_endpoint(cluster.cfg.dns.zone)


async def test_safeguards_off_the_regional_record_goes_empty_and_stays_blocked(
    cluster: Cluster, tmp_path: Path
) -> None:
    params = scenario.RaceParams(safeguards=Safeguards.parse("off"))
    verdict = await scenario.run_race(cluster.cfg, params, tmp_path / "off", print)
    f = verdict.figures
    assert verdict.passed, verdict.reasons
    assert f["time_to_first_empty"] is not None
    assert f["time_to_first_empty"] <= 60
    victim = regional(cluster)
    # Only enactor-a's regional write was stale, so only the regional endpoint empties.
    assert f["endpoints_empty"] == [victim]
    assert f["longest_empty_window"] >= params.hold
    assert f["plans_during_faults"] > 0, "the planner kept producing plans meanwhile"
    assert f["direct_query_regional"]["addresses"] == []
    assert f["direct_query_regional"]["rcode"] in ("NXDOMAIN", "NOERROR", "SERVFAIL")
    assert victim in f["endpoints_on_deleted_plans"]
    assert f["blocked_warnings"] >= 1
    assert f["blocked"]
    assert any(c["status"] == "False" and c["reason"] == "ActivePlanMissing"
               for c in f["conditions_on_newest"]), f["conditions_on_newest"]
    assert f["repair_restored"]
    for name in ("prober.jsonl", "events.json", "plans.json", "markers.json", "faults.json",
                 "timeline.json", "verdict.json"):
        assert (tmp_path / "off" / name).is_file(), name
    # Independently of the prober: after the repair the emptied endpoint answers again.
    rcode, addrs = await scenario.dns_query(cluster.cfg, victim)
    assert rcode == "NOERROR"
    assert addrs


async def test_safeguards_on_the_same_faults_do_no_harm(cluster: Cluster, tmp_path: Path) -> None:
    params = scenario.RaceParams(safeguards=Safeguards.parse("on"))
    verdict = await scenario.run_race(cluster.cfg, params, tmp_path / "on", print)
    f = verdict.figures
    assert verdict.passed, verdict.reasons
    assert f["empty_answers"] == 0
    assert f["stale_regressions"] == 0
    assert f["answers"] > 1000
    assert f["converged"]
    assert f["endpoints_on_deleted_plans"] == []
    rcode, addrs = await scenario.dns_query(cluster.cfg, regional(cluster))
    assert rcode == "NOERROR"
    assert addrs
