"""A run folder's signals as time series on one axis: seconds from the stall (``t_fault``).

Who calls it: ``report.draw`` (one picture row per lane and run), ``report.render`` and the unit
tests. Why pure: what the picture shows must come from the run folder alone, exactly as the
verdict does, so extraction is plain functions over the loaded files (``core`` only, no
matplotlib) and is tested without drawing anything.

The lanes are data (``LANES``): each names the files it reads and a function that turns a run
into a ``Lane``. A lane whose files are all absent from a run folder is not drawn for that run,
so the cascade's lanes (issue 11) are listed already and appear once their files are written.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from dnsrace.core import observations, records, storelog, verdicts

Kind = Literal["spans", "points", "step", "line", "bars"]

ANSWER_ROWS = ("NOERROR", "NODATA", "NXDOMAIN", "SERVFAIL", "TIMEOUT")
"""The prober's answers, best first; NODATA is NOERROR with no address."""

ANSWER_GAP = 1.0
"""Seconds without a probe after which an answer's span is broken (the prober stopped)."""

CLIENT_BIN = 1.0
"""Seconds per bin of the DynamoDB clients' success share and DNS errors."""


@dataclasses.dataclass(frozen=True)
class Track:
    """One series in a lane.

    ``spans``: ``t`` are starts and ``y`` ends, drawn as bars on row ``row``; ``points``:
    markers at (``t``, ``y``), on row ``row`` when the lane has rows; ``step``/``line``/
    ``bars``: a value ``y`` at each ``t``.
    """

    label: str
    kind: Kind
    t: tuple[float, ...]
    y: tuple[float, ...]
    row: str | None = None
    style: str = ""
    """A key into ``draw.STYLES`` (colour, marker, hatch); empty: the lane's next colour."""


@dataclasses.dataclass(frozen=True)
class Lane:
    key: str
    title: str
    unit: str
    tracks: tuple[Track, ...]
    rows: tuple[str, ...] = ()
    """Categorical rows (bottom to top reversed: the first is drawn on top); empty: numeric."""
    ylim: tuple[float, float] | None = None
    note: str = ""
    """Shown in the lane when it has nothing to draw (e.g. "no restart")."""


@dataclasses.dataclass
class Run:
    """A run folder, loaded once: the verdict's own record plus the runner's other files."""

    path: Path
    record: verdicts.RunRecord
    t_fault: float
    regional: str
    _json: dict[str, Any] = dataclasses.field(default_factory=dict)
    _store: storelog.StoreSummary | None = None

    @classmethod
    def load(cls, path: Path) -> Run:
        record = verdicts.RunRecord.load(path)
        # A run cut short may have no observed.json: its first record is then the origin, so
        # the axis still reads in seconds rather than in seconds since 1970.
        first = [*(p.t for p in record.probes[:1]), *(r.t for r in record.store[:1]),
                 *(c.t for c in record.clients[:1])]
        t_fault = record.observed.get("t_fault", min(first, default=0.0))
        return cls(path=path, record=record, t_fault=float(t_fault),
                   regional=str(record.observed.get("regional", "")))

    @property
    def label(self) -> str:
        return self.path.name

    @property
    def safeguards(self) -> str:
        return str(self.record.observed.get("safeguards", "off"))

    def has(self, name: str) -> bool:
        return (self.path / name).is_file()

    def json(self, name: str, default: Any) -> Any:
        if name not in self._json:
            path = self.path / name
            self._json[name] = json.loads(path.read_text()) if path.is_file() else default
        return self._json[name]

    def store(self) -> storelog.StoreSummary:
        if self._store is None:
            obs = self.record.observed
            self._store = storelog.replay(self.record.store, obs.get("zone", ""),
                                          obs.get("scope", ""), obs.get("endpoints"))
        return self._store

    def rel(self, t: float) -> float:
        return round(t - self.t_fault, 3)


Extract = Callable[[Run], Lane]


@dataclasses.dataclass(frozen=True)
class LaneSpec:
    key: str
    title: str
    files: tuple[str, ...]
    """The lane is drawn when at least one of these is in the run folder."""
    extract: Extract

    def applies(self, run: Run) -> bool:
        return any(run.has(f) for f in self.files)


def short(name: str, zone: str) -> str:
    """An endpoint without the lab's zone: the rows stay readable with a dozen endpoints."""
    suffix = "." + zone.strip(".") if zone else ""
    return name[: -len(suffix)] if suffix and name.endswith(suffix) else name


def _answer(obs: observations.Observation) -> str:
    if obs.rcode == observations.NOERROR and not obs.addresses:
        return "NODATA"
    return obs.rcode if obs.rcode in ANSWER_ROWS else "SERVFAIL"


def _spans(points: Sequence[tuple[float, str]], gap: float) -> dict[str, list[tuple[float,
                                                                                      float]]]:
    """Runs of equal values: each ends at the next different sample (or the last one)."""
    out: dict[str, list[tuple[float, float]]] = {}
    start: tuple[float, str] | None = None
    last_t = 0.0
    for t, value in points:
        if start is not None and (value != start[1] or t - last_t > gap):
            end = t if t - last_t <= gap else last_t
            out.setdefault(start[1], []).append((start[0], end))
            start = None
        if start is None:
            start = (t, value)
        last_t = t
    if start is not None:
        out.setdefault(start[1], []).append((start[0], last_t))
    return out


def _span_tracks(run: Run, spans: dict[str, list[tuple[float, float]]], style: str = "",
                 label: str = "") -> list[Track]:
    return [Track(label or row, "spans", tuple(run.rel(s) for s, _ in ss),
                  tuple(run.rel(e) for _, e in ss), row=row, style=style or row)
            for row, ss in spans.items()]


def regional_answers(run: Run) -> Lane:
    probes = sorted((p for p in run.record.probes if p.name == run.regional), key=lambda p: p.t)
    found = _spans([(p.t, _answer(p)) for p in probes], ANSWER_GAP)
    spans = {row: found[row] for row in ANSWER_ROWS if row in found}
    return Lane("answers", f"{short(run.regional, run.record.observed.get('zone', ''))} "
                "answers (prober, via CoreDNS)", "", tuple(_span_tracks(run, spans)),
                rows=ANSWER_ROWS)


def regional_serial(run: Run) -> Lane:
    """The serial the prober read (CoreDNS) and the active marker in the store, as steps."""
    tracks: list[Track] = []
    probes = sorted((p for p in run.record.probes if p.name == run.regional),
                    key=lambda p: p.t)
    if any(p.serial is not None for p in probes):
        # NaN where the TXT answer had no serial: the line breaks instead of holding a value
        # through an NXDOMAIN window.
        tracks.append(Track("via CoreDNS (TXT)", "step", tuple(run.rel(p.t) for p in probes),
                            tuple(math.nan if p.serial is None else float(p.serial)
                                  for p in probes), style="prober"))
    writes = run.store().writes_of(run.regional) if run.record.store else []
    if writes:
        tracks.append(Track("active marker (store)", "step", tuple(run.rel(w.t) for w in writes),
                            tuple(float(w.serial) for w in writes), style="store"))
    return Lane("serial", "regional serial", "plan serial", tuple(tracks),
                note="no serial recorded")


def _writes(run: Run) -> list[tuple[float, int, str]]:
    if run.record.store:
        return [(w.t, w.serial, w.enactor) for w in run.store().writes_of(run.regional)]
    return [(float(t), int(s), str(e)) for t, s, e in
            run.json("lifecycle.json", {}).get("regional_writes", [])]


def enactor_writes(run: Run) -> Lane:
    """Each enactor's marker writes on the regional endpoint, a row per writer; a write that
    moved the serial down (the stale write) is drawn apart."""
    writes = _writes(run)
    regressed = {(r.t, r.to_serial) for r in run.store().regressions
                 if r.name == run.regional} if run.record.store else set()
    writers = sorted({e for _, _, e in writes})
    tracks: list[Track] = []
    for writer in writers:
        mine = [(t, s) for t, s, e in writes if e == writer and (t, s) not in regressed]
        if mine:
            tracks.append(Track(writer, "points", tuple(run.rel(t) for t, _ in mine),
                                tuple(float(s) for _, s in mine), row=writer, style="write"))
        stale = [(t, s) for t, s, e in writes if e == writer and (t, s) in regressed]
        if stale:
            tracks.append(Track("stale write (serial down)", "points",
                                tuple(run.rel(t) for t, _ in stale),
                                tuple(float(s) for _, s in stale), row=writer, style="stale"))
    return Lane("writes", "regional marker writes", "", tuple(tracks), rows=tuple(writers),
                note="no marker write")


def emptiness(run: Run) -> Lane:
    """Each endpoint's empty windows: in the store (any length) and through CoreDNS."""
    obs = run.record.observed
    zone = str(obs.get("zone", ""))
    names = list(obs.get("endpoints") or [])
    tracks: list[Track] = []
    if run.record.store:
        store = run.store()
        end = store.last_t
        spans: dict[str, list[tuple[float, float]]] = {}
        for w in store.windows:
            spans.setdefault(short(w.name, zone), []).append(
                (w.start, w.end if w.end is not None else end))
        tracks += [dataclasses.replace(t, label="empty in the store")
                   for t in _span_tracks(run, spans, style="empty-store")]
    if run.record.probes:
        summary = observations.analyze(run.record.probes)
        spans = {}
        for pw in summary.windows:
            spans.setdefault(short(pw.name, zone), []).append((pw.start, pw.end))
        tracks += [dataclasses.replace(t, label="empty via CoreDNS")
                   for t in _span_tracks(run, spans, style="empty-dns")]
    rows = tuple(short(n, zone) for n in names) or tuple(sorted({t.row or "" for t in tracks}))
    return Lane("empty", "endpoints empty", "", tuple(tracks), rows=rows,
                note="no endpoint empty")


def cleanup(run: Run) -> Lane:
    """Clean-up: plans whose deletion began (the API server) and address records removed
    without a replacement in the same transaction (a finalizer emptying an endpoint)."""
    endpoints = set(run.record.observed.get("endpoints") or [])
    tracks: list[Track] = []
    plans = run.json("lifecycle.json", {}).get("plans", {})
    deleting = sorted(float(p["deleting"]) for p in plans.values() if p.get("deleting"))
    if deleting:
        tracks.append(Track("plan deletion begins", "points", tuple(run.rel(t) for t in deleting),
                            (0.0,) * len(deleting), row="plans deleted", style="delete-plan"))
    removed: dict[str, list[float]] = {}
    for rev in run.record.store:
        if rev.snapshot:
            continue
        puts = {n for op, k, _ in rev.ops if op == "put"
                and (n := _record_name(k)) is not None}
        for op, key, _ in rev.ops:
            name = _record_name(key)
            if op == "del" and name is not None and name not in puts and (
                    not endpoints or name in endpoints):
                row = "records: regional" if name == run.regional else "records: other"
                if not removed.get(row) or removed[row][-1] != rev.t:
                    removed.setdefault(row, []).append(rev.t)
    for row, ts in sorted(removed.items()):
        tracks.append(Track("records removed (store)", "points", tuple(run.rel(t) for t in ts),
                            (0.0,) * len(ts), row=row, style="delete-records"))
    return Lane("cleanup", "clean-up deletions", "",
                tuple(tracks), rows=("plans deleted", "records: regional", "records: other"),
                note="no deletion recorded")


def _record_name(key: str) -> str | None:
    parsed = records.parse_record_key(key)
    if parsed is None or parsed[1].endswith("-txt"):
        return None
    return parsed[0]


def _bins(run: Run) -> dict[int, list[str]]:
    bins: dict[int, list[str]] = {}
    for r in run.record.clients:
        bins.setdefault(int((r.t - run.t_fault) // CLIENT_BIN), []).append(r.outcome)
    return bins


def client_success(run: Run) -> Lane:
    bins = _bins(run)
    keys = sorted(bins)
    share = tuple(sum(o == "ok" for o in bins[k]) / len(bins[k]) for k in keys)
    return Lane("client-ok", "DynamoDB clients: success share", f"per {CLIENT_BIN:g} s",
                (Track("ok / requests", "step", tuple(k * CLIENT_BIN for k in keys), share,
                       style="client-ok"),) if keys else (),
                ylim=(-0.05, 1.05), note="no client request")


def client_dns_errors(run: Run) -> Lane:
    bins = _bins(run)
    keys = sorted(bins)
    errors = tuple(float(sum(o == "dns" for o in bins[k])) for k in keys)
    if not any(errors):
        return Lane("client-dns", "DynamoDB clients: DNS errors", f"per {CLIENT_BIN:g} s", (),
                    note="no DNS error" if keys else "no client request")
    return Lane("client-dns", "DynamoDB clients: DNS errors", f"per {CLIENT_BIN:g} s",
                (Track("DNS errors", "bars", tuple(k * CLIENT_BIN for k in keys), errors,
                       style="client-dns"),), ylim=(0.0, max(errors) * 1.1))


def restarts(run: Run) -> Lane:
    exits = run.json("restarts.json", [])
    rows = tuple(sorted({str(e["component"]) for e in exits}))
    tracks = tuple(
        Track(f"{e['component']} {e.get('how', '')}".strip(), "points",
              (run.rel(float(e["t"])),), (0.0,), row=str(e["component"]), style="restart")
        for e in exits)
    return Lane("restarts", "component restarts", "", tracks, rows=rows,
                note="no component died")


def sampled(key: str, title: str, file: str, field: str, unit: str = "",
            group: str | None = None, skip: tuple[str, ...] = ()) -> LaneSpec:
    """A lane over a JSON-lines file of samples ``{"t": unix, field: value, [group: name]}``,
    one step line per ``group`` value (those in ``skip`` left out: a total beside its
    parts): the shape the cascade's components record."""

    def extract(run: Run) -> Lane:
        series: dict[str, list[tuple[float, float]]] = {}
        with (run.path / file).open() as fh:
            for line in fh:
                try:
                    body = json.loads(line)
                    value = float(body[field])
                except (ValueError, KeyError, TypeError):
                    continue
                name = str(body.get(group, "")) if group else field
                if name in skip:
                    continue
                series.setdefault(name, []).append((float(body["t"]), value))
        tracks = tuple(Track(name, "step", tuple(run.rel(t) for t, _ in pts),
                             tuple(v for _, v in pts)) for name, pts in sorted(series.items()))
        return Lane(key, title, unit, tracks, note=f"no {field} sample")

    return LaneSpec(key, title, (file,), extract)


RACE_LANES: tuple[LaneSpec, ...] = (
    LaneSpec("answers", "regional answers", ("prober.jsonl",), regional_answers),
    LaneSpec("serial", "regional serial", ("prober.jsonl", "store.jsonl"), regional_serial),
    LaneSpec("writes", "marker writes", ("store.jsonl", "lifecycle.json"), enactor_writes),
    LaneSpec("empty", "endpoints empty", ("store.jsonl", "prober.jsonl"), emptiness),
    LaneSpec("cleanup", "clean-up deletions", ("store.jsonl", "lifecycle.json"), cleanup),
    LaneSpec("client-ok", "client success", ("ddb-client.jsonl",), client_success),
    LaneSpec("client-dns", "client DNS errors", ("ddb-client.jsonl",), client_dns_errors),
    LaneSpec("restarts", "restarts", ("restarts.json",), restarts),
)

CASCADE_LANES: tuple[LaneSpec, ...] = (
    sampled("leases", "DWFM leases valid", "dwfm.jsonl", "leases_valid", "droplets"),
    sampled("dwfm-goodput", "DWFM goodput", "dwfm.jsonl", "goodput", "share"),
    sampled("dwfm-queue", "DWFM queue age", "dwfm.jsonl", "queue_age", "s"),
    sampled("launches", "launches and failures", "launcher.jsonl", "count", "per s", "outcome"),
    sampled("network", "Network Manager backlog", "netmanager.jsonl", "backlog", "instances"),
    sampled("capacity", "NLB capacity in DNS per AZ", "nlb.jsonl", "published", "targets", "az",
            skip=("all",)),
)
"""Issue 11's lanes: proposed files and fields, drawn as soon as a run folder has them."""

LANES: tuple[LaneSpec, ...] = RACE_LANES + CASCADE_LANES


def lanes_of(run: Run, specs: Sequence[LaneSpec] = LANES) -> list[Lane]:
    return [spec.extract(run) for spec in specs if spec.applies(run)]


@dataclasses.dataclass(frozen=True)
class Moment:
    t: float
    """Seconds from the stall."""
    text: str
    source: str


def _event_time(stamp: str) -> float:
    return datetime.datetime.fromisoformat(stamp).timestamp()


def narrative(run: Run) -> list[Moment]:
    """What happened, in order: the runner's timeline, the store's and the prober's facts, the
    Kubernetes Events (first of each kind, with how many), component restarts."""
    out: list[Moment] = []
    for entry in run.json("timeline.json", []):
        extra = {k: v for k, v in entry.items() if k not in ("t", "event")}
        detail = ", ".join(f"{k} {v}" for k, v in extra.items() if not isinstance(v, list | dict))
        out.append(Moment(run.rel(float(entry["t"])),
                          entry["event"] + (f" ({detail})" if detail else ""), "runner"))
    if not run.json("timeline.json", []):
        out.append(Moment(0.0, "stall injected on enactor-a", "observed.json"))
    if run.record.store:
        store = run.store()
        for r in store.regressions:
            out.append(Moment(run.rel(r.t), f"{r.enactor} wrote serial {r.to_serial} over "
                              f"{r.from_serial} on {r.name} (stale write)", "store"))
        for w in store.windows:
            end = (f", back at {run.rel(w.end):+.2f} s" if w.end is not None
                   else ", still empty at the end")
            out.append(Moment(run.rel(w.start), f"{w.name} has no address record{end}",
                              "store"))
    definite = observations.analyze(run.record.probes, since=run.t_fault,
                                    failures_are_empty=False)
    for name, s in sorted(definite.endpoints.items()):
        if s.first_empty is not None:
            out.append(Moment(run.rel(s.first_empty), f"{name} first answered NXDOMAIN/NODATA",
                              "prober"))
    kinds: dict[tuple[str, str, str], list[float]] = {}
    for e in run.json("events.json", []):
        if e.get("reason") == "Applied":
            continue
        try:
            t = _event_time(str(e["time"]))
        except (KeyError, ValueError):
            continue
        kinds.setdefault((str(e.get("type")), str(e.get("reason")), str(e.get("source"))),
                         []).append(t)
    for (kind, reason, source), ts in kinds.items():
        count = f" ({len(ts)} in all)" if len(ts) > 1 else ""
        # Events carry whole seconds: one may sort a second before what caused it.
        out.append(Moment(run.rel(min(ts)), f"{kind} event {reason} from {source}{count}",
                          "events, to the second"))
    for e in run.json("restarts.json", []):
        out.append(Moment(run.rel(float(e["t"])), f"{e['component']} died ({e.get('how', '')}),"
                          f" restarted", "restarts"))
    return sorted(out, key=lambda m: (m.t, m.source))
