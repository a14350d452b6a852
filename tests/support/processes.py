"""
Child processes started by tests (rfwd plugins, sshd, ssh): their output, waits with deadlines,
and a stop that always happens (registered as a test cleanup when the process starts).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
from collections.abc import Sequence
from typing import Any

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessDone, ProcessExitedAlready, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, TestCase

from harness.openssh import OPENSSH_10_FETCH, SYSTEM_OPENSSH, find_program
from harness.plugins import CHECKOUT, plugin_env, twistd_argv
from harness.ports import free_port
from harness.proc import descendants, rss_kib

__all__ = [
    "REPOSITORY",
    "ChildProcess",
    "ProcessFailed",
    "descendants",
    "free_port",
    "openssh_binary",
    "plugin_env",
    "spawn",
    "twistd_argv",
]

REPOSITORY = CHECKOUT


class ProcessFailed(Exception):
    """A process ended, or never printed what we waited for."""


class ChildProcess(ProcessProtocol):
    """One child: output lines kept, line waits, and the exit status."""

    def __init__(self, name: str, reactor: Any) -> None:
        self.name = name
        self.reactor = reactor
        self.lines: list[str] = []
        self._partial = {1: b"", 2: b""}
        self._waiters: list[tuple[re.Pattern[str], Deferred[re.Match[str]]]] = []
        self.exit_code: int | None = None
        self.exit_signal: int | None = None
        self._end_waiters: list[Deferred[None]] = []
        self.ended = False

    spawned_pid = 0

    def makeConnection(self, transport: Any) -> None:
        self.spawned_pid = transport.pid
        super().makeConnection(transport)

    @property
    def pid(self) -> int:
        """The process ID it was started with (Twisted forgets it once the process exits)."""
        return self.spawned_pid

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        buffered = self._partial.get(childFD, b"") + data
        *complete, self._partial[childFD] = buffered.split(b"\n")
        for raw in complete:
            self._line(raw.decode("utf-8", "replace").rstrip("\r"))

    def _line(self, line: str) -> None:
        self.lines.append(line)
        for pattern, d in list(self._waiters):
            match = pattern.search(line)
            if match:
                self._waiters.remove((pattern, d))
                d.callback(match)

    def processEnded(self, reason: Failure) -> None:
        for fd, rest in self._partial.items():
            if rest:
                self._line(rest.decode("utf-8", "replace"))
                self._partial[fd] = b""
        if reason.check(ProcessDone):
            self.exit_code = 0
        elif isinstance(reason.value, ProcessTerminated):
            self.exit_code = reason.value.exitCode
            self.exit_signal = reason.value.signal
        self.ended = True
        waiters, self._waiters = self._waiters, []
        for pattern, d in waiters:
            d.errback(
                ProcessFailed(
                    f"{self.name} ended (exit {self.exit_code}, signal {self.exit_signal}) "
                    f"before printing /{pattern.pattern}/:\n{self.output()}"
                )
            )
        end_waiters, self._end_waiters = self._end_waiters, []
        for waiter in end_waiters:
            waiter.callback(None)

    def output(self, last: int = 60) -> str:
        return "\n".join(self.lines[-last:])

    def find(self, pattern: str, after: int = 0) -> re.Match[str] | None:
        """The first line already printed (from line C{after} on) that matches."""
        compiled = re.compile(pattern)
        for line in self.lines[after:]:
            match = compiled.search(line)
            if match:
                return match
        return None

    def mark(self) -> int:
        """A position in the output, for waiting on what is printed after it."""
        return len(self.lines)

    def wait_for(
        self, pattern: str, timeout: float = 30.0, after: int = 0
    ) -> Deferred[re.Match[str]]:
        """Fires with the match once a line matching C{pattern} is printed (after C{after})."""
        match = self.find(pattern, after)
        if match:
            return defer.succeed(match)
        if self.ended:
            return defer.fail(ProcessFailed(f"{self.name} already ended:\n{self.output()}"))
        d: Deferred[re.Match[str]] = Deferred()
        compiled = re.compile(pattern)
        self._waiters.append((compiled, d))

        def timed_out(failure: Failure) -> Failure:
            if failure.check(defer.TimeoutError):
                if (compiled, d) in self._waiters:
                    self._waiters.remove((compiled, d))
                raise ProcessFailed(
                    f"{self.name} did not print /{pattern}/ within {timeout}s:\n{self.output()}"
                )
            return failure

        return d.addTimeout(timeout, self.reactor).addErrback(timed_out)

    def wait_ended(self, timeout: float = 30.0) -> Deferred[None]:
        """Fires once the process has exited."""
        if self.ended:
            return defer.succeed(None)
        d: Deferred[None] = Deferred()
        self._end_waiters.append(d)
        return d.addTimeout(timeout, self.reactor)

    def signal(self, number: int) -> None:
        if self.ended or self.transport is None:
            return
        with contextlib.suppress(ProcessExitedAlready):
            self.transport.signalProcess(number)

    async def stop(self, grace: float = 10.0) -> None:
        """
        SIGTERM, then SIGKILL for the process and everything it started if it lingers
        (sshd's per-connection children keep its output pipes open); returns once it is gone.
        """
        if self.ended:
            return
        # Collected first: once the process exits its children are re-parented away.
        tree = descendants(self.pid)
        self.signal(signal.SIGTERM)
        try:
            await self.wait_ended(grace)
        except defer.TimeoutError:
            for pid in tree + descendants(self.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            self.signal(signal.SIGKILL)
            await self.wait_ended(grace)

    def rss_kib(self) -> int:
        """Resident memory of the process now."""
        found = rss_kib(self.pid)
        if found is None:
            raise ProcessFailed(f"no VmRSS for {self.name}")
        return found


def spawn(
    test: TestCase,
    reactor: Any,
    name: str,
    argv: Sequence[str],
    env: dict[str, str] | None = None,
    cwd: str | None = None,
) -> ChildProcess:
    """Start a child whose stop is a cleanup of C{test}."""
    child = ChildProcess(name, reactor)
    environment = dict(os.environ)
    environment.update(env or {})
    reactor.spawnProcess(
        child, argv[0], list(argv), env=environment, path=cwd, childFDs={0: "w", 1: "r", 2: "r"}
    )
    test.addCleanup(lambda: defer.Deferred.fromCoroutine(child.stop()))
    return child


def openssh_binary(name: str, version: str = SYSTEM_OPENSSH) -> str:
    """
    Path of an OpenSSH program of C{version} (the system's, or 10.0 unpacked by
    C{.ci/openssh10.sh}); skip the test if missing, unless CI requires OpenSSH.
    """
    found = find_program(name, version)
    if found:
        return found
    message = f"OpenSSH's {name} is not installed"
    if version != SYSTEM_OPENSSH:
        message = f"OpenSSH {version}'s {name} is not unpacked (run {OPENSSH_10_FETCH})"
    if os.environ.get("RFWD_REQUIRE_OPENSSH"):
        raise ProcessFailed(message + " (RFWD_REQUIRE_OPENSSH is set)")
    raise SkipTest(message)
