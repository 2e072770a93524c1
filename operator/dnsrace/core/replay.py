"""A checker counterexample (``dnsrace check -o json``) turned into a schedule for the real lab.

The checker runs the enactor's own code under a scheduler that decides every store operation's
turn; the real enactors run freely. Between two of a trace's steps an enactor can be stopped
only where it has an injection point (``core.enacting``'s hooks), so the replay puts a
``hold`` Fault at the hook an enactor reaches right after the last step the trace lets it take,
and deletes that Fault when the trace gives it its turn again. The planner's steps become plans
the runner creates (the checker's own plans, so the records are the same), and an enactor whose
first step comes late is started then. ``compile_trace`` makes that schedule; the runner
(``components.scenarios.replay``) carries it out and checks that the endpoints end as the
trace's do.

Only what the real code can be stopped at is replayed: a trace that preempts an enactor between
two operations without a hook between them is refused with the step that needs one.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

READ_ENDPOINT = re.compile(r"^read (?!plan |newest plan$|all markers$)(?P<endpoint>\S+)$")
WRITE = re.compile(r"^write (?P<endpoint>[^:]+): ")
STATE = re.compile(r"^on (?:plan (?P<serial>\d+)|no plan), (?P<addresses>\d+) address")
ADD = re.compile(r"^add plan (?P<serial>\d+)$")
FINALIZER = re.compile(r"^(?P<enactor>enactor-[a-z])/finalizer-(?P<serial>\d+)$")


class TraceError(ValueError):
    """The trace cannot be replayed; the message names the step."""


@dataclasses.dataclass(frozen=True)
class Step:
    n: int
    process: str
    action: str
    result: str


@dataclasses.dataclass(frozen=True)
class Hold:
    """A hold Fault: ``enactor`` stops at ``step`` (at ``endpoint``, if given)."""

    name: str
    enactor: str
    step: str
    endpoint: str | None = None
    skip: int = 0
    """Times the enactor passes the hook in its own segment before it must stop there."""


@dataclasses.dataclass(frozen=True)
class Action:
    """One thing the runner does, in order.

    - ``plans``: create the plans ``serials``;
    - ``start``: start ``process`` (an enactor);
    - ``hold``: create the hold Faults ``holds`` (before the process may reach them);
    - ``release``: delete ``holds`` so their enactor goes on;
    - ``await``: wait until ``effects`` are seen and then (``reach``) until the process has
      reached one of ``holds``.
    """

    kind: str
    process: str = ""
    serials: tuple[int, ...] = ()
    holds: tuple[Hold, ...] = ()
    effects: tuple[tuple[str, str, int], ...] = ()
    """(``marker``, endpoint, serial): the endpoint's marker names the serial;
    (``addresses``, endpoint, n): the endpoint has n address records;
    (``terminating``, "", serial): the plan's deletion has begun;
    (``finalized``, enactor, serial): that enactor's finalizer is off the plan (or it is gone)."""
    steps: tuple[int, int] = (0, 0)
    """The trace's steps this action stands for (first, last)."""
    reach: bool = True
    """``await``: the process must reach one of ``holds`` (it has more steps in the trace); at
    its last segment the holds only keep it from doing more, and it may as well go idle."""


@dataclasses.dataclass(frozen=True)
class Schedule:
    prop: str
    safeguards: str
    endpoints: tuple[str, ...]
    """Short names, as the trace prints them (the zone left out)."""
    enactors: tuple[str, ...]
    keep: int
    actions: tuple[Action, ...]
    final: dict[str, tuple[int | None, int]]
    """endpoint -> (active serial, address count) at the trace's end."""


def load(body: dict[str, Any], prop: str | None = None) -> tuple[str, list[Step], dict[str, Any]]:
    """The counterexample of ``prop`` (default: never-empty, else the first) in a check report."""
    found = body.get("counterexamples") or []
    if not found:
        raise TraceError("the report holds no counterexample (every property held)")
    names = [c["property"] for c in found]
    if prop is None:
        prop = "never-empty" if "never-empty" in names else names[0]
    chosen = [c for c in found if c["property"] == prop]
    if not chosen:
        raise TraceError(f"no counterexample of {prop!r} in the report: it has "
                         f"{', '.join(names)}")
    steps = [Step(int(s["step"]), str(s["process"]), str(s["action"]), str(s["result"]))
             for s in chosen[0]["steps"]]
    return prop, steps, body


def _segments(steps: list[Step]) -> list[list[Step]]:
    out: list[list[Step]] = []
    for s in steps:
        if out and out[-1][0].process == s.process:
            out[-1].append(s)
        else:
            out.append([s])
    return out


def _holds_after(enactor: str, last: Step, following: Step | None,
                 index: int) -> tuple[Hold, ...]:
    """Where ``enactor`` must be stopped after ``last`` so that its next operation is
    ``following`` (or, at the trace's end, nothing more): the hook just before it."""
    def hold(step: str, endpoint: str | None = None) -> Hold:
        return Hold(f"replay-{enactor}-{index}-{step}", enactor, step, endpoint)

    nxt = following.action if following else None
    if nxt is not None:
        m = READ_ENDPOINT.match(nxt)
        if m and last.action.startswith("read plan "):
            # apply_endpoint: the plan re-read, the endpoint-read hook, the endpoint's read.
            return (hold("endpoint-read", m["endpoint"]),)
        w = WRITE.match(nxt)
        if w and (READ_ENDPOINT.match(last.action) or last.action.startswith("read plan ")):
            # The change is decided from what was read; the endpoint-change hook precedes
            # sending it.
            return (hold("endpoint-change", w["endpoint"]),)
        if nxt == "list plans":
            return (hold("clean-up"),)
        if nxt.startswith("read plan ") and (WRITE.match(last.action)
                                              or last.action == "read all markers"):
            # The next endpoint: its endpoint-write hook comes before the plan's re-read.
            return (hold("endpoint-write"),)
        if nxt == "read all markers" and last.action == "read newest plan":
            return (hold("before-apply"),)
        if nxt == "read newest plan":
            return ()  # between cycles: an idle enactor waits for a newer plan by itself
        raise TraceError(
            f"step {following.n if following else '?'}: the trace stops {enactor} after "
            f"{last.action!r} and resumes it at {nxt!r}; the enactor has no injection point "
            "between those two operations, so the real one cannot be stopped there")
    # The trace's end: stop the enactor at whichever hook it reaches next (the next endpoint,
    # its clean-up, or its next cycle), so that it does nothing the trace did not do.
    if last.action in ("list plans",) or last.action.startswith("delete plan "):
        return (hold("before-apply"),)
    return (hold("endpoint-write"), hold("clean-up"), hold("before-apply"))


def _passes(steps: list[Step], start: int, end: int) -> list[tuple[str, str | None]]:
    """The hooks an enactor passes before its steps ``start``..``end`` (indexes into its own
    steps): each operation of ``core.enacting`` that a hook precedes."""
    out: list[tuple[str, str | None]] = []
    for k in range(start, end + 1):
        action = steps[k].action
        prev = steps[k - 1].action if k > 0 else ""
        if action == "read all markers" and prev == "read newest plan":
            out.append(("before-apply", None))
        elif action.startswith("read plan ") and (prev == "read all markers"
                                                  or WRITE.match(prev)):
            out.append(("endpoint-write", None))
        elif (m := READ_ENDPOINT.match(action)) and prev.startswith("read plan "):
            out.append(("endpoint-read", m["endpoint"]))
        elif w := WRITE.match(action):
            out.append(("endpoint-change", w["endpoint"]))
        elif action == "list plans":
            out.append(("clean-up", None))
    return out


def _with_skips(holds: tuple[Hold, ...], passes: list[tuple[str, str | None]]
                ) -> tuple[Hold, ...]:
    def counted(h: Hold) -> int:
        return sum(1 for step, ep in passes
                   if step == h.step and (h.endpoint is None or ep == h.endpoint))

    return tuple(dataclasses.replace(h, skip=counted(h)) for h in holds)


def _effects(segment: list[Step]) -> tuple[tuple[str, str, int], ...]:
    effects: list[tuple[str, str, int]] = []
    process = segment[0].process
    fin = FINALIZER.match(process)
    for s in segment:
        w = WRITE.match(s.action)
        st = STATE.match(s.result)
        if w and st and st["serial"] is not None:
            effects.append(("marker", w["endpoint"], int(st["serial"])))
        if w and st:
            effects.append(("addresses", w["endpoint"], int(st["addresses"])))
        if s.action.startswith("delete plan "):
            effects.append(("terminating", "", int(s.action.rsplit(" ", 1)[1])))
        if fin and s.action.startswith("drop finalizer of plan "):
            effects.append(("finalized", fin["enactor"], int(fin["serial"])))
    return tuple(effects)


def compile_trace(body: dict[str, Any], prop: str | None = None) -> Schedule:
    prop, steps, report = load(body, prop)
    bounds = report.get("bounds", {})
    endpoints: list[str] = []
    for s in steps:
        for rx in (READ_ENDPOINT, WRITE):
            m = rx.match(s.action)
            if m and m["endpoint"] not in endpoints:
                endpoints.append(m["endpoint"])
    enactors = sorted({s.process.split("/", 1)[0] for s in steps
                       if s.process.startswith("enactor-")})
    finalizers = sorted({s.process for s in steps if FINALIZER.match(s.process)})
    segments = _segments(steps)
    actions: list[Action] = []
    # Finalizers the trace runs late are held from the start (a deletion would run them at
    # once); one hold per enactor, as the finalize hook does not name the plan.
    held_finalizers: dict[str, Hold] = {}
    for proc in finalizers:
        owner = proc.split("/", 1)[0]
        if owner not in held_finalizers:
            held = Hold(f"replay-{owner}-finalize", owner, "finalize")
            held_finalizers[owner] = held
            actions.append(Action("hold", owner, holds=(held,)))
    started: set[str] = set()
    pending: dict[str, tuple[Hold, ...]] = {}
    for i, seg in enumerate(segments):
        proc = seg[0].process
        span = (seg[0].n, seg[-1].n)
        if proc == "planner":
            serials = []
            for s in seg:
                m = ADD.match(s.action)
                if not m:
                    raise TraceError(f"step {s.n}: unknown planner action {s.action!r}")
                serials.append(int(m["serial"]))
            actions.append(Action("plans", proc, serials=tuple(serials), steps=span))
            continue
        fin = FINALIZER.match(proc)
        enactor = fin["enactor"] if fin else proc
        if not fin:
            later = [s for t in segments[i + 1:] for s in t if t[0].process == proc]
            holds = _holds_after(proc, seg[-1], later[0] if later else None, i)
            # The holds exist while the segment runs: the hooks it passes itself must not stop
            # it. A released segment's first hook is the released hold's, already passed.
            own = [s for s in steps if s.process == proc]
            first = own.index(seg[0]) + (1 if proc in started else 0)
            holds = _with_skips(holds, _passes(own, first, own.index(seg[-1])))
            if holds:
                actions.append(Action("hold", proc, holds=holds))
            if proc not in started:
                started.add(proc)
                actions.append(Action("start", proc, steps=span))
            elif proc in pending:
                actions.append(Action("release", proc, holds=pending.pop(proc), steps=span))
            if holds:
                pending[proc] = holds
            actions.append(Action("await", proc, holds=holds, effects=_effects(seg),
                                  steps=span, reach=bool(later)))
            continue
        if enactor not in started:
            raise TraceError(f"step {seg[0].n}: {proc} runs before {enactor} started")
        fin_hold = held_finalizers.pop(enactor, None)
        if fin_hold is not None:
            actions.append(Action("release", proc, holds=(fin_hold,), steps=span))
        actions.append(Action("await", proc, effects=_effects(seg), steps=span))
    final: dict[str, tuple[int | None, int]] = {}
    for s in steps:
        m = READ_ENDPOINT.match(s.action) or WRITE.match(s.action)
        st = STATE.match(s.result)
        if m and st:
            final[m["endpoint"]] = (int(st["serial"]) if st["serial"] else None,
                                    int(st["addresses"]))
    return Schedule(prop=prop, safeguards=str(report.get("safeguards", "off")),
                    endpoints=tuple(endpoints), enactors=tuple(enactors),
                    keep=int(bounds.get("keep", 1)), actions=tuple(actions), final=final)
