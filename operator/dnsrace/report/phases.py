"""The incident's published phases (DESIGN.md section 2, from AWS's post-event summary), as data.

Who calls it: ``report.draw`` (the phases panel beside the lab's timeline) and ``report.render``
(the table under it). Why a separate scale: the lab's race lasts seconds, the incident lasted
fourteen hours; they are drawn side by side, never on one axis.

Times are Pacific Daylight Time. The race began at 11:48 PM on 2025-10-19; everything after
midnight is on 2025-10-20.
"""

from __future__ import annotations

import dataclasses
import datetime

PDT = datetime.timezone(datetime.timedelta(hours=-7), "PDT")


def _at(day: int, hour: int, minute: int) -> datetime.datetime:
    return datetime.datetime(2025, 10, day, hour, minute, tzinfo=PDT)


START = _at(19, 23, 48)


@dataclasses.dataclass(frozen=True)
class Phase:
    name: str
    start: datetime.datetime
    end: datetime.datetime
    mechanism: str
    about_start: bool = False
    """The summary says "~" for the start."""
    about_end: bool = False
    """The summary says "~" for the end."""

    def span(self) -> str:
        """``11:48 PM to ~2:24 AM``, as the summary gives it."""
        start = ("~" if self.about_start else "") + clock(hours(self.start))
        return f"{start} to {'~' if self.about_end else ''}{clock(hours(self.end))}"


@dataclasses.dataclass(frozen=True)
class Milestone:
    at: datetime.datetime
    text: str


PHASES: tuple[Phase, ...] = (
    Phase("DynamoDB endpoint resolves to nothing", START, _at(20, 2, 25),
          "the DNS Planner/Enactor race (records restored 2:25 AM, caches expired 2:40 AM)"),
    Phase("DWFM leases expire", START, _at(20, 2, 24),
          "DWFM's state checks go through DynamoDB; droplets without a lease take no launch",
          about_end=True),
    Phase("DWFM congestive collapse", _at(20, 2, 25), _at(20, 5, 28),
          "re-establishing every lease took longer than the lease timeout; work re-queued"),
    Phase("Network Manager backlog", _at(20, 5, 28), _at(20, 10, 36),
          "network state for the burst of new instances queued; instances without connectivity",
          about_start=True),
    Phase("NLB health-check flapping, AZ failover", _at(20, 5, 30), _at(20, 14, 9),
          "checks ran before network state propagated; automatic AZ failover removed capacity"),
)

MILESTONES: tuple[Milestone, ...] = (
    Milestone(_at(20, 2, 40), "DNS caches expired"),
    Milestone(_at(20, 4, 14), "DWFM throttled, hosts restarted"),
    Milestone(_at(20, 6, 21), "Network Manager latency rises"),
    Milestone(_at(20, 9, 36), "automatic AZ failover disabled"),
    Milestone(_at(20, 13, 50), "EC2 fully recovered"),
    Milestone(_at(20, 14, 20), "event ends"),
)


def hours(at: datetime.datetime) -> float:
    """Hours since the race began (11:48 PM PDT): the phases panel's axis."""
    return (at - START).total_seconds() / 3600


def clock(hours_since_start: float) -> str:
    """The time of day (PDT) ``hours_since_start`` after 11:48 PM, as the summary writes it."""
    at = START + datetime.timedelta(hours=hours_since_start)
    return at.strftime("%I:%M %p").lstrip("0")
