"""The incident report of one or more race runs, as one HTML file or as Markdown for a pull request.

Who calls it: ``dnsrace report`` (``cli.report``) and the scenario runner at the end of a run,
through ``write_report``. Why from the run folders alone: the verdict is recomputed here by
``core.verdicts.judge`` (the function the runner and ``dnsrace scenario judge`` call), and the
report says whether it equals the ``verdict.json`` the runner wrote, so a report can be trusted
without the lab that made the run.

HTML embeds its pictures as ``data:`` URIs: one file that opens anywhere (a CI artifact, a mail
attachment, a browser with no network) and cannot lose its images when moved. Markdown cannot
embed them in a pull-request comment, so its PNGs are written beside it and linked relatively.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dnsrace.core import outage, verdicts
from dnsrace.report import draw, lanes, phases

FORMATS = ("html", "md")

FIGURES: tuple[tuple[str, str], ...] = (
    ("time_to_records_removed", "regional records removed in the DNS etcd (s after the stall)"),
    ("time_to_first_empty", "first NXDOMAIN/NODATA answer (s after the stall)"),
    ("stall_attempts", "enactor-a stalls served until then"),
    ("regional_empty_window", "regional NXDOMAIN/NODATA window (s)"),
    ("longest_empty_window", "longest empty window of any endpoint (s)"),
    ("empty_answers", "empty answers"),
    ("failed_answers", "of which SERVFAIL or timeout"),
    ("answers", "answers"),
    ("answers_expected", "answers expected from the probe rate"),
    ("endpoints_empty", "endpoints with empty answers"),
    ("store_endpoints_emptied", "endpoints emptied in the store"),
    ("store_empty_at_end", "endpoints still empty in the store at the end"),
    ("stale_regressions", "stale regressions through CoreDNS"),
    ("store_regressions", "marker regressions in the store"),
    ("regional_marker_writes", "regional marker writes"),
    ("plans_during_faults", "plans created under the faults"),
    ("fault_injections", "fault injections"),
    ("blocked", "enactors left blocked"),
    ("blocked_warnings", "Warning events (ActivePlanMissing, ChangeRejected)"),
    ("converged", "converged on the newest plan"),
    ("endpoints_on_deleted_plans", "endpoints on deleted plans"),
    ("repair_changed", "repair: endpoints changed"),
    ("time_to_restore", "repair: restored in (s)"),
    ("client_requests", "DynamoDB client requests"),
    ("client_ok_before_fault", "clients: success share before the fault"),
    ("client_dns_errors", "clients: DNS errors under the faults"),
    ("client_dns_share_while_empty", "clients: DNS error share while the record was empty"),
    ("client_time_to_recover", "clients: last failure after the repair (s)"),
    ("client_ok_after_recovery", "clients: success share from 10 s after the repair"),
    ("client_ok_after_fault", "clients: success share under the faults"),
    ("component_restarts", "component restarts"),
    ("stall", "stall (s)"),
    ("stall_jitter", "stall jitter (s)"),
    ("plan_period", "plan period (s)"),
    ("plan_lifetime_median", "median plan lifetime (s)"),
)
"""The verdict's figures the table shows, in reading order; all of them are in the details."""

OUTAGE_FIGURES: tuple[tuple[str, str], ...] = (
    *((f"phase {p}", f"phase {p}: start, end (s after the fault)") for p in outage.PHASES),
    ("reachable_again", "DynamoDB reachable again (s after the fault)"),
    ("goodput_again", "DWFM goodput back to the yardstick (s after the fault)"),
    ("goodput_until_restart", "DWFM's best goodput before the manual restart"),
    ("leases_lowest", "fewest valid leases"),
    ("launch_failures", "launch failures"),
    ("backlog_largest", "largest network backlog (states)"),
    ("backlog_oldest", "oldest waiting network state (s)"),
    ("flips", "NLB target flips"),
    ("capacity_removed", "healthy capacity the NLB removed"),
    ("largest_removal_per_interval", "most capacity removed in one velocity interval"),
    ("all_leases_after", "every lease back after DynamoDB's return (s)"),
)
"""The outage-2025 verdict's figures (``core.outage``), as the table shows them."""


@dataclasses.dataclass(frozen=True)
class Check:
    """Whether the recomputed verdict equals the runner's ``verdict.json``."""

    status: str
    """``equal``, ``differs`` or ``absent``."""
    differing: tuple[str, ...] = ()
    """Figures (and ``passed``) whose values differ."""
    new: tuple[str, ...] = ()
    """Figures the recomputed verdict has and ``verdict.json`` lacks (an older verdict)."""
    gone: tuple[str, ...] = ()
    """Figures ``verdict.json`` has and the recomputed verdict lacks."""
    file: str = "verdict.json"
    """The runner's verdict file (``outage.json`` for outage-2025)."""

    @property
    def text(self) -> str:
        if self.status == "equal":
            return f"equal to {self.file}"
        if self.status == "absent":
            return f"no {self.file} in the run folder (recomputed only)"
        parts = [f"{label}: {', '.join(keys)}" for label, keys in (
            ("values differ", self.differing),
            (f"not in {self.file} (judged by an older version)", self.new),
            (f"only in {self.file}", self.gone)) if keys]
        return f"DIFFERS from {self.file}: " + "; ".join(parts)


@dataclasses.dataclass(frozen=True)
class RunReport:
    run: lanes.Run
    verdict: verdicts.Verdict
    check: Check
    story: tuple[lanes.Moment, ...]
    commands: tuple[str, ...]


def plain(value: Any) -> Any:
    """A value as JSON gives it back (tuples become lists), for comparing with a file."""
    return json.loads(json.dumps(value))


def check(run_dir: Path, verdict: verdicts.Verdict) -> Check:
    path = run_dir / "verdict.json"
    if not path.is_file():
        return Check("absent")
    written = json.loads(path.read_text())
    mine = plain(verdict.figures)
    theirs = written.get("figures", {})
    differing = sorted(k for k in set(mine) & set(theirs) if mine[k] != theirs[k])
    if written.get("passed") != verdict.passed:
        differing.insert(0, "passed")
    new, gone = sorted(set(mine) - set(theirs)), sorted(set(theirs) - set(mine))
    return Check("differs" if differing or new or gone else "equal", tuple(differing),
                 tuple(new), tuple(gone))


def commands(run: lanes.Run) -> tuple[str, ...]:
    sg = run.safeguards
    out = ["make local-up",
           f".venv/bin/dnsrace scenario run race --safeguards {sg}"]
    stall = (run.record.observed.get("calibration") or {}).get("stall")
    if stall is not None:
        out.append(f".venv/bin/dnsrace scenario run race --safeguards {sg} --stall {stall}"
                   f"   # this run's stall instead of a new calibration")
    out += [f".venv/bin/dnsrace scenario judge {run.path}",
            f".venv/bin/dnsrace report {run.path}"]
    return tuple(out)


def headline(r: RunReport) -> str:
    """One sentence per run, from the verdict's figures: what a reader wants first."""
    f = r.verdict.figures
    if is_outage(r.run):
        seen = [f"{p} ({fmt(f[f'phase {p}'][0])} to {fmt(f[f'phase {p}'][1])} s)"
                for p in outage.PHASES if f"phase {p}" in f]
        return (f"outage-2025, safeguards {r.run.safeguards}: "
                f"{'as expected' if r.verdict.passed else 'NOT as expected'}; phases: "
                + (", ".join(seen) or "none") + ".")
    parts = [f"safeguards {r.run.safeguards}: "
             f"{'as expected' if r.verdict.passed else 'NOT as expected'}"]
    removed, first = f.get("time_to_records_removed"), f.get("time_to_first_empty")
    if removed is not None:
        parts.append(f"the regional records were removed {fmt(removed)} s after the stall")
    if first is not None:
        parts.append(f"CoreDNS answered NXDOMAIN/NODATA from {fmt(first)} s for "
                     f"{fmt(f.get('regional_empty_window'))} s")
    elif removed is None:
        parts.append(f"no endpoint emptied ({fmt(f.get('empty_answers'))} empty answers, "
                     f"{fmt(f.get('store_regressions'))} marker regressions in the store)")
    if f.get("client_dns_share_while_empty") is not None:
        parts.append(f"{f['client_dns_share_while_empty']:.0%} of DynamoDB requests failed with "
                     "a DNS error meanwhile")
    elif f.get("client_ok_after_fault") is not None:
        parts.append(f"{f['client_ok_after_fault']:.2%} of DynamoDB requests succeeded under "
                     "the faults")
    if f.get("blocked"):
        parts.append("the enactors were left blocked")
    if f.get("repair_restored"):
        parts.append(f"repair restored it in {fmt(f.get('time_to_restore'))} s")
    return "; ".join(parts) + "."


def is_outage(run: lanes.Run) -> bool:
    return run.record.observed.get("scenario") == "outage-2025"


def outage_verdict(d: Path) -> tuple[verdicts.Verdict, Check]:
    """The outage-2025 verdict recomputed (``core.outage``), its times made relative to the
    fault, and whether it equals the runner's ``outage.json``."""
    rec, steps, kind = outage.load(d)
    judged = outage.judge(rec, kind, steps)
    t0 = rec.t_fault

    def rel(t: float | None) -> float | None:
        return None if t is None else round(t - t0, 1)

    figures: dict[str, Any] = {f"phase {p}": [rel(s.start), rel(s.end)]
                               for p, s in judged.phases.items()}
    for key, value in judged.figures.items():
        figures[key] = rel(value) if key in ("reachable_again", "goodput_again") else value
    path = d / "outage.json"
    if not path.is_file():
        chk = Check("absent", file=path.name)
    else:
        written = json.loads(path.read_text())
        mine = plain(judged.to_json())
        differing = sorted(k for k in ("passed", "phases", "figures", "reasons")
                           if mine.get(k) != written.get(k))
        chk = Check("differs" if differing else "equal", tuple(differing), file=path.name)
    verdict = verdicts.Verdict(safeguards=kind, expected=outage.EXPECTED[kind],
                               passed=judged.passed, reasons=judged.reasons, figures=figures,
                               run_dir=str(d))
    return verdict, chk


def build(run_dirs: Sequence[Path]) -> list[RunReport]:
    out = []
    for d in run_dirs:
        run = lanes.Run.load(d)
        if is_outage(run):
            verdict, chk = outage_verdict(d)
            out.append(RunReport(run, verdict, chk, tuple(lanes.narrative(run)),
                                 outage_commands(run)))
            continue
        verdict = verdicts.judge(run.record, str(d))
        out.append(RunReport(run, verdict, check(d, verdict), tuple(lanes.narrative(run)),
                             commands(run)))
    return out


def outage_commands(run: lanes.Run) -> tuple[str, ...]:
    obs = run.record.observed
    outside = " --outside-fault" if obs.get("kind") == outage.OUTSIDE else ""
    return ("make local-up",
            f".venv/bin/dnsrace scenario run outage-2025 --safeguards {run.safeguards}"
            f"{outside} --outage {obs.get('outage', 60)}",
            f".venv/bin/dnsrace report {run.path}")


SHARES = frozenset({"client_ok_before_fault", "client_dns_share_while_empty",
                    "client_ok_after_recovery", "client_ok_after_fault"})
"""Figures that are shares of requests, shown as percentages."""


def fmt(value: Any, key: str = "") -> str:
    if key in SHARES and isinstance(value, int | float) and not isinstance(value, bool):
        return f"{value:.2%}"
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {fmt(v)}" for k, v in value.items()) or "none"
    if isinstance(value, list | tuple):
        return ", ".join(fmt(v) for v in value) or "none"
    return str(value)


def _shown(reports: Sequence[RunReport]) -> list[tuple[str, str]]:
    return [(k, label) for k, label in FIGURES + OUTAGE_FIGURES
            if any(k in r.verdict.figures for r in reports)]


# -- HTML ------------------------------------------------------------------------------------

_CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1560px;
       padding: 0 1em; color: #212121; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.8em; }
table { border-collapse: collapse; margin: .6em 0; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } td.v { font-variant-numeric: tabular-nums; }
#verdicts td:first-child { width: 24em; }
.ok { color: #2e7d32; font-weight: 600; } .bad { color: #c62828; font-weight: 600; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
pre { background: #f6f8fa; padding: .6em; overflow-x: auto; }
ol.story li span.t { display: inline-block; min-width: 6em; font-variant-numeric: tabular-nums; }
ol.story li span.src { color: #757575; font-size: .85em; }
"""


def _e(text: Any) -> str:
    return html.escape(str(text))


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode()
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{data}">'


def _lane_list() -> str:
    items = "".join(f"<li><b>{_e(s.title)}</b>: {_e(', '.join(s.files))}</li>"
                    for s in lanes.LANES)
    return f"<ul>{items}</ul>"


def to_html(reports: Sequence[RunReport], timeline: bytes, phase_png: bytes) -> str:
    runs = [r.run.label for r in reports]
    parts = ["<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>dnsrace report: {_e(', '.join(runs))}</title>",
             f"<style>{_CSS}</style></head><body>",
             "<h1>dnsrace: the DynamoDB DNS race, as the lab recorded it</h1>",
             "<p>From the run folders alone: " + ", ".join(f"<code>{_e(r.run.path)}</code>"
                                                          for r in reports) + ".</p>",
             "<ul id=\"headlines\">" + "".join(f"<li><b>{_e(r.run.label)}</b>: {_e(headline(r))}"
                                              "</li>" for r in reports) + "</ul>"]
    parts.append("<h2>Verdicts</h2><table id=\"verdicts\"><tr><th>figure</th>" + "".join(
        f"<th>{_e(r.run.label)}<br>safeguards {_e(r.run.safeguards)}</th>" for r in reports)
        + "</tr>")
    parts.append("<tr><td>outcome</td>" + "".join(
        f'<td class="{"ok" if r.verdict.passed else "bad"}" data-run="{_e(r.run.label)}" '
        f'data-figure="passed" data-value="{_e(json.dumps(r.verdict.passed))}">'
        f'{"as expected" if r.verdict.passed else "NOT as expected"}</td>' for r in reports)
        + "</tr>")
    parts.append("<tr><td>expectation</td>" + "".join(
        f"<td>{_e(r.verdict.expected)}</td>" for r in reports) + "</tr>")
    parts.append("<tr><td>recomputed verdict</td>" + "".join(
        f'<td class="{"bad" if r.check.status == "differs" else ""}" data-run="'
        f'{_e(r.run.label)}" data-check="{r.check.status}">{_e(r.check.text)}</td>'
        for r in reports) + "</tr>")
    for key, label in _shown(reports):
        cells = []
        for r in reports:
            if key in r.verdict.figures:
                value = plain(r.verdict.figures[key])
                cells.append(f'<td class="v" data-run="{_e(r.run.label)}" data-figure="{key}" '
                             f'data-value="{_e(json.dumps(value))}">{_e(fmt(value, key))}</td>')
            else:
                cells.append("<td>-</td>")
        parts.append(f"<tr><td>{_e(label)}</td>{''.join(cells)}</tr>")
    parts.append("</table>")
    for r in reports:
        if r.verdict.reasons:
            parts.append(f"<p>Why {_e(r.run.label)} is not as expected:</p><ul>" + "".join(
                f'<li class="bad">{_e(x)}</li>' for x in r.verdict.reasons) + "</ul>")
    parts.append("<h2>Timeline</h2><p>One lane per signal, each run's lane under the other's, "
                 "on one axis of seconds from the stall (<code>observed.json</code> "
                 "<code>t_fault</code>). A lane whose files a run folder lacks is not drawn. "
                 "Lanes and their files:</p>" + _lane_list())
    parts.append(_img(timeline, "timeline of every run's lanes, seconds from the stall"))
    parts.append("<h2>The published AWS phases (their own scale)</h2>")
    parts.append(_img(phase_png, "the published AWS phases, 2025-10-19/20 PDT"))
    parts.append("<table><tr><th>phase</th><th>start (PDT)</th><th>end (PDT)</th>"
                 "<th>mechanism</th></tr>" + "".join(
                     f"<tr><td>{_e(p.name)}</td><td>{_e(p.span().split(' to ')[0])}</td>"
                     f"<td>{_e(p.span().split(' to ')[1])}</td><td>{_e(p.mechanism)}</td>"
                     "</tr>" for p in phases.PHASES) + "</table>")
    for r in reports:
        parts.append(f"<h2>What happened: {_e(r.run.label)} (safeguards "
                     f"{_e(r.run.safeguards)})</h2><ol class=\"story\">")
        parts += [f'<li><span class="t">{m.t:+.2f} s</span> {_e(m.text)} '
                  f'<span class="src">[{_e(m.source)}]</span></li>' for m in r.story]
        parts.append("</ol><p>To reproduce (the lab's faults, timing left to the run):</p>")
        parts.append("<pre>" + _e("\n".join(r.commands)) + "</pre>")
        parts.append("<details><summary>every figure of the recomputed verdict</summary><pre>"
                     + _e(json.dumps(plain(r.verdict.figures), indent=1)) + "</pre></details>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


# -- Markdown --------------------------------------------------------------------------------

def _md(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def to_markdown(reports: Sequence[RunReport], timeline_name: str, phases_name: str) -> str:
    lines = ["## dnsrace: the DynamoDB DNS race, as the lab recorded it", "",
             "From the run folders alone: " + ", ".join(f"`{r.run.path}`" for r in reports)
             + ".", "",
             *[f"- **{r.run.label}**: {headline(r)}" for r in reports], "",
             "| figure | " + " | ".join(f"{_md(r.run.label)} ({_md(r.run.safeguards)})"
                                         for r in reports) + " |",
             "| --- | " + " | ".join("---" for _ in reports) + " |",
             "| outcome | " + " | ".join("**as expected**" if r.verdict.passed
                                        else "**NOT as expected**" for r in reports) + " |",
             "| recomputed verdict | " + " | ".join(_md(r.check.text) for r in reports) + " |"]
    for key, label in _shown(reports):
        lines.append(f"| {_md(label)} | " + " | ".join(
            _md(fmt(plain(r.verdict.figures[key]), key)) if key in r.verdict.figures else "-"
            for r in reports) + " |")
    lines.append("")
    for r in reports:
        if r.verdict.reasons:
            lines += [f"Why {r.run.label} is not as expected:", ""]
            lines += [f"- {x}" for x in r.verdict.reasons] + [""]
    lines += ["### Timeline", "",
              "One lane per signal, each run's lane under the other's, seconds from the stall; "
              "a lane whose files a run folder lacks is not drawn.", "",
              f"![timeline]({timeline_name})", "",
              "### The published AWS phases (their own scale)", "",
              f"![AWS phases]({phases_name})", ""]
    for r in reports:
        lines += [f"### What happened: {r.run.label} (safeguards {r.run.safeguards})", ""]
        lines += [f"1. `{m.t:+.2f} s` {m.text} _[{m.source}]_" for m in r.story]
        lines += ["", "To reproduce:", "", "```sh", *r.commands, "```", ""]
    return "\n".join(lines)


def write_report(run_dirs: Sequence[Path], out: Path, fmt: str = "html") -> Path:
    """Write the report of ``run_dirs`` to ``out`` (``html``: one self-contained file; ``md``:
    Markdown with its two PNGs beside it, ``<stem>-timeline.png`` and ``<stem>-phases.png``).
    Returns ``out``."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown report format {fmt!r}: available: {', '.join(FORMATS)}")
    if not run_dirs:
        raise ValueError("no run folder to report on")
    reports = build([Path(d) for d in run_dirs])
    timeline = draw.timeline([r.run for r in reports])
    phase_png = draw.phases()
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "html":
        out.write_text(to_html(reports, timeline, phase_png), encoding="utf-8")
    else:
        timeline_name, phases_name = f"{out.stem}-timeline.png", f"{out.stem}-phases.png"
        (out.parent / timeline_name).write_bytes(timeline)
        (out.parent / phases_name).write_bytes(phase_png)
        out.write_text(to_markdown(reports, timeline_name, phases_name), encoding="utf-8")
    return out
