"""How every dnsrace component runs kopf: its own registry, standalone, event handlers only.

The enactors must be fully independent, as the three per-AZ enactors were: no kopf peering (which
would let only one of them run), and distinct finalizers (managed by the enactors themselves)
and progress annotations, so each enactor sees and blocks deletion on its own. This module is
the one place that sets that up; components register handlers on the registry it returns and
call ``run``.
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


class NoDiffBase(kopf.DiffBaseStorage):
    """No diff base: dnsrace registers only event handlers, which need none.

    kopf builds an object's "essence" on every event (a deep copy of the whole object) to
    detect changes for create/update/delete/resume handlers. dnsrace has none of those, and on
    100-endpoint plans that copy was a tenth of an enactor's CPU (docs/benchmarks.md). A
    component that adds such handlers must use ``kopf.AnnotationsDiffBaseStorage`` again.
    """

    def build(self, *, body: Any, extra_fields: Any = None) -> Any:
        return {}

    def fetch(self, *, body: Any) -> Any:
        return None

    def store(self, *, body: Any, patch: Any, essence: Any) -> None:
        return None


def settings(component: str) -> kopf.OperatorSettings:
    cfg = kopf.OperatorSettings()
    cfg.peering.standalone = True
    # kopf adds a finalizer of this name only for deletion handlers, which dnsrace does not
    # register; the enactors manage their own finalizers (components.enactor), whose names
    # must differ from this one, or kopf would strip them as its own leftovers.
    cfg.persistence.finalizer = f"kopf.dnsrace.io/{component}"
    cfg.persistence.progress_storage = kopf.AnnotationsProgressStorage(
        prefix=f"{component}.dnsrace.io")
    cfg.persistence.diffbase_storage = NoDiffBase()
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
