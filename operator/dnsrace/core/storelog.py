"""The DNS store's own record of a run: every etcd transaction, and what it did to each endpoint.

The prober sees the endpoints through CoreDNS's cache (5 s), so an empty or stale state that lives
less than that is seen about one time in ten. The store recorder (``components.storewatch``)
watches the DNS etcd itself and writes one JSON line per revision to ``store.jsonl``::

    {"t": 1761000000.25, "rev": 812, "ops": [["del", "/skydns/internal/sim/x/p7-0"],
                                             ["put", "/skydns/internal/sim/x/p9-0", "{...}"]]}

The first line is a snapshot of the keys at the revision the watch starts after
(``"snapshot": true``, puts only). Every later line is one transaction's events, in order.

``replay`` folds those lines into the per-endpoint facts a verdict needs: when an endpoint that
had addresses had none (``EmptyWindow``), every active-marker write, and every marker write
that moved the endpoint's serial down (``MarkerRegression``). Pure (stdlib and
``core.records``); ``StoreState`` is incremental, so the runner can follow a run live with the
same code that judges it afterwards.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from dnsrace.core import records

Op = tuple[str, str, str | None]
"""("put", key, value) or ("del", key, None)."""


@dataclasses.dataclass(frozen=True)
class Revision:
    t: float
    rev: int
    ops: tuple[Op, ...]
    snapshot: bool = False

    def to_json(self) -> str:
        ops = [[op, key] if value is None else [op, key, value] for op, key, value in self.ops]
        body: dict[str, Any] = {"t": round(self.t, 4), "rev": self.rev, "ops": ops}
        if self.snapshot:
            body["snapshot"] = True
        return json.dumps(body, separators=(",", ":"))

    @classmethod
    def from_json(cls, line: str) -> Revision:
        body = json.loads(line)
        ops = tuple((str(o[0]), str(o[1]), str(o[2]) if len(o) > 2 else None)
                    for o in body["ops"])
        return cls(t=float(body["t"]), rev=int(body["rev"]), ops=ops,
                   snapshot=bool(body.get("snapshot")))


@dataclasses.dataclass(frozen=True)
class EmptyWindow:
    """An endpoint with address records had none from ``start`` until ``end``."""

    name: str
    start: float
    start_rev: int
    end: float | None
    """None: still empty when the record ended."""
    end_rev: int | None

    def duration(self, until: float) -> float:
        return (self.end if self.end is not None else until) - self.start


@dataclasses.dataclass(frozen=True)
class MarkerWrite:
    name: str
    t: float
    rev: int
    serial: int
    enactor: str


@dataclasses.dataclass(frozen=True)
class MarkerRegression:
    """A marker write that moved an endpoint's active serial down."""

    name: str
    t: float
    rev: int
    from_serial: int
    to_serial: int
    enactor: str


class StoreState:
    """The keys of one lab (its zone's records, its scope's markers), revision by revision."""

    def __init__(self, zone: str, scope: str, names: Iterable[str] | None = None) -> None:
        self.zone = zone.rstrip(".")
        self.scope = scope
        self.names = set(names) if names is not None else None
        """The lab's endpoints; others in the zone (another lab, a benchmark) are ignored."""
        self.addresses: dict[str, set[str]] = {}
        """endpoint -> leaves of its address records."""
        self.serial: dict[str, int] = {}
        self.had_addresses: set[str] = set()
        self.open: dict[str, EmptyWindow] = {}
        self.windows: list[EmptyWindow] = []
        self.writes: list[MarkerWrite] = []
        self.regressions: list[MarkerRegression] = []
        self.last_t = 0.0
        self.last_rev = 0
        self.revisions = 0

    def _in_zone(self, name: str) -> bool:
        if self.names is not None:
            return name in self.names
        return name == self.zone or name.endswith("." + self.zone)

    def apply(self, rev: Revision) -> None:
        touched: set[str] = set()
        for op, key, value in rev.ops:
            rec = records.parse_record_key(key)
            if rec is not None and self._in_zone(rec[0]):
                name, leaf = rec
                touched.add(name)
                leaves = self.addresses.setdefault(name, set())
                if op == "put" and value is not None and records.Record.decode(
                        value.encode()).host:
                    leaves.add(leaf)
                else:
                    leaves.discard(leaf)
                continue
            act = records.parse_active_key(key)
            if (act is None or act[0] != self.scope or op != "put" or value is None
                    or not self._in_zone(act[1])):
                continue
            name = act[1]
            marker = _decode_marker(value)
            before = self.serial.get(name)
            self.serial[name] = marker["serial"]
            if rev.snapshot:
                continue
            self.writes.append(MarkerWrite(name, rev.t, rev.rev, marker["serial"],
                                           marker["enactor"]))
            if before is not None and marker["serial"] < before:
                self.regressions.append(MarkerRegression(
                    name, rev.t, rev.rev, before, marker["serial"], marker["enactor"]))
        # Emptiness is judged after the whole transaction: a change deletes the old records
        # and puts the new ones in one revision, which is never empty to a reader.
        for name in touched:
            has = bool(self.addresses.get(name))
            if has:
                self.had_addresses.add(name)
                window = self.open.pop(name, None)
                if window is not None:
                    self.windows.append(dataclasses.replace(window, end=rev.t, end_rev=rev.rev))
            elif name in self.had_addresses and name not in self.open and not rev.snapshot:
                self.open[name] = EmptyWindow(name, rev.t, rev.rev, None, None)
        self.last_t = max(self.last_t, rev.t)
        self.last_rev = max(self.last_rev, rev.rev)
        self.revisions += 1

    def empty_now(self) -> list[str]:
        return sorted(self.open)

    def summary(self) -> StoreSummary:
        windows = sorted([*self.windows, *self.open.values()], key=lambda w: (w.start, w.name))
        return StoreSummary(windows=tuple(windows), writes=tuple(self.writes),
                            regressions=tuple(self.regressions), revisions=self.revisions,
                            last_t=self.last_t)


def _decode_marker(value: str) -> dict[str, Any]:
    body = json.loads(value)
    return {"serial": int(body["serial"]), "enactor": str(body.get("enactor", ""))}


@dataclasses.dataclass(frozen=True)
class StoreSummary:
    windows: tuple[EmptyWindow, ...]
    writes: tuple[MarkerWrite, ...]
    regressions: tuple[MarkerRegression, ...]
    revisions: int
    last_t: float

    def windows_of(self, name: str) -> list[EmptyWindow]:
        return [w for w in self.windows if w.name == name]

    def emptied(self) -> list[str]:
        return sorted({w.name for w in self.windows})

    def empty_at_end(self) -> list[str]:
        return sorted({w.name for w in self.windows if w.end is None})

    def writes_of(self, name: str) -> list[MarkerWrite]:
        return [w for w in self.writes if w.name == name]


def replay(revisions: Iterable[Revision], zone: str, scope: str,
           names: Iterable[str] | None = None) -> StoreSummary:
    state = StoreState(zone, scope, names)
    for rev in sorted(revisions, key=lambda r: r.rev):
        state.apply(rev)
    return state.summary()


def load(path: Path) -> list[Revision]:
    """Read ``store.jsonl``; a torn last line (a recorder killed mid-write) is skipped."""
    lines = path.read_text(encoding="utf-8").splitlines()
    out: list[Revision] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            out.append(Revision.from_json(line))
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            if number == len(lines):
                break
            raise ValueError(f"{path}:{number}: not a store revision: {exc}") from exc
    return out
