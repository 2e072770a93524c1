"""How every dnsrace component runs kopf: its own registry, standalone, with its own finalizer.

The enactors must be fully independent, as the three per-AZ enactors were: no kopf peering (which
would let only one of them run), and distinct finalizers and progress annotations, so each
enactor's handlers see and block deletion on their own. This module is the one place that sets
that up; components register handlers on the registry it returns and call ``run``.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import kopf

from dnsrace.components import serving


def registry(kubeconfig: Path | None) -> kopf.OperatorRegistry:
    reg = kopf.OperatorRegistry()

    @kopf.on.login(registry=reg)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        if kubeconfig is None:
            return kopf.login_with_service_account(**kwargs)
        # kopf's kubeconfig login reads the file named by KUBECONFIG, nothing else.
        os.environ["KUBECONFIG"] = str(kubeconfig)
        return kopf.login_with_kubeconfig(**kwargs)

    return reg


def settings(component: str) -> kopf.OperatorSettings:
    cfg = kopf.OperatorSettings()
    cfg.peering.standalone = True
    cfg.persistence.finalizer = f"{component}.dnsrace.io/finalizer"
    cfg.persistence.progress_storage = kopf.AnnotationsProgressStorage(
        prefix=f"{component}.dnsrace.io")
    cfg.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=f"{component}.dnsrace.io", key="last-handled-configuration")
    cfg.posting.level = logging.WARNING
    cfg.watching.server_timeout = 120
    cfg.networking.request_timeout = 30
    # The components are namespaced and their Roles grant no cluster-wide list of namespaces
    # or CRDs; without this kopf warns about the scans it cannot do.
    cfg.scanning.disabled = True
    return cfg


async def run(reg: kopf.OperatorRegistry, component: str, namespace: str,
              stop: asyncio.Event, work: Callable[[asyncio.Event], Coroutine[Any, Any, None]],
              http_port: int) -> None:
    """Run kopf and the component's own work loop side by side until ``stop`` is set or
    either ends, serving /healthz (ready once kopf's watches are up) and /metrics."""
    ready = asyncio.Event()

    def health() -> tuple[bool, str]:
        return (True, "ok") if ready.is_set() else (False, "watch not ready")

    runner = await serving.serve("0.0.0.0", http_port, health) if http_port else None
    try:
        operator = asyncio.create_task(kopf.operator(
            registry=reg, settings=settings(component), standalone=True,
            namespaces=[namespace], stop_flag=stop, ready_flag=ready,
        ))
        worker = asyncio.create_task(work(stop))
        await asyncio.wait({operator, worker}, return_when=asyncio.FIRST_COMPLETED)
        stop.set()
        await asyncio.gather(operator, worker, return_exceptions=True)
    finally:
        if runner is not None:
            await runner.cleanup()
