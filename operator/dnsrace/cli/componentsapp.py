"""The components' commands, registered on an app: the whole CLI's (``cli.app``) and a small one
of their own, which is what a component's process loads (``cli.main``).

A lab starts about twenty ``dnsrace`` processes on two cores, again after each crash; through
the small app none of them imports the scenario runner, the report or the checker, and the
DynamoDB clients and DWFM do not import the Kubernetes client at all.
"""

from __future__ import annotations

import typer

from dnsrace.cli import cascade, components, launcher, netmanager, nlb

NAMES = frozenset({"planner", "enactor", "prober", "lbnode", "ddb-client", "repair", "dwfm",
                   "launcher", "network-manager", "instances", "nlb"})
"""The first word of every command ``register`` adds."""


def register(app: typer.Typer) -> None:
    app.command("planner")(components.planner_cmd)
    app.command("enactor")(components.enactor_cmd)
    app.command("prober")(components.prober_cmd)
    app.command("lbnode")(components.lbnode_cmd)
    app.command("ddb-client")(components.ddbclient_cmd)
    app.command("repair")(components.repair_cmd)
    app.add_typer(cascade.dwfm_app, name="dwfm")
    app.command("launcher")(launcher.launcher_cmd)
    app.command("network-manager")(netmanager.network_manager_cmd)
    app.command("instances")(netmanager.instances_cmd)
    app.add_typer(nlb.nlb_app, name="nlb")


app = typer.Typer(help="dnsrace's components (`dnsrace --help` lists every command).",
                  no_args_is_help=True, pretty_exceptions_enable=False)
register(app)
