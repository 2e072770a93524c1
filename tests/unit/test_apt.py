"""The setup's apt helper and the browser step, with apt itself replaced by a recorder."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from dnsrace.localplane import apt, browser
from dnsrace.localplane.binaries import SetupError


def _done(code: int, stderr: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.CompletedProcess([], code, "", stderr)


@pytest.fixture
def root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(apt.os, "geteuid", lambda: 0)
    monkeypatch.setattr(apt.shutil, "which", lambda name: f"/usr/bin/{name}")


def test_not_root_is_told_the_exact_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(apt.os, "geteuid", lambda: 1000)
    with pytest.raises(SetupError, match=r"needs chromium-driver: run `sudo apt-get install -y "
                                         r"--no-install-recommends chromium-driver`"):
        apt.install("chromium-driver", "the report's browser test", lambda _m: None)


@pytest.mark.usefixtures("root")
def test_a_fresh_machine_updates_the_package_lists_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []
    answers = iter([_done(100, "E: Unable to locate package chromium-driver"), _done(0),
                    _done(0)])

    def run(command: list[str]) -> subprocess.CompletedProcess[str]:
        calls.append(command)
        return next(answers)

    monkeypatch.setattr(apt, "_run", run)
    said: list[str] = []
    apt.install("chromium-driver", "browser", said.append)
    assert [c[:2] for c in calls] == [["apt-get", "install"], ["apt-get", "update"],
                                      ["apt-get", "install"]]
    assert any("apt-get update" in m for m in said)


@pytest.mark.usefixtures("root")
def test_a_failed_install_says_which_step(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(apt, "_run", lambda _c: _done(1, "E: disk full"))
    with pytest.raises(SetupError, match="step 'apt-get install maven' failed:\nE: disk full"):
        apt.install("maven", "DynamoDB Local", lambda _m: None)


def test_browser_is_installed_only_when_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    there = browser.Browser(Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver"))
    found: list[browser.Browser | None] = [there]
    installed: list[str] = []
    monkeypatch.setattr(browser, "locate", lambda: found[-1])
    monkeypatch.setattr(browser.apt, "install",
                        lambda package, _why, _report: installed.append(package))
    assert browser.ensure(lambda _m: None) == there
    assert installed == []
    found[:] = [there, None]  # missing first, there after the install
    monkeypatch.setattr(browser, "locate", lambda: found.pop())
    assert browser.ensure(lambda _m: None) == there
    assert installed == ["chromium-driver"]
