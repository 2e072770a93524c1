"""Start, find and stop the local plane's detached processes, by pid file.

``dnsrace local up`` returns while the processes keep running, and ``dnsrace local down`` is a
later, separate invocation; so each process is started in its own session with its output in a
log file, and its pid, executable and start time (``/proc/<pid>/stat`` field 22, clock ticks
since boot) are written to ``<state>/pids/<name>.json``. Stopping checks that the pid still has
that start time and executable before signalling it, so a recycled pid is never killed: every
component runs under the same Python interpreter, so the executable alone could not tell them
apart.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

KILL_WAIT = 5.0
"""Seconds to wait for a process to vanish after SIGKILL."""


@dataclasses.dataclass(frozen=True)
class Managed:
    """What the pid file says about one process."""

    name: str
    pid: int
    executable: str
    log: str
    start_ticks: int = 0
    """The process's start time in clock ticks since boot; 0 in pid files of older versions."""

    def alive(self) -> bool:
        """True while the pid exists, is not a zombie, and is the process that was started:
        same start time, same executable."""
        stat = read_stat(self.pid)
        try:
            exe = os.readlink(f"/proc/{self.pid}/exe")
        except OSError:
            return False
        if stat is None or stat[0] == "Z":
            return False
        if self.start_ticks and stat[1] != self.start_ticks:
            return False
        return exe.removesuffix(" (deleted)") == self.executable


def read_stat(pid: int) -> tuple[str, int] | None:
    """(state, start time in clock ticks) from ``/proc/<pid>/stat``, or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ")".
    fields = stat.rsplit(")", 1)[1].split()
    return fields[0], int(fields[19])


class Processes:
    """The set of processes one local plane started, kept under ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.pid_dir = directory / "pids"
        self.log_dir = directory / "logs"
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        """Processes this instance started, so their exit status can be read (``exit_status``)."""

    def exit_status(self, name: str, wait: float = 0.0) -> int | None:
        """The exit code of a child this instance started (negative: the signal that ended
        it), waiting up to ``wait`` s for it; None while it runs or when another process
        started it. (A dying process loses its /proc exe link before it can be reaped, so
        ``alive`` may say no a moment before the status is there.)"""
        child = self.children.get(name)
        if child is None:
            return None
        try:
            return child.wait(timeout=wait) if wait else child.poll()
        except subprocess.TimeoutExpired:
            return None

    def _pid_file(self, name: str) -> Path:
        return self.pid_dir / f"{name}.json"

    def get(self, name: str) -> Managed | None:
        path = self._pid_file(name)
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return Managed(**data)

    def all(self) -> list[Managed]:
        if not self.pid_dir.is_dir():
            return []
        found = (self.get(p.stem) for p in sorted(self.pid_dir.glob("*.json")))
        return [m for m in found if m is not None]

    def log_path(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> Managed:
        """Start ``argv`` detached; a still-running process of that name is kept as it is."""
        current = self.get(name)
        if current is not None and current.alive():
            return current
        self.pid_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_path(name)
        with open(log, "ab") as out:
            out.write(f"\n--- {time.strftime('%Y-%m-%dT%H:%M:%S')} {' '.join(argv)}\n".encode())
            out.flush()
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
                cwd=cwd,
                start_new_session=True,  # survives the CLI and is not hit by its Ctrl-C
            )
        self.children[name] = proc
        stat = read_stat(proc.pid)
        managed = Managed(
            name=name, pid=proc.pid, executable=os.path.realpath(argv[0]), log=str(log),
            start_ticks=stat[1] if stat else 0,
        )
        self._pid_file(name).write_text(json.dumps(dataclasses.asdict(managed)))
        return managed

    def stop(self, name: str, timeout: float = 15.0) -> bool:
        """Stop the named process (SIGTERM, then SIGKILL); True if it was running."""
        managed = self.get(name)
        if managed is None:
            return False
        was_running = managed.alive()
        if was_running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(managed.pid, signal.SIGCONT)  # a paused process cannot act on SIGTERM
                os.kill(managed.pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while managed.alive() and time.monotonic() < deadline:
                time.sleep(0.1)
            if managed.alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(managed.pid, signal.SIGKILL)
                # A process in uninterruptible sleep (D state) outlives SIGKILL for a while;
                # do not hang on it forever.
                deadline = time.monotonic() + KILL_WAIT
                while managed.alive() and time.monotonic() < deadline:
                    time.sleep(0.05)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(managed.pid, os.WNOHANG)  # reap it when this process started it
        self._pid_file(name).unlink(missing_ok=True)
        return was_running
