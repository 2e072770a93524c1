"""``dnsrace check``: the deterministic checker of the enactor protocol, and its ablation table.

Parses the bounds, calls ``check.checking`` and prints the report (rich through ``console``, or
JSON for scripts). Exits 1 when a property fails (with ``--ablation``: when the ``on`` set fails).
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from dnsrace.check import checking, model
from dnsrace.cli import console
from dnsrace.core.safeguards import Safeguards


def _preemptions(text: str) -> int | None:
    if text in ("none", "all"):
        return None
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise typer.BadParameter("a number of preemptions (0 or more), or none")
    return value


def _print(report: checking.Report) -> None:
    s, b = report.stats, report.bounds
    bound = ("every interleaving" if report.preemptions is None
             else f"at most {report.preemptions} preemption(s)")
    console.console.print(
        f"[bold]safeguards {b.safeguards}[/bold]: {b.enactors} enactors, {b.plans} plans, "
        f"{b.endpoints} endpoints, keep {b.keep}, retries {b.retries}, {bound}")
    console.console.print(
        f"{s.states} states, {s.transitions} transitions, deepest run {s.max_depth} steps, "
        f"{s.seconds:.2f} s search ({s.per_second:,.0f} states/s), {report.seconds:.2f} s "
        f"in all" + ("" if s.complete else " [yellow](stopped at --max-states)[/yellow]"))
    if report.holds:
        verdict = "no property fails within the bounds" if s.complete else (
            "no property failed in the states explored")
        console.console.print(f"[green]{verdict}[/green] ({s.states} states)")
        return
    for c in report.counterexamples:
        kind = "shortest counterexample" if c.shortest else "counterexample"
        console.table(f"{c.prop}: {c.message} ({kind}, {len(c.steps)} steps)",
                      ["#", "process", "action", "result"],
                      [[str(n), p, a, r] for n, p, a, r in c.steps])


def check_cmd(
    safeguards: Annotated[str, typer.Option(
        help="off, on (fencing, protect-active, no-empty, self-heal, serve-stale), or a comma "
        "list of "
        "those and single-writer")] = "off",
    enactors: Annotated[int, typer.Option(min=1, max=8, help="Enactors")] = 2,
    plans: Annotated[int, typer.Option(min=1, max=50, help="Plans the planner adds")] = 3,
    endpoints: Annotated[int, typer.Option(min=1, max=12, help="Endpoints per plan")] = 2,
    keep: Annotated[int, typer.Option(min=0, help="Clean-up keeps this many older plans")] = 1,
    retries: Annotated[int, typer.Option(min=0, help="Retries of a refused change")] = 1,
    preemptions: Annotated[str, typer.Option(
        help="Explore runs with at most this many preemptions, or 'none' for every "
        "interleaving")] = "1",
    max_states: Annotated[int, typer.Option(min=1, help="Stop after this many states")]
    = 1_000_000,
    ablation: Annotated[bool, typer.Option(
        "--ablation", help="Check the on set, then the on set without each safeguard")] = False,
    output: Annotated[str, typer.Option("-o", "--output", help="text or json")] = "text",
) -> None:
    """Explore the enactor protocol's interleavings and check its properties."""
    if output not in ("text", "json"):
        console.fail("--output: text or json", code=2)
    try:
        bounds = model.Bounds(enactors=enactors, plans=plans, endpoints=endpoints, keep=keep,
                              retries=retries, safeguards=Safeguards.parse(safeguards))
    except ValueError as exc:
        console.fail(str(exc), code=2)
    bound = _preemptions(preemptions)
    if ablation:
        rows = checking.ablation(bounds, preemptions=bound, max_states=max_states)
        if output == "json":
            print(json.dumps([{"removed": r, **rep.to_json()} for r, rep in rows], indent=2))
        else:
            console.table("safeguard ablation: the on set without one safeguard",
                          ["removed", "properties that fail", "shortest trace", "states"],
                          [[r, ", ".join(c.prop for c in rep.counterexamples) or "none",
                            ", ".join(f"{c.prop} {len(c.steps)} steps"
                                      for c in rep.counterexamples) or "-",
                            str(rep.stats.states)] for r, rep in rows])
            for r, rep in rows[1:]:
                console.console.print(f"\n[bold]without {r}[/bold]")
                _print(rep)
        if not rows[0][1].holds:
            raise typer.Exit(1)
        return
    report = checking.run(bounds, preemptions=bound, max_states=max_states)
    if output == "json":
        print(json.dumps(report.to_json(), indent=2))
    else:
        _print(report)
    if not report.holds:
        raise typer.Exit(1)
