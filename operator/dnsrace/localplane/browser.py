"""Headless Chromium and its WebDriver, from Debian's packages, for the report's browser test.

Who calls it: ``dnsrace setup browser`` (the Makefile's ``setup-browser``, which ``make test``
runs) and ``tests/integration/test_report_browser.py`` (``locate``). Why Debian's packages:
``chromium`` and ``chromium-driver`` come from one source package, so the driver always speaks
the browser's version, and nothing downloads a browser build of its own at test time (which
this project's machines cannot do). Fast when present: two ``which`` look-ups.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

from dnsrace.localplane import apt
from dnsrace.localplane.binaries import Report, SetupError

PACKAGE = "chromium-driver"
"""Depends on ``chromium``, so one install brings both."""


@dataclasses.dataclass(frozen=True)
class Browser:
    chromium: Path
    driver: Path


def locate() -> Browser | None:
    """Chromium and chromedriver on PATH, or None when either is missing."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if chromium is None or driver is None:
        return None
    return Browser(Path(chromium), Path(driver))


def ensure(report: Report) -> Browser:
    found = locate()
    if found is None:
        apt.install(PACKAGE, "the report's browser test", report)
        found = locate()
    if found is None:
        raise SetupError(f"chromium or chromedriver is still not on PATH after installing "
                         f"{PACKAGE}")
    return found
