"""The lab's Prometheus (Debian's package, ``localplane.prometheus``) scraping an exporter of the
test's own: the rendered scrape config works on the real server, the target is up, a metric is
queryable through the HTTP API, and stop ends the process. No control plane is needed.

A missing Prometheus fails, never skips: ``make test`` installs it (``make setup-prometheus``,
through ``make setup``), so missing means the setup is broken.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import prometheus_client
import pytest
import yaml

from dnsrace import settings as settings_mod
from dnsrace.core import scrape
from dnsrace.localplane import prometheus

PORTS = (19091, 19092, 19094, 19095, 19096, 19097, 19098, 19099)
"""The test's own ports (19090 is the lab's default, 19093 the integration test's): the first
free ones, so two checkouts' unit runs side by side do not collide."""


def _free_ports(count: int) -> list[int]:
    free = []
    for port in PORTS:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        free.append(port)
        if len(free) == count:
            return free
    raise AssertionError(f"fewer than {count} of {PORTS} are free")


PROMETHEUS_PORT, EXPORTER_PORT = _free_ports(2)


@pytest.fixture(scope="module")
def binary() -> Path:
    found = prometheus.locate()
    if found is None:
        pytest.fail("prometheus is not installed: run `make setup-prometheus`")
    return found


@pytest.fixture
def exporter() -> Iterator[prometheus_client.Counter]:
    """A /metrics of the test's own on 127.0.0.1:19092, from a registry of its own."""
    registry = prometheus_client.CollectorRegistry()
    counter = prometheus_client.Counter("dnsrace_selftest_things", "Things counted by the test.",
                                        ["kind"], registry=registry)
    counter.labels("a").inc(7)
    server, thread = prometheus_client.start_http_server(EXPORTER_PORT, "127.0.0.1", registry)
    try:
        yield counter
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_package_binary_runs(binary: Path) -> None:
    assert prometheus.version(binary).startswith("2.")


def test_promtool_accepts_the_rendered_lab_config(binary: Path, tmp_path: Path) -> None:
    promtool = binary.with_name("promtool")
    assert promtool.is_file(), "Debian's prometheus package ships promtool beside prometheus"
    config = tmp_path / "prometheus.yml"
    config.write_text(scrape.render(scrape.lab_targets(("enactor-a", "enactor-b", "enactor-c"),
                                                       dwfm_port=18207)))
    out = subprocess.run([str(promtool), "check", "config", str(config)], capture_output=True,
                         text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stdout + out.stderr


async def test_scrapes_a_target_and_answers_queries(
    binary: Path, exporter: prometheus_client.Counter, tmp_path: Path,
) -> None:
    cfg = settings_mod.Settings.from_env()
    target = scrape.Target("selftest", "selftest-0", f"127.0.0.1:{EXPORTER_PORT}")
    down = scrape.Target("absent", "absent-0", "127.0.0.1:9")  # nothing listens on discard
    handle = await prometheus.start(cfg, tmp_path, [target, down], port=PROMETHEUS_PORT,
                                    interval=0.25, lab="selftest-lab")
    try:
        assert handle.url == f"http://127.0.0.1:{PROMETHEUS_PORT}"
        assert handle.alive()
        assert handle.storage.parent == tmp_path
        assert handle.storage.is_dir()
        written = yaml.safe_load(handle.config.read_text())
        assert written["global"]["scrape_interval"] == "250ms"
        assert written["global"]["external_labels"] == {"lab": "selftest-lab"}

        up = await handle.wait_scraped(timeout=30, jobs=["selftest"])
        by_job = {s["metric"]["job"]: float(s["value"][1]) for s in up}
        assert by_job["selftest"] == 1.0
        for _ in range(40):  # the absent target's first scrape may come a moment later
            if "absent" in by_job:
                break
            await asyncio.sleep(0.1)
            by_job = {s["metric"]["job"]: float(s["value"][1])
                      for s in await handle.query("up")}
        assert by_job["absent"] == 0.0  # down is reported, not hidden

        exporter.labels("a").inc(3)
        samples: list[dict[str, object]] = []
        for _ in range(40):  # the next scrape (every 0.25 s) brings the 10
            samples = await handle.query('dnsrace_selftest_things_total{kind="a"}')
            if samples and float(samples[0]["value"][1]) == 10.0:  # type: ignore[index]
                break
            await asyncio.sleep(0.1)
        assert len(samples) == 1, samples
        labels = samples[0]["metric"]
        assert labels == {"__name__": "dnsrace_selftest_things_total", "job": "selftest",
                          "instance": f"127.0.0.1:{EXPORTER_PORT}",
                          "process": "selftest-0", "kind": "a"}
        assert float(samples[0]["value"][1]) == 10.0  # type: ignore[index]

        names = await handle.metric_names('{job="selftest"}')
        assert {"dnsrace_selftest_things_total", "dnsrace_selftest_things_created",
                "up", "scrape_duration_seconds"} <= names
        with pytest.raises(prometheus.QueryError):
            await handle.query("sum(")
    finally:
        await handle.stop()
    assert not handle.alive()
    assert not await prometheus.ready(handle.url, timeout=0.5)
    assert "Server is ready to receive web requests" in handle.log_path.read_text()


async def test_refuses_a_port_another_prometheus_holds(binary: Path, tmp_path: Path) -> None:
    cfg = settings_mod.Settings.from_env()
    first = await prometheus.start(cfg, tmp_path / "one", [], port=PROMETHEUS_PORT)
    try:
        with pytest.raises(prometheus.SetupError, match="already answers"):
            await prometheus.start(cfg, tmp_path / "two", [], port=PROMETHEUS_PORT)
    finally:
        await first.stop()


def test_setup_step_installs_only_when_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    """``dnsrace setup prometheus``: apt only when the binary is not there (apt replaced)."""
    found: list[Path | None] = [Path("/usr/bin/prometheus")]
    installed: list[str] = []
    monkeypatch.setattr(prometheus, "locate", lambda: found[-1])

    def install(package: str, needed_by: str, report: object) -> None:
        installed.append(package)
        found.append(Path("/usr/bin/prometheus"))

    monkeypatch.setattr(prometheus.apt, "install", install)
    assert prometheus.ensure(lambda _m: None) == Path("/usr/bin/prometheus")
    assert installed == []
    found.append(None)
    assert prometheus.ensure(lambda _m: None) == Path("/usr/bin/prometheus")
    assert installed == ["prometheus"]
    found.append(None)
    monkeypatch.setattr(prometheus.apt, "install", lambda *_a: None)  # installs nothing
    with pytest.raises(prometheus.SetupError, match="still not on PATH"):
        prometheus.ensure(lambda _m: None)
    with pytest.raises(prometheus.SetupError, match="make setup-prometheus"):
        prometheus.require()


def test_setup_cli_step(binary: Path) -> None:
    """The real step on this machine (Prometheus is installed: one PATH look-up)."""
    from typer.testing import CliRunner

    from dnsrace.cli import app as cli_app

    result = CliRunner().invoke(cli_app.app, ["setup", "prometheus"])
    assert result.exit_code == 0, result.output
    assert str(binary) in result.output
    bad = CliRunner().invoke(cli_app.app, ["setup", "prometheus", "grafana"])
    assert bad.exit_code == 2
    assert "unknown setup step grafana" in bad.output
