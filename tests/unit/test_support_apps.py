"""
The test helper L{refused_or_unanswered}: which outcomes of a connection count as "not served",
and which are errors the calling test must see.  Driven on a memory reactor so that each outcome,
including a reset while connecting, happens every time.
"""

from __future__ import annotations

import errno
import os

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectError, ConnectionRefusedError, getConnectError
from twisted.internet.interfaces import IProtocol
from twisted.internet.protocol import connectionDone
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from tests.support.apps import refused_or_unanswered


class _HalfClosableTransport(StringTransport):
    def loseWriteConnection(self) -> None:
        pass


class RefusedOrUnansweredTests(TestCase):
    def setUp(self) -> None:
        self.memory = MemoryReactorClock()
        self.result: Deferred[bool] = Deferred.fromCoroutine(
            refused_or_unanswered(self.memory, 2222, b"E new")
        )

    def fail_connect(self, code: int) -> None:
        factory = self.memory.tcpClients[0][2]
        error = getConnectError((code, os.strerror(code)))
        factory.clientConnectionFailed(self.memory.connectors[0], Failure(error))

    def connect(self) -> tuple[IProtocol, _HalfClosableTransport]:
        factory = self.memory.tcpClients[0][2]
        protocol = factory.buildProtocol(None)
        assert protocol is not None
        transport = _HalfClosableTransport()
        protocol.makeConnection(transport)
        return protocol, transport

    def test_refused(self) -> None:
        self.fail_connect(errno.ECONNREFUSED)
        self.assertIs(self.successResultOf(self.result), True)

    def test_reset_while_connecting(self) -> None:
        """The listener closed with this connection still in its accept queue."""
        self.fail_connect(errno.ECONNRESET)
        self.assertIs(self.successResultOf(self.result), True)

    def test_other_connect_errors_are_raised(self) -> None:
        self.fail_connect(errno.ENETUNREACH)
        failure = self.failureResultOf(self.result, ConnectError)
        self.assertNotIsInstance(failure.value, ConnectionRefusedError)
        self.assertEqual(failure.value.osError, errno.ENETUNREACH)

    def test_closed_without_an_answer(self) -> None:
        protocol, transport = self.connect()
        self.assertEqual(transport.value(), b"E new")
        protocol.connectionLost(connectionDone)
        self.assertIs(self.successResultOf(self.result), True)

    def test_answered(self) -> None:
        protocol, _ = self.connect()
        protocol.dataReceived(b"E new")
        protocol.connectionLost(connectionDone)
        self.assertIs(self.successResultOf(self.result), False)
