"""The single-writer safeguard's lock as a coordination.k8s.io Lease, with renewal.

Used by ``components.enactor`` when ``single-writer`` is on. Acquiring is an optimistic update
(resourceVersion) of one Lease in the lab namespace; a held Lease is renewed every third of its
duration by a background task, which calls the fault hook first, so a ``lease-renewal`` delay
(or a paused process) lets it expire and another enactor take over, as leader election does.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging

from kubernetes_asyncio import client

from dnsrace.core import enacting, heartbeats

log = logging.getLogger(__name__)

NAME = "dnsrace-enactor-writer"


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class KubeWriterLease(enacting.WriterLock):
    def __init__(self, api: client.ApiClient, namespace: str, duration: int = 10,
                 hook: enacting.Hook = enacting.no_fault) -> None:
        self.api = client.CoordinationV1Api(api)
        self.namespace = namespace
        self.duration = duration
        self.hook = hook
        self._renewer: asyncio.Task[None] | None = None

    async def _try(self, holder: str) -> str | None:
        """Set the holder if the Lease is free, ours, or expired; else return its holder."""
        try:
            lease = await self.api.read_namespaced_lease(NAME, self.namespace)
        except client.ApiException as exc:
            if exc.status != 404:
                raise
            body = client.V1Lease(
                metadata=client.V1ObjectMeta(name=NAME),
                spec=client.V1LeaseSpec(holder_identity=holder,
                                        lease_duration_seconds=self.duration,
                                        acquire_time=_now(), renew_time=_now()))
            try:
                await self.api.create_namespaced_lease(self.namespace, body)
                return None
            except client.ApiException as create_exc:
                if create_exc.status == 409:
                    return "another enactor"
                raise
        spec = lease.spec
        current = spec.holder_identity
        expired = (spec.renew_time is None or spec.renew_time + datetime.timedelta(
            seconds=spec.lease_duration_seconds or self.duration) < _now())
        if current not in (None, "", holder) and not expired:
            return str(current)
        if current != holder:
            spec.acquire_time = _now()
        spec.holder_identity = holder
        spec.renew_time = _now()
        spec.lease_duration_seconds = self.duration
        try:
            await self.api.replace_namespaced_lease(NAME, self.namespace, lease)
        except client.ApiException as exc:
            if exc.status == 409:  # someone else changed it first
                return "another enactor"
            raise
        return None

    async def acquire(self, holder: str) -> str | None:
        other = await self._try(holder)
        if other is None and self._renewer is None:
            self._renewer = asyncio.create_task(self._renew(holder))
        return other

    async def _renew(self, holder: str) -> None:
        while True:
            await asyncio.sleep(self.duration / 3)
            await self.hook("lease-renewal", None)
            try:
                other = await self._try(holder)
            except client.ApiException as exc:
                log.warning("lease renewal failed: %s", exc.reason)
                continue
            if other is not None:
                log.warning("%s lost the writer lease to %s", holder, other)
                return

    async def release(self, holder: str) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
            self._renewer = None
        lease = None
        with contextlib.suppress(client.ApiException):
            lease = await self.api.read_namespaced_lease(NAME, self.namespace)
        if lease is not None and lease.spec.holder_identity == holder:
            lease.spec.holder_identity = ""  # free: _try treats an empty holder as none
            with contextlib.suppress(client.ApiException):  # a conflict: someone took it
                await self.api.replace_namespaced_lease(NAME, self.namespace, lease)


class Heartbeat:
    """This enactor's liveness, as a Lease named ``dnsrace-heartbeat-<enactor>`` renewed every
    ``period`` s (``core.heartbeats`` says what the others do when it expires)."""

    PREFIX = "dnsrace-heartbeat-"

    def __init__(self, api: client.ApiClient, namespace: str, holder: str,
                 period: float = 5.0, duration: int = 15) -> None:
        self.api = client.CoordinationV1Api(api)
        self.namespace = namespace
        self.holder = holder
        self.period = period
        self.duration = duration

    async def beat(self) -> None:
        name = self.PREFIX + self.holder
        spec = client.V1LeaseSpec(holder_identity=self.holder, renew_time=_now(),
                                  lease_duration_seconds=self.duration)
        try:
            lease = await self.api.read_namespaced_lease(name, self.namespace)
        except client.ApiException as exc:
            if exc.status != 404:
                raise
            await self.api.create_namespaced_lease(self.namespace, client.V1Lease(
                metadata=client.V1ObjectMeta(name=name), spec=spec))
            return
        lease.spec = spec
        await self.api.replace_namespaced_lease(name, self.namespace, lease)

    async def run(self, stop: asyncio.Event) -> None:
        """Renew until ``stop``; a failed renewal is logged and tried again next period."""
        while not stop.is_set():
            try:
                await self.beat()
            except Exception as exc:  # API unreachable or a conflict: next period
                log.warning("heartbeat of %s not renewed: %r", self.holder, exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.period)

    async def read(self, enactor: str) -> heartbeats.Heartbeat | None:
        """``enactor``'s last heartbeat; None when it never had one."""
        try:
            lease = await self.api.read_namespaced_lease(self.PREFIX + enactor, self.namespace)
        except client.ApiException as exc:
            if exc.status == 404:
                return None
            raise
        renewed: datetime.datetime | None = getattr(lease.spec, "renew_time", None)
        return heartbeats.Heartbeat(renewed=renewed.timestamp() if renewed else 0.0,
                                    duration=float(lease.spec.lease_duration_seconds or 0))
