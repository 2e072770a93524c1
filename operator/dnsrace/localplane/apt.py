"""Debian packages the setup installs when a tool it needs is missing: ``apt-get`` as root.

Who calls it: ``localplane.dynamodb`` (a JRE and Maven for DynamoDB Local) and
``localplane.browser`` (headless Chromium and its WebDriver for the report's browser test).
Why here: the project's own setup must install what a fresh machine lacks, the same way for
every tool; a non-root user gets the exact command to run instead of a half-done install.
"""

from __future__ import annotations

import os
import shutil
import subprocess

from dnsrace.localplane.binaries import Report, SetupError

_NO_CANDIDATE = ("Unable to locate package", "has no installation candidate")


def install(package: str, needed_by: str, report: Report) -> None:
    """Install ``package`` with apt when running as root; else say exactly what to run.

    A fresh machine may have no package lists yet (apt then knows no package at all): one
    ``apt-get update`` and a second try, rather than an update on every install.
    """
    command = ["apt-get", "install", "-y", "--no-install-recommends", package]
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise SetupError(f"{needed_by} needs {package}: run `sudo {' '.join(command)}`")
    report(f"  {needed_by}: {' '.join(command)}")
    proc = _run(command)
    if proc.returncode != 0 and any(m in proc.stderr for m in _NO_CANDIDATE):
        report(f"  {needed_by}: apt-get update (no package list knows {package})")
        update = _run(["apt-get", "update"])
        if update.returncode != 0:
            raise SetupError(f"step 'apt-get update' failed:\n{update.stderr.strip()}")
        proc = _run(command)
    if proc.returncode != 0:
        raise SetupError(f"step 'apt-get install {package}' failed:\n{proc.stderr.strip()}")


def _run(command: list[str]) -> subprocess.CompletedProcess[str]:
    # Non-interactive: a package's debconf question would otherwise hang the setup.
    env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
    return subprocess.run(command, capture_output=True, text=True, timeout=900, check=False,
                          env=env)
