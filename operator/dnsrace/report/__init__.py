"""The incident report of race runs, from their run folders alone (``dnsrace report``).

``lanes`` turns a run folder into time series (pure), ``draw`` makes the PNGs with matplotlib,
``render`` writes HTML or Markdown, ``phases`` holds the published AWS phases. It imports only
``dnsrace.core``; ``cli.report`` is its command and the scenario runner calls ``write_report``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

__all__ = ["write_report"]


def write_report(run_dirs: Sequence[Path], out: Path, fmt: str = "html") -> Path:
    """Write the report of ``run_dirs`` to ``out``, as ``html`` (one self-contained file) or
    ``md`` (Markdown, its PNGs beside it); returns ``out``."""
    # matplotlib loads in about a second: only a report pays for it, not every dnsrace
    # command that imports this package (the components start through the same CLI).
    from dnsrace.report import render

    return render.write_report(run_dirs, out, fmt)
