"""Telling an outage of the API server or the DNS etcd from a bug.

A component whose call fails because the API server or the DNS etcd is restarting logs one line
and retries with back-off; anything else is a bug and gets its traceback. The scenario lab waits
out the same errors (``scenarios.lab.Lab.call``).
"""

from __future__ import annotations

import aiohttp
from aetcd import exceptions as aetcd_exceptions
from kubernetes_asyncio import client

ERRORS: tuple[type[BaseException], ...] = (
    client.ApiException, aiohttp.ClientError, OSError, TimeoutError,
    aetcd_exceptions.ClientError)


def describe(exc: BaseException) -> str | None:
    """A one-line description when ``exc`` means "unreachable, try again"; None otherwise."""
    if isinstance(exc, client.ApiException):
        if exc.status is not None and exc.status < 500 and exc.status != 429:
            return None
        return f"API server answered {exc.status} {exc.reason}"
    if isinstance(exc, aetcd_exceptions.ClientError):
        return f"DNS etcd unreachable ({type(exc).__name__})"
    if isinstance(exc, ERRORS):
        return f"unreachable ({type(exc).__name__}: {exc})"
    return None


class Backoff:
    """Doubling delays from ``base`` to ``cap``; ``reset`` after a success."""

    def __init__(self, base: float = 0.5, cap: float = 5.0) -> None:
        self.base, self.cap, self.delay = base, cap, base

    def next(self) -> float:
        delay, self.delay = self.delay, min(self.cap, self.delay * 2)
        return delay

    def reset(self) -> None:
        self.delay = self.base
