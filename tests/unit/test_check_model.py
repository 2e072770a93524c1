"""The checker on the project's own enactor: CI-sized runs of both checks and of the CLI.

The bounds here are smaller than those in docs/checker.md so the file runs in seconds; the
figures there come from the commands it lists.
"""

from __future__ import annotations

import json

from typer.testing import CliRunner

from dnsrace.check import checking, explore, model, properties
from dnsrace.cli.app import app
from dnsrace.core.safeguards import Safeguards


def bounds(sg: str, enactors: int, plans: int, endpoints: int) -> model.Bounds:
    return model.Bounds(enactors=enactors, plans=plans, endpoints=endpoints,
                        safeguards=Safeguards.parse(sg))


def test_safeguards_off_the_race_deletes_the_active_plan_in_a_short_trace() -> None:
    report = checking.run(bounds("off", 2, 3, 2), preemptions=1)
    by_prop = {c.prop: c for c in report.counterexamples}
    assert set(by_prop) == set(properties.NAMES)
    race = by_prop[properties.ACTIVE_PLAN_EXISTS]
    assert race.shortest
    assert len(race.steps) <= 30
    # The trace is the incident's: one enactor's stale write of a plan another one deleted.
    assert any("delete plan 1" in action for _, _, action, _ in race.steps)
    assert race.steps[-1][3].startswith("on plan 1")


def test_safeguards_on_no_property_fails_over_every_interleaving() -> None:
    report = checking.run(bounds("on", 2, 2, 2))
    assert report.stats.complete
    assert report.holds, [c.message for c in report.counterexamples]
    assert report.stats.states > 1000


def test_safeguards_on_three_enactors_within_a_preemption_bound() -> None:
    report = checking.run(bounds("on", 3, 2, 2), preemptions=1)
    assert report.stats.complete
    assert report.holds


def test_reductions_keep_every_state_and_every_violation() -> None:
    # Sleep sets prune transitions only; symmetry merges renamed enactors.
    factory = model.factory(bounds("off", 2, 2, 1))
    plain = explore.search(factory, reduce=False, symmetry=False)
    reduced = explore.search(factory, symmetry=False)
    both = explore.search(factory)
    assert reduced.stats.states == plain.stats.states
    assert reduced.stats.transitions <= plain.stats.transitions
    assert both.stats.states < plain.stats.states
    assert set(plain.found) == set(reduced.found) == set(both.found)


def test_the_check_command_prints_json_for_scripts() -> None:
    result = CliRunner().invoke(app, ["check", "--safeguards", "on", "--enactors", "2",
                                      "--plans", "2", "--endpoints", "1", "-o", "json"])
    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    assert body["violated"] == []
    assert body["complete"]
    assert body["states"] > 0


def test_the_check_command_exits_1_with_a_step_table() -> None:
    result = CliRunner().invoke(app, ["check", "--enactors", "2", "--plans", "2",
                                      "--endpoints", "1", "--keep", "0", "--preemptions", "1"])
    assert result.exit_code == 1, result.output
    assert "active-plan-exists" in result.output
    assert "enactor-b" in result.output


def test_the_check_command_refuses_an_unknown_safeguard() -> None:
    result = CliRunner().invoke(app, ["check", "--safeguards", "fencing,x"])
    assert result.exit_code == 2
    assert "unknown safeguard x" in result.output
