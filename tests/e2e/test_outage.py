"""outage-2025 on the local control plane: the race, the cascade it sets off, and the recovery.

Each run starts the whole lab (the control loop, DynamoDB Local behind the LB nodes, DWFM, the
launcher, the Network Manager, the instance hosts, the NLB) and is judged by ``core.outage``
from what the components recorded. Each scenario runs once here; ``make bench`` repeats them.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from dnsrace.components.scenarios import outage as outage_run
from dnsrace.core import dwfm, outage
from dnsrace.core.safeguards import Safeguards
from tests.conftest import Cluster

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]


async def test_off_the_cascade_follows_the_race_in_the_published_order(
    cluster: Cluster, tmp_path: Path
) -> None:
    # the manual steps a little earlier than the defaults (60 s, 120 s): the collapse is
    # judged 15 s after DynamoDB's return and still held for 30 s before the restart
    params = outage_run.OutageParams(safeguards=Safeguards.parse("off"), dwfm_restart_after=45,
                                     failover_off_after=105)
    judged = await outage_run.run_outage(cluster.cfg, params, tmp_path / "off", print)
    assert judged.kind == outage.CASCADE
    assert judged.passed, judged.reasons
    starts = [judged.phases[p].start for p in outage.PHASES[:-1]]
    # each phase starts no earlier than the one published before it (the NLB's detection
    # time aside: outage.ORDER_SLACK); the recovery, which begins with DynamoDB's return,
    # ends after all of them
    for before, after in itertools.pairwise(starts):
        assert after >= before - outage.ORDER_SLACK
    recovered = judged.phases[outage.RECOVERY].end
    assert recovered is not None
    for name in outage.PHASES[:-1]:
        end = judged.phases[name].end
        assert end is not None
        assert end <= recovered
    collapse = judged.phases[outage.COLLAPSE]
    assert judged.figures["goodput_until_restart"] < outage.METASTABLE_GOODPUT
    assert collapse.end is not None
    assert collapse.end > collapse.start
    assert judged.figures["capacity_removed"] > 0
    assert judged.figures["launch_failures"]["InsufficientCapacity"] > 0
    assert (tmp_path / "off" / "outage.json").is_file()


async def test_on_the_same_faults_set_nothing_off(cluster: Cluster, tmp_path: Path) -> None:
    params = outage_run.OutageParams(safeguards=Safeguards.parse("on"))
    judged = await outage_run.run_outage(cluster.cfg, params, tmp_path / "on", print)
    assert judged.kind == outage.CONTAINED
    assert judged.passed, judged.reasons
    assert judged.phases == {}
    assert judged.figures["leases_lowest"] == dwfm.DwfmParams().droplets  # not one lease lost


async def test_on_dynamodb_paused_the_fleet_recovers_within_its_bounds(
    cluster: Cluster, tmp_path: Path
) -> None:
    params = outage_run.OutageParams(safeguards=Safeguards.parse("on"), outside_fault=True)
    judged = await outage_run.run_outage(cluster.cfg, params, tmp_path / "outside", print)
    assert judged.kind == outage.OUTSIDE
    assert judged.passed, judged.reasons
    assert outage.LEASES in judged.phases
    assert outage.COLLAPSE not in judged.phases
    assert judged.figures["backlog_largest"] <= outage.BACKLOG_BOUND
    assert judged.figures["largest_removal_per_interval"] <= 5.0
