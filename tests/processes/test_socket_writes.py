"""
L{twisted_rfwd.ssh.sockets.write_now} on real loopback sockets: it sends at once only when
nothing waits in Twisted's buffer, so bytes are never reordered, and it leaves everything else
(a full socket, a closing transport, a transport that is not a plain socket) to Twisted.  These
tests also pin the parts of Twisted's C{FileDescriptor} it looks at.
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import StringTransport
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from twisted_rfwd.ssh.sockets import write_now

TIMEOUT = 10.0
BIG = 8 * 1024 * 1024


def reactor() -> Any:
    from twisted.internet import reactor as r

    return r


class _Accepted(Protocol):
    def __init__(self, made: Deferred[_Accepted]) -> None:
        self.made = made

    def connectionMade(self) -> None:
        self.made.callback(self)


def _read_until_eof(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(1024 * 1024):
        chunks.append(chunk)
    return b"".join(chunks)


class WriteNowTests(TestCase):
    async def accepted(self, receive_buffer: int | None = None) -> tuple[Any, socket.socket]:
        """A Twisted server transport, and the blocking client socket at its other end."""
        made: Deferred[_Accepted] = Deferred()
        port = reactor().listenTCP(0, Factory.forProtocol(lambda: _Accepted(made)), 5, "127.0.0.1")
        self.addCleanup(port.stopListening)
        client = socket.socket()
        self.addCleanup(client.close)
        if receive_buffer is not None:
            client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        client.settimeout(TIMEOUT)
        client.connect(("127.0.0.1", port.getHost().port))
        protocol = await made.addTimeout(TIMEOUT, reactor())
        transport: Any = protocol.transport
        self.addCleanup(transport.abortConnection)
        return transport, client

    async def test_sent_at_once_when_nothing_waits(self) -> None:
        """With Twisted's buffer empty, the bytes are in the socket before the reactor turns."""
        transport, client = await self.accepted()
        write_now(transport, b"hello")
        self.assertNotIn(transport, reactor().getWriters())
        self.assertEqual(client.recv(100), b"hello")

    async def test_rest_queued_and_later_writes_stay_behind_it(self) -> None:
        """
        What a full socket does not take goes to Twisted's buffer, and a later write waits
        behind it: the peer reads everything, in order.
        """
        transport, client = await self.accepted(receive_buffer=4096)
        transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        big = bytes(range(256)) * (BIG // 256)
        write_now(transport, big)
        self.assertIn(transport, reactor().getWriters(), "the socket took all 8 MiB")
        write_now(transport, b"tail")
        transport.loseConnection()
        received = await deferToThread(_read_until_eof, client)
        self.assertEqual(len(received), len(big) + 4)
        self.assertTrue(received == big + b"tail")

    async def test_after_lose_connection_twisted_writes_then_closes(self) -> None:
        """Once the transport is closing, Twisted's own write flushes the bytes before the FIN."""
        transport, client = await self.accepted()
        transport.loseConnection()
        write_now(transport, b"last words")
        self.assertEqual(await deferToThread(_read_until_eof, client), b"last words")

    async def test_a_view_is_sent_or_copied_to_wait(self) -> None:
        """A view (of a decrypted packet) goes straight out; what must wait is copied first."""
        transport, client = await self.accepted()
        packet = bytearray(b"header:payload")
        write_now(transport, memoryview(packet)[7:])
        self.assertEqual(client.recv(100), b"payload")
        other = StringTransport()  # whose write takes bytes only
        write_now(other, memoryview(packet)[7:])
        packet[7:] = b"changed"
        self.assertEqual(other.value(), b"payload")

    def test_other_transports_get_an_ordinary_write(self) -> None:
        """A transport that is not one of Twisted's sockets is written to as usual."""
        transport = StringTransport()
        write_now(transport, b"plain")
        self.assertEqual(transport.value(), b"plain")
