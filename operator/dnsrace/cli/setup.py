"""``dnsrace setup``: build the pinned binaries into the cache, or report that they are there."""

from __future__ import annotations

import time

from dnsrace import settings as settings_mod
from dnsrace.cli import console
from dnsrace.localplane import binaries, dynamodb


def setup() -> None:
    """Build (or reuse) kube-apiserver, kube-controller-manager, kubectl, etcd and CoreDNS,
    pinned by version, and fetch DynamoDB Local, in the cache folder ($DNSRACE_CACHE_DIR, else
    $XDG_CACHE_HOME/dnsrace)."""
    cfg = settings_mod.Settings.from_env()
    started = time.monotonic()
    console.progress(f"binaries cache: {cfg.paths.cache_dir}")
    try:
        found = binaries.ensure_all(cfg, console.progress)
        found.paths[dynamodb.LAUNCHER] = dynamodb.ensure(cfg, console.progress)
    except binaries.SetupError as exc:
        console.fail(str(exc))
    for name, path in sorted(found.paths.items()):
        console.progress(f"  {name:24} {path}")
    console.progress(f"setup done in {time.monotonic() - started:.1f}s")
