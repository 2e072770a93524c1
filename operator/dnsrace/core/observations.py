"""The DNS prober's record format and its analysis: empty windows and stale regressions.

The prober (``components.prober``) writes one JSON line per endpoint per round::

    {"t": 1761000000.25, "name": "dynamodb.us-east-1.sim.internal", "rcode": "NOERROR",
     "addresses": ["127.0.10.1", "127.0.10.2"], "serial": 42}

``rcode`` is the A query's rcode (``NOERROR``, ``NXDOMAIN``, ``SERVFAIL``; ``TIMEOUT`` when no
answer came back), ``addresses`` the sorted A answer, and ``serial`` the plan serial from the
endpoint's ``serial=<n>`` TXT record (``core.plans.Endpoint.records`` writes one per endpoint),
or null when the TXT query gave none.

Scenarios, e2e tests and reports call ``load`` and ``analyze`` on that file: it is the ground
truth for "the endpoint resolved to nothing from t1 to t2" and "the endpoint went back to an
older plan", measured from the outside as a DNS client sees it, not from the enactors' own
account. This module is pure (stdlib only) so the analysis is unit-tested on hand-built
sequences.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, TextIO

NOERROR = "NOERROR"
NXDOMAIN = "NXDOMAIN"
SERVFAIL = "SERVFAIL"
TIMEOUT = "TIMEOUT"
"""No answer within the query timeout (or the server could not be reached at all)."""

_SERIAL_TXT = re.compile(r"^serial=(\d+)$")


def parse_serial(texts: Iterable[str]) -> int | None:
    """The plan serial carried by an endpoint's TXT strings, or None when there is none.

    Two plans' records can be visible at once only while the store is inconsistent; the
    highest serial is reported then, so a regression means no newer plan is visible at all.
    """
    serials = [int(m.group(1)) for text in texts if (m := _SERIAL_TXT.match(text.strip()))]
    return max(serials) if serials else None


@dataclasses.dataclass(frozen=True)
class Observation:
    """One probe of one endpoint: what a DNS client resolving it saw at time ``t``."""

    t: float
    """Unix time the query was sent."""
    name: str
    rcode: str
    addresses: tuple[str, ...] = ()
    """Sorted addresses of the answer."""
    serial: int | None = None

    @property
    def has_addresses(self) -> bool:
        return self.rcode == NOERROR and bool(self.addresses)

    def to_dict(self) -> dict[str, Any]:
        return {"t": self.t, "name": self.name, "rcode": self.rcode,
                "addresses": sorted(self.addresses), "serial": self.serial}

    def to_json(self) -> str:
        """One line of the prober's file (no trailing newline)."""
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_dict(cls, body: Mapping[str, Any]) -> Observation:
        serial = body.get("serial")
        return cls(
            t=float(body["t"]),
            name=str(body["name"]),
            rcode=str(body["rcode"]),
            addresses=tuple(sorted(str(a) for a in body.get("addresses") or ())),
            serial=None if serial is None else int(serial),
        )

    @classmethod
    def from_json(cls, line: str) -> Observation:
        return cls.from_dict(json.loads(line))


def dump(observations: Iterable[Observation], out: Path | TextIO) -> int:
    """Write observations as JSON lines (appending to a path); returns how many were written."""
    if isinstance(out, Path):
        with out.open("a", encoding="utf-8") as fh:
            return dump(observations, fh)
    count = 0
    for obs in observations:
        out.write(obs.to_json() + "\n")
        count += 1
    return count


def load(path: Path) -> list[Observation]:
    """Read a prober file.

    A prober killed mid-write can leave a torn last line; that one line is skipped. A bad line
    anywhere else means the file is not a prober file, and raises ValueError naming the line.
    """
    lines = path.read_text(encoding="utf-8").splitlines()
    out: list[Observation] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            out.append(Observation.from_json(line))
        except (ValueError, KeyError, TypeError) as exc:
            if number == len(lines):
                break
            raise ValueError(f"{path}:{number}: not an observation: {exc}") from exc
    return out


@dataclasses.dataclass(frozen=True)
class EmptyWindow:
    """A maximal run of consecutive empty answers for one endpoint."""

    name: str
    start: float
    """Time of the first empty answer."""
    end: float
    """Time of the first answer with addresses after the run (``closed``), or of the last
    empty answer when the endpoint was still empty when the record ended (a lower bound)."""
    count: int
    """Empty answers in the run."""
    rcodes: tuple[str, ...]
    """Distinct rcodes seen in the run, sorted (``NOERROR`` there means NODATA)."""
    closed: bool

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclasses.dataclass(frozen=True)
class Regression:
    """The endpoint answered with an older plan than one it had already answered with."""

    name: str
    t: float
    from_serial: int
    """The highest serial seen for the endpoint before."""
    to_serial: int


@dataclasses.dataclass(frozen=True)
class EndpointSummary:
    name: str
    answers: int
    """Probes analysed (every rcode, TIMEOUT included)."""
    with_addresses: int
    empty: int
    """Empty answers: no addresses after the endpoint had answered with addresses before."""
    rcodes: dict[str, int]
    first_t: float | None
    last_t: float | None
    first_empty: float | None
    windows: tuple[EmptyWindow, ...]
    empty_at_end: bool
    stale_answers: int
    """Answers whose serial was lower than the highest seen before (every one of them)."""
    regressions: tuple[Regression, ...]
    """Moves down to a stale serial (a run of equal stale answers counts once)."""
    last_serial: int | None
    max_serial: int | None

    @property
    def longest(self) -> EmptyWindow | None:
        return max(self.windows, key=lambda w: w.duration, default=None)

    @property
    def regression_pairs(self) -> list[tuple[int, int]]:
        return [(r.from_serial, r.to_serial) for r in self.regressions]


@dataclasses.dataclass(frozen=True)
class Summary:
    endpoints: dict[str, EndpointSummary]

    @property
    def answers(self) -> int:
        return sum(e.answers for e in self.endpoints.values())

    @property
    def empty(self) -> int:
        return sum(e.empty for e in self.endpoints.values())

    @property
    def first_empty(self) -> float | None:
        return min((e.first_empty for e in self.endpoints.values()
                    if e.first_empty is not None), default=None)

    @property
    def windows(self) -> list[EmptyWindow]:
        """Every endpoint's empty windows, by start time."""
        return sorted((w for e in self.endpoints.values() for w in e.windows),
                      key=lambda w: (w.start, w.name))

    @property
    def longest(self) -> EmptyWindow | None:
        return max(self.windows, key=lambda w: w.duration, default=None)

    @property
    def empty_at_end(self) -> list[str]:
        return sorted(name for name, e in self.endpoints.items() if e.empty_at_end)

    @property
    def regressions(self) -> list[Regression]:
        return sorted((r for e in self.endpoints.values() for r in e.regressions),
                      key=lambda r: (r.t, r.name))

    @property
    def stale_answers(self) -> int:
        return sum(e.stale_answers for e in self.endpoints.values())

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view for scenario reports."""
        longest = self.longest
        return {
            "answers": self.answers,
            "empty": self.empty,
            "first_empty": self.first_empty,
            "longest_window": dataclasses.asdict(longest) | {"duration": longest.duration}
            if longest else None,
            "empty_at_end": self.empty_at_end,
            "stale_answers": self.stale_answers,
            "regressions": [dataclasses.asdict(r) for r in self.regressions],
            "endpoints": {
                name: dataclasses.asdict(e) | {
                    "windows": [dataclasses.asdict(w) | {"duration": w.duration}
                                for w in e.windows]}
                for name, e in sorted(self.endpoints.items())
            },
        }


class _EndpointState:
    """Running state of one endpoint while ``analyze`` walks its observations in time order."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.answered = False
        self.max_serial: int | None = None
        self.last_serial: int | None = None
        self.counting = False
        self.answers = 0
        self.with_addresses = 0
        self.empty = 0
        self.rcodes: dict[str, int] = {}
        self.first_t: float | None = None
        self.last_t: float | None = None
        self.first_empty: float | None = None
        self.windows: list[EmptyWindow] = []
        self.run: list[Observation] = []
        self.stale_answers = 0
        self.regressions: list[Regression] = []

    def feed(self, obs: Observation, count: bool, failures_are_empty: bool = True) -> None:
        """Account ``obs``; before ``since`` (``count`` False) only the baseline moves."""
        if not failures_are_empty and obs.rcode in (SERVFAIL, TIMEOUT):
            # The data plane failed to answer: no evidence either way about the record.
            if count:
                self.answers += 1
                self.rcodes[obs.rcode] = self.rcodes.get(obs.rcode, 0) + 1
            return
        is_empty = self.answered and not obs.has_addresses
        if count:
            self.answers += 1
            self.rcodes[obs.rcode] = self.rcodes.get(obs.rcode, 0) + 1
            self.first_t = obs.t if self.first_t is None else self.first_t
            self.last_t = obs.t
            if obs.has_addresses:
                self.with_addresses += 1
            if is_empty:
                self.empty += 1
                self.first_empty = obs.t if self.first_empty is None else self.first_empty
                self.run.append(obs)
            elif obs.has_addresses and self.run:
                self._close_run(end=obs.t, closed=True)
            self._serial(obs)
        else:
            self.max_serial = _max(self.max_serial, obs.serial)
            self.last_serial = obs.serial if obs.serial is not None else self.last_serial
        self.answered = self.answered or obs.has_addresses

    def _serial(self, obs: Observation) -> None:
        if obs.serial is None:
            # The TXT query failed or found nothing; that says nothing about which plan answers.
            return
        if self.max_serial is not None and obs.serial < self.max_serial:
            self.stale_answers += 1
            # One stale plan answering round after round is one regression, not one per round.
            if obs.serial != self.last_serial:
                self.regressions.append(Regression(self.name, obs.t, self.max_serial, obs.serial))
        self.max_serial = _max(self.max_serial, obs.serial)
        self.last_serial = obs.serial

    def _close_run(self, end: float, closed: bool) -> None:
        self.windows.append(EmptyWindow(
            name=self.name, start=self.run[0].t, end=end, count=len(self.run),
            rcodes=tuple(sorted({o.rcode for o in self.run})), closed=closed,
        ))
        self.run = []

    def summary(self) -> EndpointSummary:
        empty_at_end = bool(self.run)
        if self.run:
            self._close_run(end=self.run[-1].t, closed=False)
        return EndpointSummary(
            name=self.name, answers=self.answers, with_addresses=self.with_addresses,
            empty=self.empty, rcodes=dict(sorted(self.rcodes.items())),
            first_t=self.first_t, last_t=self.last_t, first_empty=self.first_empty,
            windows=tuple(self.windows), empty_at_end=empty_at_end,
            stale_answers=self.stale_answers, regressions=tuple(self.regressions),
            last_serial=self.last_serial, max_serial=self.max_serial,
        )


def _max(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    return a if b is None else max(a, b)


def analyze(observations: Iterable[Observation], since: float | None = None,
            failures_are_empty: bool = True) -> Summary:
    """Per-endpoint and overall empty windows and stale regressions of a prober record.

    With ``failures_are_empty`` False, SERVFAIL and TIMEOUT answers are counted as answers but
    are neither empty nor addressed: windows then hold only NXDOMAIN and NODATA, the answers
    that say the record itself is gone.

    Observations are taken in time order per endpoint (a stable sort, so equal times keep file
    order). With ``since``, earlier observations are not counted but still set the baseline:
    whether the endpoint had answered with addresses (so a later empty answer counts) and the
    highest serial seen (so a later older serial is a regression). An empty run already under
    way at ``since`` is counted from its first observation at or after ``since``.
    """
    states: dict[str, _EndpointState] = {}
    for obs in sorted(observations, key=lambda o: o.t):
        state = states.get(obs.name)
        if state is None:
            state = states[obs.name] = _EndpointState(obs.name)
        state.feed(obs, count=since is None or obs.t >= since,
                   failures_are_empty=failures_are_empty)
    return Summary(endpoints={name: s.summary() for name, s in sorted(states.items())})


def by_endpoint(observations: Iterable[Observation]) -> Iterator[tuple[str, list[Observation]]]:
    """Observations grouped per endpoint name, each group in time order (for plots)."""
    groups: dict[str, list[Observation]] = {}
    for obs in sorted(observations, key=lambda o: o.t):
        groups.setdefault(obs.name, []).append(obs)
    yield from sorted(groups.items())
