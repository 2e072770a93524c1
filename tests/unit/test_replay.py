"""A checker counterexample compiled into a schedule for the real lab (``core.replay``)."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest

from dnsrace.check import checking, model
from dnsrace.components.faults import ActiveFault, FaultTable
from dnsrace.core import replay

FIPS, REGIONAL = "dynamodb-fips.us-east-1.api", "dynamodb.us-east-1"


@pytest.fixture(scope="module")
def off_report() -> dict[str, Any]:
    """``dnsrace check --safeguards off`` at the acceptance bounds (2 enactors, 3 plans, 2
    endpoints, one preemption), as ``-o json`` prints it."""
    return checking.run(model.Bounds(), preemptions=1).to_json()


def test_the_never_empty_trace_compiles_into_holds_at_real_hooks(
        off_report: dict[str, Any]) -> None:
    s = replay.compile_trace(off_report)
    assert s.prop == "never-empty"
    assert s.enactors == ("enactor-a", "enactor-b")
    assert s.endpoints == (FIPS, REGIONAL)
    assert s.keep == 1
    kinds = [(a.kind, a.process) for a in s.actions]
    # enactor-a's finalizer is held before anything runs; plan 1; enactor-a stopped after its
    # check of plan 1; plans 2 and 3; enactor-b's whole cycle; enactor-a's stale write; its
    # finalizer last.
    assert kinds[:2] == [("hold", "enactor-a"), ("plans", "planner")]
    assert [a.serials for a in s.actions if a.kind == "plans"] == [(1,), (2, 3)]
    first = next(a.holds for a in s.actions if a.kind == "await" and a.holds)
    assert [(h.step, h.endpoint) for h in first] == [("endpoint-read", FIPS)]
    b = next(a for a in s.actions if a.kind == "await" and a.process == "enactor-b")
    assert ("terminating", "", 1) in b.effects
    assert ("marker", REGIONAL, 3) in b.effects
    last = s.actions[-1]
    assert last.process == "enactor-a/finalizer-1"
    assert ("addresses", FIPS, 0) in last.effects
    assert s.final == {FIPS: (1, 0), REGIONAL: (3, 1)}


def test_each_counterexample_of_the_off_report_compiles(off_report: dict[str, Any]) -> None:
    for c in off_report["counterexamples"]:
        s = replay.compile_trace(off_report, c["property"])
        assert s.actions
        assert s.final
    # The shortest one (the acceptance's): enactor-a's stale write of plan 1 is held just
    # before it is sent, while enactor-b deletes plan 1.
    s = replay.compile_trace(off_report, "active-plan-exists")
    holds = [h for a in s.actions if a.kind == "hold" for h in a.holds]
    assert any(h.step == "endpoint-change" and h.endpoint == FIPS for h in holds)
    assert s.final[FIPS][0] == 1


def test_a_preemption_without_a_hook_is_refused_with_its_step(
        off_report: dict[str, Any]) -> None:
    body = copy.deepcopy(off_report)
    trace = next(c for c in body["counterexamples"] if c["property"] == "never-empty")
    # Stop enactor-b between listing the plans and deleting one: no hook lies there.
    steps = trace["steps"]
    i = next(k for k, s in enumerate(steps) if s["process"] == "enactor-b"
             and s["action"] == "list plans")
    steps.insert(i + 1, {"step": 0, "process": "planner", "action": "add plan 4",
                         "result": "created"})
    with pytest.raises(replay.TraceError, match="no injection point"):
        replay.compile_trace(body, "never-empty")


def test_a_report_without_the_asked_counterexample_says_what_it_has(
        off_report: dict[str, Any]) -> None:
    with pytest.raises(replay.TraceError, match="active-plan-exists"):
        replay.compile_trace(off_report, "no-such-property")
    with pytest.raises(replay.TraceError, match="every property held"):
        replay.compile_trace({"counterexamples": []})


async def test_a_hold_fault_waits_at_its_step_until_deleted() -> None:
    table = FaultTable("enactor-a", api=None, namespace="ns")  # type: ignore[arg-type]
    table._report = lambda fault, phase: None  # type: ignore[method-assign]
    body = {"metadata": {"name": "h"}, "spec": {"target": "enactor-a", "action": "hold",
                                                "step": "endpoint-read",
                                                "endpoints": ["a.sim.internal"], "count": 1}}
    await table.observe("ADDED", body)

    other = asyncio.create_task(table.hook("endpoint-read", "b.sim.internal"))
    held = asyncio.create_task(table.hook("endpoint-read", "a.sim.internal"))
    await asyncio.sleep(0.2)
    assert other.done(), "another endpoint is not held"
    assert not held.done()
    # A status update (MODIFIED) must not lose the waiter's release.
    await table.observe("MODIFIED", body | {"status": {"injected": 1}})
    await table.observe("DELETED", body)
    await asyncio.wait_for(held, 1)
    fault = ActiveFault("x", "hold", "finalize", 0, 0, frozenset(), None, None)
    assert fault.matches("finalize", None)
