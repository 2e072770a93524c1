"""One ``dnsrace check`` run and the safeguard ablation, as data for ``cli.check`` to print.

A check searches every interleaving within the bounds (``explore.search``, or
``explore.search_bounded`` under a preemption bound), then looks for the shortest
counterexample of each property it found broken (``explore.shortest``) and replays it into a
step table. No printing here: the command renders the ``Report``.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from dnsrace.check import explore, model, properties
from dnsrace.core.safeguards import CASCADE, ON, Safeguards

BACKGROUND = frozenset({model.PLANNER})
"""Under a preemption bound, the planner is preempted for free: it runs on its own clock, and
what the bound should limit is how often an enactor or a finalizer is interrupted."""


@dataclasses.dataclass(frozen=True)
class Counterexample:
    prop: str
    message: str
    steps: list[tuple[int, str, str, str]]
    """(step, process, what it did, what it saw or left)."""
    shortest: bool
    """False when the breadth-first search hit its bound first: then a longer trace."""


@dataclasses.dataclass
class Report:
    bounds: model.Bounds
    preemptions: int | None
    stats: explore.Stats
    counterexamples: list[Counterexample]
    seconds: float
    """Search and shortest traces together."""

    @property
    def holds(self) -> bool:
        return not self.counterexamples

    def to_json(self) -> dict[str, Any]:
        b = self.bounds
        return {
            "safeguards": str(b.safeguards),
            "bounds": {"enactors": b.enactors, "plans": b.plans, "endpoints": b.endpoints,
                       "keep": b.keep, "retries": b.retries, "preemptions": self.preemptions},
            "states": self.stats.states,
            "transitions": self.stats.transitions,
            "complete": self.stats.complete,
            "max_depth": self.stats.max_depth,
            "search_seconds": round(self.stats.seconds, 3),
            "states_per_second": round(self.stats.per_second),
            "seconds": round(self.seconds, 3),
            "violated": [c.prop for c in self.counterexamples],
            "counterexamples": [
                {"property": c.prop, "message": c.message, "length": len(c.steps),
                 "shortest": c.shortest,
                 "steps": [{"step": n, "process": p, "action": a, "result": r}
                           for n, p, a, r in c.steps]}
                for c in self.counterexamples
            ],
        }


def run(bounds: model.Bounds, *, preemptions: int | None = None,
        max_states: int | None = None) -> Report:
    started = time.perf_counter()
    factory = model.factory(bounds)
    if preemptions is None:
        outcome = explore.search(factory, max_states=max_states)
    else:
        outcome = explore.search_bounded(factory, preemptions, max_states=max_states,
                                         free=BACKGROUND)
    found = dict(outcome.found)
    if found:
        deepest = max(len(f.path) for f in found.values())
        short = explore.shortest(factory, set(found), preemptions=preemptions,
                                 max_depth=deepest, max_states=max_states, free=BACKGROUND)
    else:
        short = {}
    counterexamples = []
    for prop in properties.NAMES:
        if prop not in found:
            continue
        best = short.get(prop, found[prop])
        world = explore.replay(model.factory(bounds, narrate=True), best.path)
        assert isinstance(world, model.EnactorWorld)
        counterexamples.append(Counterexample(prop, best.message, world.table(),
                                              shortest=prop in short))
        world.run.close()
    return Report(bounds, preemptions, outcome.stats, counterexamples,
                  time.perf_counter() - started)


def ablation(bounds: model.Bounds, *, preemptions: int | None = None,
             max_states: int | None = None) -> list[tuple[str, Report]]:
    """The ``on`` set, then the ``on`` set without each safeguard in turn (the control loop's:
    the cascade's act on components the model does not hold)."""
    loop = [n for n in ON if n not in CASCADE]
    out = [("(none)", run(dataclasses.replace(bounds, safeguards=Safeguards.parse(",".join(loop))),
                          preemptions=preemptions, max_states=max_states))]
    for removed in loop:
        rest = Safeguards.parse(",".join(n for n in loop if n != removed))
        out.append((removed, run(dataclasses.replace(bounds, safeguards=rest),
                                 preemptions=preemptions, max_states=max_states)))
    return out
