"""The local process table: a recorded process is recognised by its start time, so a pid that
was recycled by another process (even one under the same interpreter) is never signalled."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
from pathlib import Path

from dnsrace.localplane import processes


def test_a_process_is_known_by_its_start_time(tmp_path: Path) -> None:
    procs = processes.Processes(tmp_path)
    managed = procs.start("sleeper", [sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert managed.start_ticks > 0
        assert procs.get("sleeper") == managed
        assert managed.alive()
        # The same pid and interpreter with another start time is another process.
        recycled = dataclasses.replace(managed, start_ticks=managed.start_ticks - 1)
        assert not recycled.alive()
    finally:
        assert procs.stop("sleeper", timeout=5)
    assert not managed.alive()
    assert procs.get("sleeper") is None


def test_stop_does_not_signal_a_recycled_pid(tmp_path: Path) -> None:
    procs = processes.Processes(tmp_path)
    managed = procs.start("sleeper", [sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        stale = dataclasses.replace(managed, start_ticks=managed.start_ticks + 1)
        (tmp_path / "pids" / "sleeper.json").write_text(json.dumps(dataclasses.asdict(stale)))
        assert not procs.stop("sleeper", timeout=1), "not ours: not signalled"
        assert managed.alive(), "the process that holds the pid now is left alone"
    finally:
        os.kill(managed.pid, signal.SIGKILL)
        os.waitpid(managed.pid, 0)
