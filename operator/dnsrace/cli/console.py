"""All terminal styling: the rich console and the few renderers the commands share."""

from __future__ import annotations

import sys
import time

from rich.console import Console
from rich.table import Table

# Logs (CI, files) get a fixed width wide enough for the figure tables; terminals their own.
console = Console(highlight=False, width=None if sys.stdout.isatty() else 140)
err = Console(stderr=True, highlight=False)

_started = time.monotonic()


def progress(message: str) -> None:
    """Progress lines with elapsed time; plain when not on a terminal (CI logs)."""
    elapsed = time.monotonic() - _started
    if console.is_terminal:
        console.print(f"[dim]{elapsed:6.1f}s[/dim] {message}")
    else:
        print(f"{elapsed:6.1f}s {message}", flush=True)


def fail(message: str, code: int = 1) -> None:
    err.print(f"[bold red]error:[/bold red] {message}")
    sys.exit(code)


def table(title: str, columns: list[str], rows: list[list[str]]) -> None:
    tbl = Table(title=title, title_justify="left")
    for column in columns:
        tbl.add_column(column)
    for row in rows:
        tbl.add_row(*row)
    console.print(tbl)
