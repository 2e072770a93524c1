"""The outage-2025 verdict (core.outage): phases detected from hand-made series, and each way a
run must fail its expectation."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from dnsrace.core import outage

T0 = 1000.0  # the stall (t_fault)


def _dwfm(t: float, *, lost_from: float = 1022.0, back_from: float = 1120.0,
          collapsed: tuple[float, float] = (1030.0, 1120.0)) -> dict[str, Any]:
    if t < lost_from:
        valid = 300
    elif t < back_from:
        valid = max(0, 300 - int((t - lost_from) * 25))
    else:
        valid = min(300, int((t - back_from) * 4))
    goodput = 0.0 if collapsed[0] <= t < collapsed[1] else 1.0
    return {"t": t, "droplets": 300, "leases_valid": valid, "goodput": goodput,
            "queue_depth": 300 - valid, "queue_age": 0.0}


def _network(t: float, backlog: tuple[float, float] = (1200.0, 1300.0)) -> dict[str, Any]:
    inside = backlog[0] <= t < backlog[1]
    return {"t": t, "backlog": 120 if inside else 1, "oldest_age": 60.0 if inside else 0.5}


def _nlb(t: float, flapping: tuple[float, float] = (1205.0, 1290.0),
         removed: float = 10.0) -> list[dict[str, Any]]:
    inside = flapping[0] <= t < flapping[1]
    done = t >= flapping[1]
    flips = 0 if t < flapping[0] else int(min(t, flapping[1]) - flapping[0])
    gone = 0.0 if t < flapping[0] + 5 else removed
    rows = [{"t": t, "az": az, "healthy": 10, "unhealthy": 5 if inside else 0,
             "published": 10, "failed_over": inside and az == "us-east-1a" and not done}
            for az in ("us-east-1a", "us-east-1b", "us-east-1c")]
    rows.append({"t": t, "az": "all", "flips": flips, "failovers": 1 if gone else 0,
                 "removed": gone})
    return rows


def records(**change: Any) -> outage.Records:
    """A safeguards-off run: the record empty from 1010 to 1070, DynamoDB back at 1072,
    collapsed until the restart at 1120, the burst's backlog 1200 to 1300, flapping to 1290."""
    times = [990.0 + i for i in range(411)]
    clients = [(t, "ok" if t < 1010 or t >= 1072 else "dns") for t in times]
    base = outage.Records(
        t_fault=T0, t_end=1400.0, empty_windows=[(1010.0, 1070.0)], client_outcomes=clients,
        dwfm=[_dwfm(t) for t in times], network=[_network(t) for t in times],
        nlb=[row for t in times for row in _nlb(t)],
        launcher=[{"t": t, "outcome": "InsufficientCapacity", "count": 1}
                  for t in times if 1030 <= t < 1140],
        injected={outage.STALL_FAULT: 3, "enactor-a-slow-writes": 400})
    return dataclasses.replace(base, **change)


STEPS = outage.Steps(t_dwfm_restart=1120.0, t_failover_off=1260.0)


def test_the_cascade_shows_its_six_phases_in_order() -> None:
    judged = outage.judge(records(), outage.CASCADE, STEPS)
    assert judged.passed, judged.reasons
    p = judged.phases
    assert list(p) == list(outage.PHASES)
    assert p[outage.DNS_EMPTY] == outage.Span(1010.0, 1070.0)
    assert p[outage.LEASES] == outage.Span(1023.0, 1072.0)  # the first sample short of 300
    assert p[outage.COLLAPSE].start == 1087.0  # 15 s after the clients' first success
    assert p[outage.COLLAPSE].end == 1195.0  # every lease back
    assert p[outage.BACKLOG] == outage.Span(1200.0, 1300.0)
    assert p[outage.FLAPPING].start == 1206.0  # the first flip counted
    # from DynamoDB's return until every signal is normal
    assert p[outage.RECOVERY] == outage.Span(1072.0, 1300.0)
    assert judged.figures["goodput_until_restart"] == 0.0
    assert judged.figures["launch_failures"] == {"InsufficientCapacity": 110}


def test_a_backlog_over_its_count_bound_is_a_backlog_even_while_young() -> None:
    times = [990.0 + i for i in range(411)]
    crowded = [dict(_network(t), oldest_age=5.0) if 1190 <= t < 1195 else _network(t)
               for t in times]
    crowded = [dict(r, backlog=outage.BACKLOG_BOUND + 1) if 1190 <= r["t"] < 1195 else r
               for r in crowded]
    judged = outage.judge(records(network=crowded), outage.CASCADE, STEPS)
    assert judged.phases[outage.BACKLOG].start == 1190.0


def test_a_missing_phase_is_named() -> None:
    times = [990.0 + i for i in range(411)]
    no_removal = [row for t in times for row in _nlb(t, removed=0.0)]
    judged = outage.judge(records(nlb=no_removal), outage.CASCADE, STEPS)
    assert not judged.passed
    assert "phase nlb-flapping did not appear" in judged.reasons


def test_goodput_that_recovers_by_itself_is_no_held_collapse() -> None:
    times = [990.0 + i for i in range(411)]
    healing = [_dwfm(t, collapsed=(1030.0, 1095.0)) for t in times]
    judged = outage.judge(records(dwfm=healing), outage.CASCADE, STEPS)
    assert not judged.passed
    assert any("did not hold by itself" in r for r in judged.reasons)


def test_a_fleet_that_never_collapsed_has_no_collapse_phase() -> None:
    times = [990.0 + i for i in range(411)]
    fine = [_dwfm(t, collapsed=(0.0, 0.0), back_from=1075.0) for t in times]
    judged = outage.judge(records(dwfm=fine), outage.CASCADE, STEPS)
    assert outage.COLLAPSE not in judged.phases
    assert "phase dwfm-collapse did not appear" in judged.reasons


def test_a_phase_out_of_the_published_order_fails() -> None:
    times = [990.0 + i for i in range(411)]
    early = [_network(t, backlog=(1040.0, 1300.0)) for t in times]
    judged = outage.judge(records(network=early), outage.CASCADE, STEPS)
    assert any(r.startswith("network-backlog began") for r in judged.reasons), judged.reasons


def test_the_run_must_last_until_the_recovery() -> None:
    cut = records(t_end=1305.0)
    cut = dataclasses.replace(
        cut, dwfm=[r for r in cut.dwfm if r["t"] <= 1305], network=[
            r for r in cut.network if r["t"] <= 1305], nlb=[r for r in cut.nlb if r["t"] <= 1305])
    judged = outage.judge(cut, outage.CASCADE, STEPS)
    assert judged.phases[outage.RECOVERY].end is None
    assert "the run ended before every signal was back to normal" in judged.reasons


def test_no_manual_restart_is_a_reason() -> None:
    judged = outage.judge(records(), outage.CASCADE, outage.Steps())
    assert "the manual DWFM restart was not taken" in judged.reasons


def _quiet() -> outage.Records:
    """A run where nothing happened: the record answered, every lease held."""
    times = [990.0 + i for i in range(200)]
    return outage.Records(
        t_fault=T0, t_end=1190.0, client_outcomes=[(t, "ok") for t in times],
        dwfm=[_dwfm(t, lost_from=1e9, collapsed=(0.0, 0.0)) for t in times],
        network=[_network(t, backlog=(0.0, 0.0)) for t in times],
        nlb=[row for t in times for row in _nlb(t, flapping=(1e9, 1e9))],
        injected={outage.STALL_FAULT: 20})


def test_contained_passes_when_nothing_follows() -> None:
    judged = outage.judge(_quiet(), outage.CONTAINED, outage.Steps())
    assert judged.passed, judged.reasons
    assert judged.phases == {}


def test_contained_needs_the_race_faults_to_have_acted() -> None:
    rec = dataclasses.replace(_quiet(), injected={outage.STALL_FAULT: 0})
    judged = outage.judge(rec, outage.CONTAINED, outage.Steps())
    assert judged.reasons == ["the race's stall (enactor-a-stall) never acted: its faults did "
                              "not reach the enactors"]


def test_contained_fails_on_one_lost_lease() -> None:
    rec = _quiet()
    dwfm = list(rec.dwfm)
    dwfm[50] = dict(dwfm[50], leases_valid=299)
    judged = outage.judge(dataclasses.replace(rec, dwfm=dwfm), outage.CONTAINED, outage.Steps())
    assert not judged.passed
    assert judged.reasons[0].startswith("phase leases-expiring appeared")


def _outside(**change: Any) -> outage.Records:
    """DynamoDB stopped from 1010 to 1070 (no DNS emptiness); the throttled fleet back by 1150;
    a bounded backlog; a little flapping and 4 capacity units removed."""
    times = [990.0 + i for i in range(311)]
    clients = [(t, "ok" if t < 1010 or t >= 1072 else "connect") for t in times]
    base = outage.Records(
        t_fault=T0, t_end=1300.0, client_outcomes=clients,
        dwfm=[_dwfm(t, back_from=1075.0, collapsed=(0.0, 0.0)) for t in times],
        network=[{"t": t, "backlog": 18 if 1080 <= t < 1150 else 1,
                  "oldest_age": 9.0 if 1080 <= t < 1150 else 0.5} for t in times],
        nlb=[row for t in times for row in _nlb(t, flapping=(1090.0, 1140.0), removed=4.0)])
    return dataclasses.replace(base, **change)


def test_outside_fault_recovers_within_its_bounds() -> None:
    judged = outage.judge(_outside(), outage.OUTSIDE, outage.Steps())
    assert judged.passed, judged.reasons
    assert judged.figures["all_leases_after"] == 78.0
    assert judged.figures["largest_removal_per_interval"] == 4.0


@pytest.mark.parametrize(("change", "reason"), [
    ({"dwfm": [_dwfm(990.0 + i, back_from=1075.0) for i in range(311)]}, "DWFM collapsed"),
    ({"dwfm": [_dwfm(990.0 + i, back_from=1140.0, collapsed=(0.0, 0.0)) for i in range(311)]},
     "not every lease was back within 95.5s"),
    ({"network": [{"t": 990.0 + i, "backlog": 40, "oldest_age": 9.0} for i in range(311)]},
     "the network backlog reached 40 states"),
    ({"nlb": [row for i in range(311) for row in _nlb(990.0 + i, flapping=(1090.0, 1140.0),
                                                         removed=12.0)]},
     "the NLB removed 12 healthy capacity"),
    ({"empty_windows": [(1010.0, 1011.0)]}, "the regional record went empty"),
    ({"dwfm": [_dwfm(990.0 + i, lost_from=1e9, collapsed=(0.0, 0.0)) for i in range(311)]},
     "no lease expired"),
])
def test_outside_fault_fails_past_each_bound(change: dict[str, Any], reason: str) -> None:
    judged = outage.judge(_outside(**change), outage.OUTSIDE, outage.Steps())
    assert not judged.passed
    assert any(r.startswith(reason) for r in judged.reasons), judged.reasons


def test_an_unknown_expectation_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown expectation 'maybe'"):
        outage.judge(records(), "maybe", STEPS)
