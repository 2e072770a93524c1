"""``dnsrace setup``: build the pinned binaries into the cache, or report that they are there;
``dnsrace setup browser``: install headless Chromium for the report's browser test;
``dnsrace setup prometheus``: install Debian's Prometheus for the lab's own scraping."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from dnsrace import settings as settings_mod
from dnsrace.cli import console
from dnsrace.localplane import binaries, browser, dynamodb, prometheus

STEPS = ("binaries", "browser", "prometheus")


def setup(
    steps: Annotated[list[str] | None, typer.Argument(
        help="binaries (the default: the pinned binaries and DynamoDB Local) and/or browser "
        "(Chromium and chromedriver from Debian, for the report's browser test) and/or "
        "prometheus (Debian's Prometheus server, which the lab runs to scrape its "
        "components)")] = None,
) -> None:
    """Build (or reuse) kube-apiserver, kube-controller-manager, kubectl, etcd and CoreDNS,
    pinned by version, and fetch DynamoDB Local, in the cache folder ($DNSRACE_CACHE_DIR, else
    $XDG_CACHE_HOME/dnsrace); with ``browser``, install headless Chromium if missing; with
    ``prometheus``, install Debian's Prometheus if missing."""
    chosen = steps or ["binaries"]
    unknown = sorted(set(chosen) - set(STEPS))
    if unknown:
        console.fail(f"unknown setup step {', '.join(unknown)}: available: {', '.join(STEPS)}",
                     code=2)
    cfg = settings_mod.Settings.from_env()
    started = time.monotonic()
    found: dict[str, object] = {}
    try:
        if "binaries" in chosen:
            console.progress(f"binaries cache: {cfg.paths.cache_dir}")
            built = binaries.ensure_all(cfg, console.progress)
            built.paths[dynamodb.LAUNCHER] = dynamodb.ensure(cfg, console.progress)
            found.update(built.paths)
        if "browser" in chosen:
            chrome = browser.ensure(console.progress)
            found |= {"chromium": chrome.chromium, "chromedriver": chrome.driver}
        if "prometheus" in chosen:
            found["prometheus"] = prometheus.ensure(console.progress)
    except binaries.SetupError as exc:
        console.fail(str(exc))
    for name, path in sorted(found.items()):
        console.progress(f"  {name:24} {path}")
    console.progress(f"setup done in {time.monotonic() - started:.1f}s")
