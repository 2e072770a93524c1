"""The race end to end on the local control plane: real planner, enactors, prober, CoreDNS.

Each test runs the scenario runner's ``race`` (components as processes, faults as Fault CRs)
and asserts its figures, which come from the prober's record, plus independent DNS queries made
here. Nothing in the scenario writes the outcome: it starts, injects and observes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dnsrace.components.scenarios import race
from dnsrace.components.scenarios.lab import dns_query
from dnsrace.core import planning, verdicts
from dnsrace.core.safeguards import Safeguards
from tests import metrics_support
from tests.conftest import Cluster

# A run waits up to 120 s for the race, then holds, settles, repairs and watches the clients
# recover: up to about 270 s, past the suite's default 300 s on a loaded machine.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


def regional(cluster: Cluster) -> str:
    return planning.regional_endpoint(cluster.cfg.dns.zone)


async def test_safeguards_off_the_regional_record_goes_empty_and_stays_blocked(
    cluster: Cluster, tmp_path: Path
) -> None:
    params = race.RaceParams(safeguards=Safeguards.parse("off"))
    verdict = await race.run_race(cluster.cfg, params, tmp_path / "off", print)
    f = verdict.figures
    assert verdict.passed, verdict.reasons
    assert f["time_to_first_empty"] is not None
    assert f["time_to_first_empty"] <= params.observe
    victim = regional(cluster)
    # Only enactor-a's regional write was stale, so only the regional endpoint empties.
    assert f["endpoints_empty"] == [victim]
    assert f["endpoints_nxdomain"] == [victim]
    assert f["store_endpoints_emptied"] == [victim], "the removal, seen in the DNS etcd"
    assert f["time_to_records_removed"] is not None
    assert f["time_to_records_removed"] <= f["time_to_first_empty"]
    assert f["store_regressions"] >= 1, "enactor-a's stale write, seen in the DNS etcd"
    assert f["regional_empty_window"] >= params.hold
    assert f["plans_during_faults"] > 0, "the planner kept producing plans meanwhile"
    assert f["direct_query_regional"]["addresses"] == []
    assert f["direct_query_regional"]["rcode"] in ("NXDOMAIN", "NOERROR")
    assert all(f["fault_injections"].values())
    # The DynamoDB clients, from their own records: fine before, DNS errors while the record
    # was empty (from one TTL after CoreDNS first answered NXDOMAIN), fine again after repair.
    assert f["client_ok_before_fault"] >= 0.99
    assert f["client_dns_share_while_empty"] >= 0.99
    assert f["client_dns_details_while_empty"] == ["NXDOMAIN"]
    assert f["client_ok_after_recovery"] >= 0.99
    assert f["client_time_to_recover"] <= 10
    assert victim in f["endpoints_on_deleted_plans"]
    assert f["blocked_warnings"] >= 1
    assert f["blocked"]
    assert any(c["status"] == "False" and c["reason"] == "ActivePlanMissing"
               for c in f["conditions_on_newest"]), f["conditions_on_newest"]
    assert f["repair_restored"]
    for name in ("prober.jsonl", "store.jsonl", "ddb-client.jsonl", "observed.json",
                 "events.json", "plans.json", "markers.json", "faults.json", "timeline.json",
                 "verdict.json"):
        assert (tmp_path / "off" / name).is_file(), name
    # Independently of the prober: after the repair the emptied endpoint answers again.
    rcode, addrs = await dns_query(cluster.cfg, victim)
    assert rcode == "NOERROR"
    assert addrs


async def test_safeguards_on_the_same_faults_do_no_harm(cluster: Cluster, tmp_path: Path) -> None:
    params = race.RaceParams(safeguards=Safeguards.parse("on"))
    verdict = await race.run_race(cluster.cfg, params, tmp_path / "on", print)
    f = verdict.figures
    assert verdict.passed, verdict.reasons
    assert f["empty_answers"] == 0
    assert f["stale_regressions"] == 0
    assert f["store_endpoints_emptied"] == []
    assert f["store_regressions"] == 0
    assert f["answers"] >= 0.8 * f["answers_expected"]
    assert f["answers"] > 1000
    assert f["client_dns_errors"] == 0
    assert f["client_ok_before_fault"] >= 0.99
    assert f["client_ok_after_fault"] >= 0.99
    assert f["converged"]
    assert f["endpoints_on_deleted_plans"] == []
    rcode, addrs = await dns_query(cluster.cfg, regional(cluster))
    assert rcode == "NOERROR"
    assert addrs
    # The lab's Prometheus scraped every component during the run and holds every name
    # docs/metrics.md gives each.
    scraped = json.loads((tmp_path / "on" / "scrape.json").read_text())
    down = [t for t in scraped["targets"] if t["health"] != "up"]
    assert not down, down
    jobs = {t["job"] for t in scraped["targets"]}
    assert {"planner", "enactor", "prober", "lbnode", "ddb-client", "coredns"} <= jobs
    for job in sorted(jobs - {"coredns"}):
        missing = metrics_support.expected_series(job) - set(scraped["names"][job])
        # Labelled families have no series before their first sample: a request waiting for
        # a slot at an LB node (overload, which the race does not cause), and a Fault aimed at
        # the planner (the race aims none).
        missing -= {f"dnsrace_lbnode_ddb_admission_wait_seconds{s}"
                    for s in ("_bucket", "_sum", "_count")}
        if job == "planner":
            missing.discard("dnsrace_fault_injections_total")
        assert not missing, (job, sorted(missing))


@pytest.mark.parametrize("safeguard", ["fencing", "protect-active", "no-empty", "self-heal",
                                       "single-writer", "serve-stale"])
async def test_each_safeguard_alone_meets_its_own_expectation(
    cluster: Cluster, tmp_path: Path, safeguard: str
) -> None:
    sg = Safeguards.parse(safeguard)
    params = race.RaceParams(safeguards=sg)
    verdict = await race.run_race(cluster.cfg, params, tmp_path / safeguard, print)
    f = verdict.figures
    exp = verdicts.expectation(sg)
    assert verdict.expected == exp.text
    assert verdict.passed, verdict.reasons
    assert all(f["fault_injections"].values())
    if not exp.may_empty:
        assert f["store_endpoints_emptied"] == []
        assert f["empty_answers"] == 0
    if not exp.may_regress:
        assert f["store_regressions"] == 0
    if not exp.may_block:
        assert f["converged"]
    else:
        assert f["converged"] or f["repair_restored"]
    assert f["store_empty_at_end"] == []
    if exp.outage:  # serve-stale alone: a deleted record still answers NXDOMAIN
        assert f["endpoints_nxdomain"] == [regional(cluster)]
        assert f["direct_query_regional"]["rcode"] == "NXDOMAIN"
    # Whatever happened, the regional endpoint answers at the end (healed, or repaired).
    rcode, addrs = await dns_query(cluster.cfg, regional(cluster))
    assert rcode == "NOERROR"
    assert addrs
