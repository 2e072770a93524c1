"""The cascade runners' clock: advance the core every ``tick`` s, write a figures line every
``record_every`` s, until stopped; one last line on the way out.

Who calls it: ``components.dwfm``, ``launcher`` and ``netmanager`` (their ``Runner.loop``). Why
one loop: each advance is timed from its start, so a slow advance shortens the wait instead of
adding to it, and the figures keep their period however long an advance took. ``into`` opens
the figures file around that loop, as each of them did.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import IO


async def tick_loop(stop: asyncio.Event, *, tick: float, record_every: float,
                    advance: Callable[[], Awaitable[object]],
                    sample: Callable[[], Awaitable[object]],
                    ticked: Callable[[float], None], first_sample_in: float = 0.0) -> None:
    """``advance`` every ``tick`` s (``ticked`` gets the monotonic time after each, for
    /healthz), ``sample`` every ``record_every`` s from ``first_sample_in`` s on, and once more
    after ``stop``."""
    next_sample = time.monotonic() + first_sample_in
    while not stop.is_set():
        started = time.monotonic()
        await advance()
        now = time.monotonic()
        ticked(now)
        if now >= next_sample:
            await sample()
            next_sample = max(next_sample + record_every, time.monotonic())
        delay = tick - (time.monotonic() - started)
        if delay > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
    await sample()  # the last figures, on the way out


async def into(out: Path | None, loop: Callable[[IO[str] | None], Awaitable[None]]) -> None:
    """``loop`` with its figures file ``out`` open for appending (its folder made first), or
    with None when there is none; the file is closed however ``loop`` ends."""
    if out is None:
        await loop(None)
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a") as fh:
        await loop(fh)
