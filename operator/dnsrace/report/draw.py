"""The report's pictures, drawn with matplotlib's Agg backend into PNG bytes.

Who calls it: ``report.render``. Why Agg and bytes: the report is made on machines with no
display (CI, the scenario runner) and embedded in one HTML file, so nothing is shown or written
here. ``timeline`` stacks every run's lanes on one axis of seconds from the stall, grouped by
lane so that the same signal of each run (safeguards off, on) sits one above the other;
``phases`` draws the published AWS phases on their own axis of hours, as they lasted.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib import transforms
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, MultipleLocator
from matplotlib.typing import LineStyleType

from dnsrace.report import lanes as lanes_mod
from dnsrace.report import phases as phases_mod

STYLES: dict[str, dict[str, object]] = {
    "NOERROR": {"color": "#2e7d32"},
    "NODATA": {"color": "#ef6c00"},
    "NXDOMAIN": {"color": "#c62828"},
    "SERVFAIL": {"color": "#6a1b9a"},
    "TIMEOUT": {"color": "#616161"},
    "prober": {"color": "#1565c0", "linewidth": 1.4},
    "store": {"color": "#000000", "linewidth": 1.0, "linestyle": "--"},
    "write": {"marker": "|", "s": 60, "linewidths": 1.2},
    "stale": {"color": "#c62828", "marker": "X", "s": 90, "zorder": 5},
    "empty-store": {"color": "#c62828"},
    "empty-dns": {"facecolor": "#fbe0e0", "hatch": "////", "edgecolor": "#c62828",
                  "linewidth": 0.6},
    "delete-plan": {"color": "#757575", "marker": "|", "s": 50},
    "delete-records": {"color": "#c62828", "marker": "v", "s": 45, "zorder": 5},
    "client-ok": {"color": "#2e7d32", "linewidth": 1.4},
    "client-dns": {"color": "#c62828"},
    "restart": {"color": "#000000", "marker": "x", "s": 60},
}
"""Colours and markers by ``Track.style``; an unknown style takes the next default colour."""

WRITERS = {"enactor-a": "#1565c0", "enactor-b": "#ef6c00", "enactor-c": "#2e7d32",
           "repair": "#6a1b9a"}
"""One colour per writer in every run, so enactor-b is the same colour off and on."""
OTHER_WRITER = "#5d4037"

WIDTH = 15.0
"""Inches; at 100 dpi a 1500-pixel picture, readable in a pull request without zooming."""
DPI = 100
ROW = 0.24
"""Inches per categorical row."""
NUMERIC = 1.25
"""Inches per numeric lane."""
TITLE = 0.42
"""Inches above each lane for its title."""

RUN_LINES: tuple[tuple[str, str, str, LineStyleType], ...] = (
    ("t_fault", "stall injected", "#c62828", ":"),
    ("t_faults_removed", "faults removed", "#616161", "-."),
    ("t_repair", "repair", "#2e7d32", "--"),
    ("t_dwfm_restart", "dwfm restart --throttle", "#1565c0", (0, (5, 2, 1, 2))),
    ("t_failover_off", "nlb failover off", "#ef6c00", (0, (1, 1))),
)
"""Vertical lines across every lane of a run: the runner's stall, fault removal, repair, and
outage-2025's manual steps."""


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    plt.close(fig)
    return buf.getvalue()


EMPTY = 0.4
"""Inches for a lane with nothing to draw: its note ("no endpoint empty") is the whole news."""


def _height(lane: lanes_mod.Lane) -> float:
    if not lane.tracks:
        return EMPTY
    return max(len(lane.rows), 1) * ROW + 0.35 if lane.rows else NUMERIC


def _run_lines(run: lanes_mod.Run) -> list[tuple[float, str, str, LineStyleType]]:
    obs = run.record.observed
    steps = obs.get("steps") or {}
    times = {"t_fault": run.t_fault, "t_repair": obs.get("t_repair", steps.get("t_repair")),
             "t_dwfm_restart": steps.get("t_dwfm_restart"),
             "t_failover_off": steps.get("t_failover_off")}
    for entry in run.json("timeline.json", []):
        if str(entry.get("event", "")).startswith("faults removed"):
            times["t_faults_removed"] = float(entry["t"])
    return [(run.rel(float(t)), label, colour, style) for key, label, colour, style in RUN_LINES
            if (t := times.get(key)) is not None]


def _span(t: lanes_mod.Track) -> list[tuple[float, float]]:
    # A span shorter than a pixel still shows: the store sees sub-second windows.
    return [(s, max(e - s, 0.15)) for s, e in zip(t.t, t.y, strict=True)]


def _draw_lane(ax: Axes, lane: lanes_mod.Lane) -> None:
    rows = {row: i for i, row in enumerate(reversed(lane.rows))}
    shared_rows: dict[str, int] = {}
    for track in lane.tracks:
        if track.row:
            shared_rows[track.row] = shared_rows.get(track.row, 0) + (track.kind == "spans")
    seen_labels: set[str] = set()
    for track in lane.tracks:
        style = dict(STYLES.get(track.style, {}))
        label = None if track.label in seen_labels else track.label
        seen_labels.add(track.label)
        if track.kind == "spans":
            base = rows.get(track.row or "", 0)
            # Two views of one row (store, CoreDNS) share it: the store below, the prober above.
            if track.style == "empty-store":
                y, h = base - 0.4, 0.38
            elif track.style == "empty-dns":
                y, h = base + 0.02, 0.38
            else:
                y, h = base - 0.35, 0.7
            ax.broken_barh(_span(track), (y, h), label=label, **style)  # type: ignore[arg-type]
        elif track.kind == "points":
            ys = [rows.get(track.row, 0) for _ in track.t] if track.row is not None and rows \
                else list(track.y)
            if track.style == "write" and track.row:
                style["color"] = WRITERS.get(track.row, OTHER_WRITER)
            ax.scatter(track.t, ys, label=label, **style)  # type: ignore[arg-type]
            if track.style == "stale":
                # Above and below in turn: stale writes a second apart would print over
                # each other's serial.
                for n, (t, y, serial) in enumerate(zip(track.t, ys, track.y, strict=True)):
                    ax.annotate(f"{serial:.0f}", (t, y), textcoords="offset points",
                                xytext=(4, 4 if n % 2 == 0 else -11), fontsize=7,
                                color="#c62828")
        elif track.kind == "bars":
            ax.bar(track.t, track.y, width=1.0, align="edge", label=label,
                   **style)  # type: ignore[arg-type]
        else:
            ax.step(track.t, track.y, where="post", label=label,
                    **style)  # type: ignore[arg-type]
    if not lane.tracks:
        ax.set_yticks([])
    elif lane.rows:
        ax.set_yticks(range(len(lane.rows)), list(reversed(lane.rows)), fontsize=7)
        ax.set_ylim(-0.6, len(lane.rows) - 0.4)
    else:
        ax.tick_params(axis="y", labelsize=7)
        if lane.unit:
            ax.set_ylabel(lane.unit, fontsize=7)
        if lane.ylim:
            ax.set_ylim(*lane.ylim)
    if not lane.tracks and lane.note:
        ax.text(0.5, 0.5, lane.note, transform=ax.transAxes, ha="center", va="center",
                fontsize=8, color="#616161")
    if lane.tracks:
        ax.legend(loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize=7, frameon=False,
                  borderaxespad=0.0)


def timeline(runs: Sequence[lanes_mod.Run],
             specs: Sequence[lanes_mod.LaneSpec] = lanes_mod.LANES) -> bytes:
    """Every run's lanes stacked on one axis of seconds from the stall, as PNG bytes."""
    plotted: list[tuple[lanes_mod.Run, lanes_mod.Lane]] = []
    for spec in specs:
        for run in runs:
            if spec.applies(run):
                plotted.append((run, spec.extract(run)))
    if not plotted:
        fig = plt.figure(figsize=(WIDTH, 1.0))
        fig.text(0.5, 0.5, "no lane: the run folders hold none of the lanes' files",
                 ha="center", va="center")
        return _png(fig)
    heights = [_height(lane) + TITLE for _, lane in plotted]
    top, bottom = 0.7, 0.55
    total = sum(heights) + top + bottom
    fig = plt.figure(figsize=(WIDTH, total))
    grid = fig.add_gridspec(len(plotted), 1, height_ratios=heights, left=0.17, right=0.83,
                            top=1 - top / total, bottom=bottom / total, hspace=0.0)
    times = [t for _, lane in plotted for tr in lane.tracks for t in (*tr.t, *(
        tr.y if tr.kind == "spans" else ())) if math.isfinite(t)]
    lo, hi = (min(times, default=-10.0), max(times, default=10.0))
    # A run's warm-up and tail can be long; the race is within minutes of the stall.
    lo, hi = max(lo, -300.0) - 2, min(hi, 1800.0) + 2
    axes: list[Axes] = []
    for i, (run, lane) in enumerate(plotted):
        # Each lane gets its height plus a title band; the title sits in that band.
        sub = grid[i].subgridspec(2, 1, height_ratios=[TITLE, _height(lane)], hspace=0.0)
        ax = fig.add_subplot(sub[1], sharex=axes[0] if axes else None)
        axes.append(ax)
        ax.set_title(f"{lane.title}  ·  safeguards {run.safeguards}  ·  {run.label}",
                     loc="left", fontsize=8.5, pad=3)
        _draw_lane(ax, lane)
        for t, _label, colour, style in _run_lines(run):
            ax.axvline(t, color=colour, linestyle=style, linewidth=1.3, zorder=1)
        ax.grid(axis="x", color="#e0e0e0", linewidth=0.6)
        ax.set_axisbelow(True)
        if i < len(plotted) - 1:
            ax.tick_params(axis="x", labelbottom=False)
    axes[0].set_xlim(lo, hi)
    axes[-1].set_xlabel("seconds from the stall (observed.json t_fault)", fontsize=9)
    axes[-1].tick_params(axis="x", labelsize=8)
    axes[0].xaxis.set_major_locator(MultipleLocator(_tick(hi - lo)))
    handles: list[Artist] = [Line2D([], [], color=c, linestyle=s, label=label)
                             for _, label, c, s in RUN_LINES]
    handles += [Patch(color=str(STYLES[r]["color"]), label=r) for r in lanes_mod.ANSWER_ROWS]
    fig.legend(handles=handles, loc="upper center", ncol=len(handles), fontsize=8,
               frameon=False, bbox_to_anchor=(0.5, 1 - 0.12 / total))
    return _png(fig)


def _tick(span: float) -> float:
    for step in (1, 2, 5, 10, 20, 30, 60, 120, 300):
        if span / step <= 20:
            return float(step)
    return 600.0


def phases() -> bytes:
    """The published AWS phases, one bar each, on hours from 11:48 PM PDT (PNG bytes)."""
    items = phases_mod.PHASES
    fig, ax = plt.subplots(figsize=(WIDTH, 0.5 * len(items) + 2.0))
    fig.subplots_adjust(left=0.2, right=0.98, top=0.76, bottom=0.15)
    for i, phase in enumerate(reversed(items)):
        start, end = phases_mod.hours(phase.start), phases_mod.hours(phase.end)
        reproduced = phase is items[0]
        ax.broken_barh([(start, end - start)], (i - 0.35, 0.7),
                       color="#c62828" if reproduced else "#ef6c00", alpha=0.85)
        ax.text(end + 0.08, i, phase.span(), va="center", fontsize=7.5)
    ax.set_yticks(range(len(items)), [p.name for p in reversed(items)], fontsize=8)
    # Milestone labels above the axes on two alternating levels: two of them are half an hour
    # apart and would print over each other on one.
    above = transforms.blended_transform_factory(ax.transData, ax.transAxes)
    for n, m in enumerate(phases_mod.MILESTONES):
        h = phases_mod.hours(m.at)
        ax.axvline(h, color="#616161", linestyle=":", linewidth=0.9)
        ax.text(h, 1.03 + 0.11 * (n % 2), f"{phases_mod.clock(h)} {m.text}", transform=above,
                fontsize=7, ha="center", va="bottom", color="#424242")
    fig.text(0.01, 0.97, "The published AWS phases (red: what the race scenario reproduces)",
             fontsize=9.5, va="top")
    ax.set_xlim(-0.2, 16.2)
    # Ticks on the hour of the clock, not on the hour since 11:48 PM.
    first = (60 - phases_mod.START.minute) / 60
    ax.set_xticks([first + k for k in range(16)])
    ax.xaxis.set_major_formatter(FuncFormatter(
        lambda h, _pos: phases_mod.clock(h).replace(":00", "")))
    ax.tick_params(axis="x", labelsize=7.5)
    ax.set_xlabel("2025-10-19/20, Pacific Daylight Time (AWS post-event summary)", fontsize=9)
    ax.grid(axis="x", color="#e0e0e0", linewidth=0.6)
    ax.set_axisbelow(True)
    return _png(fig)
