"""The entry point: a component's process loads the components' app only, and pays only for its
own dependencies; every other command gets the whole CLI."""

from __future__ import annotations

import subprocess
import sys

import pytest
import typer

from dnsrace.cli import app as full
from dnsrace.cli import componentsapp


def _first_words(app: typer.Typer) -> set[str]:
    return set(getattr(typer.main.get_command(app), "commands", {}))


def test_names_are_exactly_the_registered_commands() -> None:
    assert _first_words(componentsapp.app) == componentsapp.NAMES
    assert _first_words(full.app) > componentsapp.NAMES


def _imported(*argv: str) -> tuple[int, str, set[str]]:
    """Run ``python -m dnsrace ARGV`` and return its exit code, output and imported modules."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "dnsrace", *argv],
                          capture_output=True, text=True, timeout=60, check=False)
    modules = {line.rsplit("|", 1)[1].strip() for line in done.stderr.splitlines()
               if line.startswith("import time:") and "|" in line}
    return done.returncode, done.stdout, modules


@pytest.mark.parametrize(("command", "absent"), [
    (["ddb-client"], {"kubernetes_asyncio", "kopf", "dnsrace.components.scenarios.lab"}),
    (["dwfm"], {"kubernetes_asyncio", "aiobotocore", "dnsrace.components.scenarios.lab"}),
    (["lbnode"], {"kopf", "aiobotocore", "dnsrace.components.scenarios.lab", "dnsrace.report"}),
    (["nlb", "failover"], {"kopf", "dnsrace.components.scenarios.lab", "dnsrace.check.model"}),
])
def test_a_component_command_imports_only_its_own(command: list[str], absent: set[str]) -> None:
    code, out, modules = _imported(*command, "--help")
    assert code == 0, out
    assert "Usage: dnsrace" in out
    assert "dnsrace.cli.componentsapp" in modules
    assert "dnsrace.cli.app" not in modules
    assert not absent & modules, sorted(absent & modules)


def test_other_commands_get_the_whole_cli() -> None:
    code, out, modules = _imported("--help")
    assert code == 0, out
    assert "dnsrace.cli.app" in modules
    for command in ("scenario", "demo", "status", "network-manager", "nlb", "dwfm"):
        assert command in out
