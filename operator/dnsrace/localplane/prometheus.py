"""The lab's own Prometheus server: Debian's ``prometheus`` package, run as a local process.

Who calls it: ``dnsrace setup prometheus`` (the Makefile's ``setup-prometheus``, which ``make
test`` runs: ``ensure``), the scenario lab (``start`` / ``Handle.stop``) and the tests (``start``
and the query helpers ``Handle.query``, ``Handle.metric_names``, ``Handle.targets``).

Why Debian's package rather than a build: it is pinned by the Debian release (bookworm:
2.42.0+ds), built and patched by Debian from source with the Go toolchain of the release,
installed by the same apt step the setup already uses for Java, Maven and Chromium, and brings
``promtool`` (``promtool check config``) with it; see docs/dependencies.md.

The package's own service (systemd unit or init script, on :9090 with /etc/prometheus) plays no
part: the lab runs its own process with its own config (``core.scrape.render``), its own storage
in a fresh folder under the run folder, on ``127.0.0.1:19090`` (not 9090), started and stopped
here through ``processes.Processes`` like every other lab process (pid file, log file).
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import aiohttp

from dnsrace import settings as settings_mod
from dnsrace.core import scrape
from dnsrace.localplane import apt, processes
from dnsrace.localplane.binaries import Report, SetupError

PACKAGE = "prometheus"
BINARY = "prometheus"
FALLBACK = Path("/usr/bin/prometheus")
"""Where Debian's package puts the binary (used when PATH lacks /usr/bin)."""
PORT = 19090
"""The lab Prometheus's port: clear of the package service's 9090 and of the lab's ports."""
NAME = "prometheus"
"""Its name in ``Processes`` (pid file ``pids/prometheus.json``, log ``logs/prometheus.log``)."""
START_TIMEOUT = 30.0
"""Seconds Prometheus gets to answer ``/-/ready`` (it replays an empty WAL: about a second)."""


def locate() -> Path | None:
    """The ``prometheus`` binary (PATH, else /usr/bin/prometheus), or None."""
    found = shutil.which(BINARY)
    if found is not None:
        return Path(found)
    return FALLBACK if FALLBACK.is_file() else None


def version(binary: Path) -> str:
    """``2.42.0+ds`` from ``prometheus --version``; SetupError when it does not run."""
    proc = subprocess.run([str(binary), "--version"], capture_output=True, text=True,
                          timeout=30, check=False)
    m = re.search(r"prometheus, version (\S+)", proc.stdout + proc.stderr)
    if proc.returncode != 0 or m is None:
        raise SetupError(f"{binary} --version failed:\n{(proc.stdout + proc.stderr).strip()}")
    return m.group(1)


def ensure(report: Report) -> Path:
    """The binary, installing Debian's package when it is missing; fast when present (one
    PATH look-up)."""
    found = locate()
    if found is None:
        apt.install(PACKAGE, "the lab's Prometheus", report)
        found = locate()
    if found is None:
        raise SetupError(f"prometheus is still not on PATH after installing {PACKAGE}")
    return found


def require() -> Path:
    """The binary, or SetupError naming the command that installs it."""
    found = locate()
    if found is None:
        raise SetupError("prometheus is not installed: run `make setup-prometheus` "
                         "(`dnsrace setup prometheus`)")
    return found


class QueryError(RuntimeError):
    """The HTTP API answered with an error (a bad expression, a server not ready)."""


@dataclasses.dataclass
class Handle:
    """A running lab Prometheus, started by ``start``."""

    url: str
    config: Path
    storage: Path
    log_path: Path
    procs: processes.Processes
    started_in: float
    """Seconds from launch to the first ``/-/ready`` that answered 200."""

    async def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (Prometheus flushes its head block), SIGKILL after ``timeout``; safe to
        call twice. The storage folder is kept: it is part of the run."""
        await asyncio.to_thread(self.procs.stop, NAME, timeout)

    def alive(self) -> bool:
        managed = self.procs.get(NAME)
        return managed is not None and managed.alive()

    async def api(self, path: str, params: dict[str, str] | None = None,
                  timeout: float = 5.0) -> Any:
        """``data`` of an HTTP API answer (``/api/v1/...``); QueryError when it says error."""
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as s, \
                    s.get(self.url + path, params=params) as resp:
                body = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise QueryError(f"{self.url}{path}: {exc!r}") from exc
        if not isinstance(body, dict) or body.get("status") != "success":
            raise QueryError(f"{self.url}{path} {params or ''}: {body}")
        return body.get("data")

    async def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query (``/api/v1/query``): the vector's samples, each
        ``{"metric": {labels}, "value": [t, "v"]}``."""
        data = await self.api("/api/v1/query", {"query": expr})
        result: list[dict[str, Any]] = data["result"]
        return result

    async def metric_names(self, match: str | None = None) -> set[str]:
        """Every series name Prometheus holds (``/api/v1/label/__name__/values``), optionally
        only those of series matching ``match`` (``{job="enactor"}``)."""
        params = {"match[]": match} if match else None
        names: list[str] = await self.api("/api/v1/label/__name__/values", params)
        return set(names)

    async def targets(self) -> list[dict[str, Any]]:
        """The active targets with their ``health`` (up, down, unknown) and ``lastError``."""
        data = await self.api("/api/v1/targets", {"state": "active"})
        active: list[dict[str, Any]] = data["activeTargets"]
        return active

    async def wait_scraped(self, timeout: float = 30.0, jobs: Iterable[str] | None = None
                           ) -> list[dict[str, Any]]:
        """Wait until every target (of ``jobs``, when given) has been scraped once and is up;
        returns ``up`` per target. On timeout, QueryError listing the ones not up and why."""
        wanted = set(jobs) if jobs is not None else None
        deadline = time.monotonic() + timeout
        last: list[dict[str, Any]] = []
        while True:
            with_jobs = await self.targets()
            last = [t for t in with_jobs
                    if wanted is None or t["labels"].get("job") in wanted]
            if last and all(t["health"] == "up" for t in last):
                return await self.query("up")
            if time.monotonic() > deadline:
                down = [f"{t['labels'].get('job')}/{t['labels'].get('instance')}: "
                        f"{t['health']} {t.get('lastError', '')}".strip() for t in last
                        if t["health"] != "up"]
                raise QueryError(f"targets not up within {timeout:.0f}s: "
                                 f"{down or 'none configured'}")
            await asyncio.sleep(0.25)


async def ready(url: str, timeout: float = 1.0) -> bool:
    """True when a Prometheus at ``url`` answers ``/-/ready`` with 200."""
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as s, \
                s.get(url + "/-/ready") as resp:
            await resp.read()
            return resp.status == 200
    except (aiohttp.ClientError, TimeoutError):
        return False


async def start(cfg: settings_mod.Settings, run_dir: Path, targets: Iterable[scrape.Target], *,
                port: int = PORT, interval: float = scrape.SCRAPE_INTERVAL,
                lab: str = "dnsrace", timeout: float = START_TIMEOUT) -> Handle:
    """Write ``run_dir/prometheus.yml`` for ``targets``, start Prometheus on
    ``<cfg.local.host>:port`` with its storage in a fresh ``run_dir/prometheus-*`` folder, and
    wait until it is ready. ``lab`` is the external label ``lab`` (the run's name, say).
    SetupError when the binary is missing, the port already answers (another Prometheus, e.g.
    one a killed run left), or it exits or is not ready in time."""
    binary = require()
    host = cfg.local.host
    url = f"http://{host}:{port}"
    if await ready(url, timeout=0.5):
        raise SetupError(f"{host}:{port} already answers as a Prometheus: stop what holds it "
                         f"(a lab Prometheus left by a killed run?)")
    run_dir.mkdir(parents=True, exist_ok=True)
    config = run_dir / "prometheus.yml"
    config.write_text(scrape.render(targets, interval=interval, lab=lab))
    storage = Path(tempfile.mkdtemp(prefix="prometheus-", dir=run_dir))
    procs = processes.Processes(run_dir)
    argv = [
        str(binary),
        f"--config.file={config}",
        f"--storage.tsdb.path={storage}",
        f"--web.listen-address={host}:{port}",
        "--storage.tsdb.retention.time=7d",
        # The package's consoles live under /etc/prometheus; the lab uses the API only.
        "--web.console.templates=/nonexistent",
        "--web.console.libraries=/nonexistent",
        "--log.level=info",
    ]
    started = time.monotonic()
    procs.start(NAME, argv, cwd=run_dir)
    handle = Handle(url, config, storage, procs.log_path(NAME), procs, 0.0)
    while True:
        code = procs.exit_status(NAME)
        if code is not None:
            raise SetupError(f"Prometheus exited with {code} at start; see {handle.log_path}")
        if await ready(url, timeout=0.5):
            handle.started_in = time.monotonic() - started
            return handle
        if time.monotonic() - started > timeout:
            await handle.stop()
            raise SetupError(f"Prometheus did not answer {url}/-/ready within {timeout:.0f}s; "
                             f"see {handle.log_path}")
        await asyncio.sleep(0.1)
