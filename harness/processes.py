"""
Child processes for blocking code (the benchmarks): each in its own session, its output in a log
file, and its whole process tree stopped by PID at the end, also on Ctrl-C.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from harness.proc import gone, process_tree

START_TIMEOUT = 30.0


class StartError(Exception):
    """A process ended, or never logged what we waited for."""


RUNNING: list[Child] = []
"""Every child started and not yet stopped, for L{stop_all}."""


class Child:
    """A process started by blocking code; C{env} is added to this process's environment."""

    def __init__(
        self, name: str, argv: Sequence[str], log: Path, env: dict[str, str] | None = None
    ) -> None:
        self.name = name
        self.log = log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **env} if env else None,
                start_new_session=True,  # Ctrl-C reaches only us; we stop the children
            )
        RUNNING.append(self)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self, last: int = 8) -> str:
        try:
            lines = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-last:])

    def ended(self) -> str:
        return f"{self.name} exited with status {self.proc.returncode}:\n{self.output()}"

    def wait_for(self, regex: str, timeout: float = START_TIMEOUT) -> re.Match[str]:
        """The first log line matching C{regex}, once printed."""
        compiled = re.compile(regex)
        deadline = time.monotonic() + timeout
        while True:
            match = compiled.search(self.log.read_text(errors="replace"))
            if match:
                return match
            if not self.alive():
                raise StartError(self.ended())
            if time.monotonic() > deadline:
                raise StartError(
                    f"{self.name} did not log /{regex}/ in {timeout}s:\n{self.output()}"
                )
            time.sleep(0.05)

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM to the process and its descendants, SIGKILL to what is left after C{grace}."""
        pids = process_tree(self.pid) if self.alive() else []
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(grace)
        while any(not gone(pid) for pid in pids[1:]) and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid in pids:
            if pid == self.pid:
                if self.proc.poll() is None:
                    self.proc.kill()
            elif not gone(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self.proc.wait()
        if self in RUNNING:
            RUNNING.remove(self)


def stop_all() -> None:
    """Stop every child still running, the last started first."""
    for child in reversed(list(RUNNING)):
        child.stop()
