"""The ``dnsrace`` command's entry point: a component's command loads only the components'
app (``cli.componentsapp``), every other command the whole CLI (``cli.app``)."""

from __future__ import annotations

import signal
import sys

from dnsrace.cli import componentsapp


def main() -> None:
    # SIGTERM ends a command as Ctrl-C does, so the scenario runner, the demo and the benchmark
    # stop the components they started. The long-running components set their own handlers.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    if len(sys.argv) > 1 and sys.argv[1] in componentsapp.NAMES:
        componentsapp.app(prog_name="dnsrace")
        return
    from dnsrace.cli import app

    app.app(prog_name="dnsrace")
