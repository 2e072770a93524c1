"""The ``dnsrace`` command: wires the command groups together; each lives in its own module."""

from __future__ import annotations

import typer

from dnsrace.cli import (
    bench,
    check,
    componentsapp,
    demo,
    local,
    report,
    scenario,
    setup,
)
from dnsrace.cli import status as status_cli

app = typer.Typer(
    help="dnsrace: reproduce the DynamoDB DNS Planner/Enactor race on a real Kubernetes API "
         "server, etcd and CoreDNS, and show which safeguards stop it.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.command("setup")(setup.setup)
app.add_typer(local.app, name="local")
app.command("demo")(demo.demo)
componentsapp.register(app)
app.add_typer(scenario.app, name="scenario")
app.command("bench")(bench.bench_cmd)
app.command("check")(check.check_cmd)
app.command("report")(report.report_cmd)
app.command("status")(status_cli.status_cmd)

