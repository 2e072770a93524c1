"""The ``dnsrace`` command: wires the command groups together; each lives in its own module."""

from __future__ import annotations

import typer

from dnsrace.cli import demo, local, setup

app = typer.Typer(
    help="dnsrace: reproduce the DynamoDB DNS Planner/Enactor race on a real Kubernetes API "
         "server, etcd and CoreDNS, and show which safeguards stop it.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.command("setup")(setup.setup)
app.add_typer(local.app, name="local")
app.command("demo")(demo.demo)


def main() -> None:
    app()
