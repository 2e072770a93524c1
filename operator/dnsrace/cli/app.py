"""The ``dnsrace`` command: wires the command groups together; each lives in its own module."""

from __future__ import annotations

import signal

import typer

from dnsrace.cli import (
    bench,
    cascade,
    check,
    components,
    demo,
    launcher,
    local,
    netmanager,
    nlb,
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
app.command("planner")(components.planner_cmd)
app.command("enactor")(components.enactor_cmd)
app.command("prober")(components.prober_cmd)
app.command("lbnode")(components.lbnode_cmd)
app.command("ddb-client")(components.ddbclient_cmd)
app.command("repair")(components.repair_cmd)
app.add_typer(scenario.app, name="scenario")
app.command("bench")(bench.bench_cmd)
app.command("check")(check.check_cmd)
app.command("report")(report.report_cmd)
app.add_typer(cascade.dwfm_app, name="dwfm")
app.command("launcher")(launcher.launcher_cmd)
app.command("network-manager")(netmanager.network_manager_cmd)
app.command("instances")(netmanager.instances_cmd)
app.add_typer(nlb.nlb_app, name="nlb")
app.command("status")(status_cli.status_cmd)


def main() -> None:
    # SIGTERM ends a command as Ctrl-C does, so the scenario runner, the demo and the benchmark
    # stop the components they started. The long-running components set their own handlers.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    app()
