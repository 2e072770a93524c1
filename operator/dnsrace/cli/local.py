"""``dnsrace local``: bring the local control plane up, down, and report on it."""

from __future__ import annotations

import typer

from dnsrace import settings as settings_mod
from dnsrace.cli import console
from dnsrace.localplane import binaries, controlplane

app = typer.Typer(help="Run etcd, kube-apiserver, kube-controller-manager, a DNS etcd and CoreDNS "
                       "as local processes on loopback (no Docker needed).", no_args_is_help=True)


def _plane() -> controlplane.LocalPlane:
    return controlplane.LocalPlane(settings_mod.Settings.from_env(), report=console.progress)


def print_status(status: controlplane.PlaneStatus) -> None:
    rows = [
        [c.name, str(c.pid or "-"),
         "[green]healthy[/green]" if c.healthy else
         ("[yellow]unhealthy[/yellow]" if c.running else "[red]stopped[/red]"),
         c.detail, c.log]
        for c in status.components
    ]
    console.table("local control plane", ["component", "pid", "state", "detail", "log"], rows)
    console.console.print(f"kubeconfig:  {status.kubeconfig}")
    console.console.print(f"API server:  {status.apiserver}")
    console.console.print(f"CoreDNS:     {status.dns_server} (zone {settings_mod.ZONE})")
    console.console.print(f"DNS etcd:    {status.dns_etcd}")


@app.command()
def up() -> None:
    """Build what is missing, start every process that is not running, wait for health, and
    install the CRDs."""
    plane = _plane()
    try:
        status = plane.up()
    except (binaries.SetupError, controlplane.PlaneError) as exc:
        console.fail(str(exc))
    print_status(status)
    console.console.print(
        f"\nTry: kubectl --kubeconfig {status.kubeconfig} get crds\n"
        f"     dig @{status.dns_server.split(':')[0]} -p {status.dns_server.split(':')[1]} "
        f"{settings_mod.ZONE} SOA"
    )


@app.command()
def down() -> None:
    """Stop exactly the processes `local up` started (data and certificates are kept)."""
    stopped = _plane().down()
    console.console.print(f"stopped: {', '.join(stopped) if stopped else 'nothing was running'}")


@app.command()
def status() -> None:
    """Show each process, its health and log, and the addresses to use; exit 1 if unhealthy."""
    st = _plane().status()
    print_status(st)
    if not st.healthy:
        raise typer.Exit(1)


@app.command()
def env() -> None:
    """Print `export` lines that point tests and components at this plane."""
    for key, value in _plane().env().items():
        print(f"export {key}={value}")
