"""The chaos verdict (``core.chaos``): each way a fault step must be judged "not as expected".

A small synthetic run (two endpoints, the store's transactions and the prober's answers) passes
as built; each test adds one thing and checks that exactly that is caught.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from dnsrace.core import chaos, records, storelog
from dnsrace.core.observations import Observation

ZONE, SCOPE = "sim.internal", "lab"
A, R = "a.sim.internal", "r.sim.internal"


def _put_records(name: str, serial: int) -> list[storelog.Op]:
    rec = records.Record(host="10.0.0.1", ttl=5)
    txt = json.dumps({"serial": serial, "enactor": "enactor-a"})
    return [("put", records.record_key(name, "a1"), rec.encode().decode()),
            ("put", records.active_key(name, SCOPE), txt)]


def _marker(name: str, serial: int) -> storelog.Op:
    return ("put", records.active_key(name, SCOPE),
            json.dumps({"serial": serial, "enactor": "enactor-a"}))


class Run:
    def __init__(self) -> None:
        self.revisions = [
            storelog.Revision(0.0, 1, tuple(_put_records(A, 1) + _put_records(R, 1)),
                              snapshot=True),
            storelog.Revision(10.0, 2, (_marker(A, 2), _marker(R, 2))),
            storelog.Revision(20.0, 3, (_marker(A, 3), _marker(R, 3))),
        ]
        self.probes = [Observation(t=i / 2, name=n, rcode="NOERROR", addresses=("10.0.0.1",),
                                   serial=1 if i < 20 else 2 if i < 40 else 3)
                       for i in range(80) for n in (A, R)]
        self.step: dict[str, Any] = {
            "fault": "kill:enactor-b", "t_start": 12.0, "t_end": 13.0, "t_back": 13.0,
            "t_next": 40.0, "newest_at_end": 3, "terminating": [["plan-0000000002", 19.0]],
            "t_checked": 23.0}
        self.restarts: list[dict[str, Any]] = [
            {"component": "enactor-b", "t": 12.2, "restart_at": 12.5, "code": -9}]
        self.final: dict[str, Any] = {"converged": True, "terminating": [],
                                      "alive": {"enactor-a": True, "enactor-b": True}}

    def judge(self) -> tuple[bool, list[str], dict[str, Any]]:
        observed = {"zone": ZONE, "scope": SCOPE, "endpoints": [A, R], "regional": R,
                    "record_ttl": 5, "steps": [self.step], "final": self.final}
        return chaos.judge(observed, self.probes, self.revisions, self.restarts)

    def answer(self, t: float, name: str, rcode: str, addresses: tuple[str, ...] = ()) -> None:
        self.probes = [o for o in self.probes if not (o.t == t and o.name == name)]
        self.probes.append(Observation(t=t, name=name, rcode=rcode, addresses=addresses,
                                       serial=None))


def test_a_clean_step_passes() -> None:
    passed, reasons, figures = Run().judge()
    assert passed, reasons
    row = figures["steps"][0]
    assert row["converged_after"] == 7.0
    assert row["back_after"] == 1.0
    assert row["regional_empty"] == 0


def test_an_empty_regional_answer_from_the_data_plane_fails() -> None:
    run = Run()
    run.answer(15.0, R, "SERVFAIL")
    passed, reasons, figures = run.judge()
    assert not passed
    assert figures["steps"][0]["empty_by_data_plane"] == 1
    assert any("regional" in r for r in reasons)


def test_an_empty_answer_while_the_store_was_empty_is_the_controllers() -> None:
    run = Run()
    run.revisions.insert(2, storelog.Revision(14.0, 10, (
        ("del", records.record_key(A, "a1"), None),)))
    run.revisions.insert(3, storelog.Revision(14.4, 11, (
        ("put", records.record_key(A, "a1"),
         records.Record(host="10.0.0.1", ttl=5).encode().decode()),
    )))
    run.answer(16.0, A, "NXDOMAIN")  # within one TTL of the window: CoreDNS's negative cache
    passed, reasons, figures = run.judge()
    assert not passed
    assert figures["steps"][0]["empty_by_controllers"] == 1
    assert figures["steps"][0]["empty_by_data_plane"] == 0
    assert any("controllers" in r for r in reasons)


def test_timeouts_while_coredns_had_no_process_are_counted_apart() -> None:
    run = Run()
    run.step |= {"fault": "restart:coredns", "t_down": 14.0, "t_up": 15.2, "t_back": None}
    run.restarts = []
    for t in (14.0, 14.5, 15.0):
        run.answer(t, R, "TIMEOUT")
    passed, reasons, figures = run.judge()
    assert passed, reasons
    assert figures["steps"][0]["empty_while_no_listener"] == 3
    run.answer(16.0, R, "TIMEOUT")  # CoreDNS was back: that one is the data plane's
    passed, _, figures = run.judge()
    assert not passed
    assert figures["steps"][0]["regional_empty"] == 1


def test_no_convergence_on_the_newest_plan_fails() -> None:
    run = Run()
    run.step["newest_at_end"] = 4
    passed, reasons, figures = run.judge()
    assert not passed
    assert figures["steps"][0]["converged_after"] is None
    assert any("not all on plan 4" in r for r in reasons)


def test_late_convergence_fails() -> None:
    run = Run()
    run.step |= {"t_end": 9.0, "t_back": 9.0}
    passed, reasons, _ = run.judge()
    assert not passed
    assert any("within 10s" in r for r in reasons)


def test_a_marker_regression_in_the_store_fails() -> None:
    run = Run()
    run.revisions.append(storelog.Revision(25.0, 12, (_marker(R, 2),)))
    run.revisions.append(storelog.Revision(25.5, 13, (_marker(R, 3),)))
    passed, _, figures = run.judge()
    assert not passed
    assert figures["steps"][0]["store_regressions"] == 1


def test_a_stale_answer_through_coredns_fails() -> None:
    run = Run()
    run.answer(30.0, R, "NOERROR", ("10.0.0.1",))
    run.probes = [o if not (o.t == 30.0 and o.name == R) else
                  Observation(t=30.0, name=R, rcode="NOERROR", addresses=("10.0.0.1",),
                              serial=2) for o in run.probes]
    passed, _, figures = run.judge()
    assert not passed
    assert figures["steps"][0]["stale_regressions"] == 1


def test_a_killed_component_that_never_came_back_fails() -> None:
    run = Run()
    run.restarts = []
    passed, reasons, _ = run.judge()
    assert not passed
    assert any("did not come back" in r for r in reasons)


def test_a_paused_component_that_died_fails() -> None:
    run = Run()
    run.step |= {"fault": "pause:enactor-b", "t_back": None}
    passed, reasons, _ = run.judge()
    assert not passed
    assert any("died while paused" in r for r in reasons)


def test_a_plan_terminating_for_longer_than_the_limit_fails() -> None:
    run = Run()
    run.step["terminating"] = [["plan-0000000001", 12.5]]
    passed, _, figures = run.judge()
    assert not passed
    assert figures["steps"][0]["stuck_terminating"] == ["plan-0000000001"]


def test_the_end_state_is_judged() -> None:
    run = Run()
    run.final = {"converged": False, "terminating": ["plan-0000000009"],
                 "alive": {"enactor-a": True, "enactor-b": False}}
    passed, reasons, _ = run.judge()
    assert not passed
    assert len(reasons) == 3


@pytest.mark.parametrize("text", ["kill", "kill:", "stop:enactor-a", "restart:enactor-a",
                                  "pause:coredns", "kill:prober"])
def test_bad_faults_are_refused_with_the_expected_form(text: str) -> None:
    with pytest.raises(ValueError, match="fault"):
        chaos.parse_fault(text)


def test_series_sums_each_fault_over_runs() -> None:
    _, _, one = Run().judge()
    rows = chaos.series([one, one])
    assert rows[0]["fault"] == "kill:enactor-b"
    assert rows[0]["runs"] == 2
    assert rows[0]["converged_after_max"] == 7.0
