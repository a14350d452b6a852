"""
rfwd's reactor (L{twisted_rfwd.ssh.reactor}): Twisted's epoll reactor whose events skip the log
context; events reach their descriptors as before, and a handler's exception is still logged and
ends only that descriptor.
"""

from __future__ import annotations

import os
import sys

from twisted.internet.abstract import FileDescriptor
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from twisted_rfwd.ssh.reactor import TunnelReactor, install_unless_chosen


class _Pipe(FileDescriptor):
    """The read end of a pipe, recording what the reactor asks of it."""

    def __init__(self, reactor: TunnelReactor, fail: bool = False) -> None:
        super().__init__(reactor)
        self.read_fd, self.write_fd = os.pipe()
        self.fail = fail
        self.received: list[bytes] = []
        self.lost: list[Failure] = []

    def fileno(self) -> int:
        return self.read_fd

    def doRead(self) -> None:
        data = os.read(self.read_fd, 100)
        if self.fail:
            raise ValueError("a handler's own bug")
        self.received.append(data)

    def connectionLost(self, reason: Failure) -> None:
        self.lost.append(reason)

    def close(self) -> None:
        for fd in (self.read_fd, self.write_fd):
            os.close(fd)


class TunnelReactorTests(SynchronousTestCase):
    def make(self, fail: bool = False) -> tuple[TunnelReactor, _Pipe]:
        reactor = TunnelReactor()
        self.addCleanup(reactor._poller.close)
        pipe = _Pipe(reactor, fail)
        self.addCleanup(pipe.close)
        reactor.addReader(pipe)
        return reactor, pipe

    def test_readable_descriptor_is_read(self) -> None:
        """A poll with data waiting calls the descriptor's doRead, without any log context."""
        reactor, pipe = self.make()
        reactor.doPoll(0)
        self.assertEqual(pipe.received, [])
        os.write(pipe.write_fd, b"ready")
        reactor.doIteration(0)
        self.assertEqual(pipe.received, [b"ready"])
        self.assertEqual(pipe.lost, [])

    def test_handler_exception_logged_and_descriptor_dropped(self) -> None:
        """An exception in doRead is logged, and only that descriptor is disconnected."""
        reactor, pipe = self.make(fail=True)
        _, other = self.make()
        reactor.addReader(other)
        os.write(pipe.write_fd, b"boom")
        os.write(other.write_fd, b"fine")
        reactor.doPoll(0)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
        self.assertEqual(len(pipe.lost), 1)
        self.assertIsInstance(pipe.lost[0].value, ValueError)
        self.assertNotIn(pipe, reactor.getReaders())
        self.assertEqual(other.received, [b"fine"])
        self.assertEqual(other.lost, [])

    def test_installed_reactor_is_kept(self) -> None:
        """With a reactor installed (twistd's --reactor, or trial's), nothing is replaced."""
        from twisted.internet import reactor as installed

        install_unless_chosen()
        self.assertIs(sys.modules["twisted.internet.reactor"], installed)
        self.assertNotIsInstance(installed, TunnelReactor)
