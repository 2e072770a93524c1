"""How the NLB waits out its two dependencies, the API server and the DNS etcd.

Who calls it: ``components.nlbctl`` (the Instance watch) and ``nlbrecord`` (the record
writer). Why apart: both loops keep going through an
outage with the same back-off and the same two log lines, one when the dependency goes away
and one when it is back; health checks and publication go on meanwhile.
"""

from __future__ import annotations

import logging
import time

from dnsrace.components import outages

# The NLB's lines keep the name they always had: operators filter its log on it.
log = logging.getLogger("dnsrace.components.nlbctl")


class Outage:
    """One log line when a dependency becomes unreachable, one when it is back."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.since: float | None = None
        self.failures = 0
        self.backoff = outages.Backoff()

    def failed(self, exc: BaseException, doing: str) -> float:
        """Log (the first failure of a streak only, unless it is a bug) and return the delay
        before the next attempt."""
        self.failures += 1
        description = outages.describe(exc)
        delay = self.backoff.next()
        if description is None:
            log.error("%s: %s failed; retrying in %.1f s", self.what, doing, delay,
                      exc_info=exc)
        elif self.since is None:
            log.warning("%s: %s failed, %s; retrying with back-off (checks go on)",
                        self.what, doing, description)
        if self.since is None:
            self.since = time.monotonic()
        return delay

    def ok(self) -> None:
        if self.since is not None:
            log.info("%s reachable again after %.1f s (%d attempts failed)", self.what,
                     time.monotonic() - self.since, self.failures)
        self.since = None
        self.failures = 0
        self.backoff.reset()

