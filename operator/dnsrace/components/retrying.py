"""Riding out a peer's outage: one log line when it goes away and one when it is back, and the
queue of writes that waits it out in order.

Who calls it: the launcher (DWFM's ``/leases``, the Network Manager's ``/admit``, the API server
for its Instances: ``components.launchleases``, ``launchwriter``, ``launcher``) and the Network
Manager (its status patches, ``components.netmanager``); ``pause`` also the Instance watch
(``components.instancewatch``). Why one module: each of them noted the start and the end of an
outage, and drained a queue in order between back-offs, with its own copy of the same few
lines; the log lines stay each caller's own (its logger, its words).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sized
from typing import Any

DOWN = "{what} unreachable ({why})"
BACK = "{what} reachable again after {seconds:.1f} s ({failures} calls failed)"


class Reachability:
    """A streak of failed calls to one peer: one warning when it starts and one info line when
    a call succeeds again; no traceback. ``down`` and ``back`` are ``str.format`` templates over
    ``what``, ``why`` (the streak's first failure), ``seconds``, ``failures`` and whatever the
    call passes."""

    def __init__(self, what: str, log: logging.Logger, *, down: str = DOWN,
                 back: str = BACK) -> None:
        self.what = what
        self.log = log
        self.down_template = down
        self.back_template = back
        self.down_since: float | None = None
        self.why = ""
        self.failures = 0

    def failed(self, why: str, **extra: Any) -> None:
        self.failures += 1
        if self.down_since is None:
            self.down_since = time.monotonic()
            self.why = why
            self.log.warning(self.down_template.format(what=self.what, why=why, **extra))

    def ok(self, **extra: Any) -> None:
        if self.down_since is not None:
            self.log.info(self.back_template.format(
                what=self.what, why=self.why, seconds=time.monotonic() - self.down_since,
                failures=self.failures, **extra))
        self.down_since = None
        self.failures = 0

    @property
    def down(self) -> bool:
        return self.down_since is not None


async def pause(stop: asyncio.Event, seconds: float) -> None:
    """Wait ``seconds``, or less when ``stop`` is set meanwhile."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


async def write_in_order(stop: asyncio.Event, queue: Sized, wake: asyncio.Event,
                         step: Callable[[], Awaitable[float | None]]) -> None:
    """Until ``stop``: ``step`` writes the head of ``queue`` and returns None, or the seconds to
    wait before trying again (an outage: the head stays first in line). An empty queue waits
    for ``wake`` (set by whoever appends), and looks again every second anyway."""
    while not stop.is_set():
        if not queue:
            wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), 1.0)
            continue
        wait = await step()
        if wait is not None:
            await pause(stop, wait)
