"""The CLI refuses bad input before anything runs, with a message that says what is valid."""

from __future__ import annotations

from typer.testing import CliRunner

from dnsrace.cli.app import app


def test_unknown_safeguard_is_refused_by_the_cli() -> None:
    result = CliRunner().invoke(app, ["scenario", "run", "race", "--safeguards", "fencing,x"])
    assert result.exit_code == 2
    assert "unknown safeguard x" in result.output
    assert "single-writer" in result.output


def test_unknown_scenario_is_refused() -> None:
    result = CliRunner().invoke(app, ["scenario", "run", "nope"])
    assert result.exit_code == 2
    assert "unknown scenario 'nope'" in result.output


def test_help_lists_the_components() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("planner", "enactor", "prober", "lbnode", "repair", "scenario", "bench"):
        assert command in result.output
