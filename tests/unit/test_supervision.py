"""The restart policy on a virtual clock: back-off doubles to its cap, resets after uptime, and
a component stopped on purpose is left alone."""

from __future__ import annotations

from dnsrace.core.supervision import Supervisor


def test_a_dead_component_comes_back_after_a_doubling_back_off() -> None:
    sup = Supervisor(base=1, cap=4, reset_after=30)
    sup.started("enactor-b", 0)
    assert not sup.tick("enactor-b", alive=True, code=None, now=5)
    assert not sup.tick("enactor-b", alive=False, code=-9, now=6)  # noticed, waits 1 s
    assert sup.exits[-1].how == "killed by signal 9"
    assert not sup.tick("enactor-b", alive=False, code=-9, now=6.5)
    assert sup.tick("enactor-b", alive=False, code=-9, now=7)
    sup.started("enactor-b", 7)
    assert not sup.tick("enactor-b", alive=False, code=1, now=8)  # crash loop: 2 s now
    assert not sup.tick("enactor-b", alive=False, code=1, now=9.9)
    assert sup.tick("enactor-b", alive=False, code=1, now=10)
    sup.started("enactor-b", 10)
    assert not sup.tick("enactor-b", alive=False, code=1, now=10.1)
    assert sup.exits[-1].restart_at == 10.1 + 4  # capped
    assert [e.restarts for e in sup.exits] == [0, 1, 2]


def test_back_off_resets_after_uptime_and_forget_stops_supervision() -> None:
    sup = Supervisor(base=1, cap=8, reset_after=30)
    sup.started("planner", 0)
    for t in (1.0, 3.0):
        sup.tick("planner", alive=False, code=1, now=t)
        assert sup.tick("planner", alive=False, code=1, now=t + 10)
        sup.started("planner", t + 10)
    sup.tick("planner", alive=True, code=None, now=100)  # up for long: back-off resets
    sup.tick("planner", alive=False, code=1, now=101)
    assert sup.exits[-1].restart_at == 102
    sup.forget("planner")
    assert not sup.tick("planner", alive=False, code=1, now=200)
    assert sup.supervised() == []
