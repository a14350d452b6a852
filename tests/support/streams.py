"""
A fake TCP transport for the forwarded side of a channel, with what Twisted's own fakes lack:
half-close, a write buffer that pauses its registered producer, and pausable reading.
"""

from __future__ import annotations

from collections.abc import Iterable

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IProtocol, IPushProducer, ITCPTransport
from twisted.python.failure import Failure
from zope.interface import implementer


@implementer(ITCPTransport)
class FakeStream:
    """
    Stands in for a TCP connection: what the protocol writes piles up in C{written} until the
    test calls L{drain}; what the test sends with L{receive} reaches the protocol only while
    reading is not paused (otherwise it waits, like bytes in a kernel buffer).
    """

    def __init__(
        self,
        high_water: int = 64 * 1024,
        peer: IPv4Address | None = None,
        host: IPv4Address | None = None,
    ) -> None:
        self.high_water = high_water
        self.peer = peer or IPv4Address("TCP", "127.0.0.1", 40000)
        self.host = host or IPv4Address("TCP", "127.0.0.1", 2222)
        self.protocol: IProtocol | None = None
        self.written = bytearray()
        self.unflushed = 0
        self.producer: IPushProducer | None = None
        self.producer_paused = False
        self.reading_paused = False
        self.inbound: list[bytes] = []
        self.inbound_eof = False
        self.write_closing = False
        self.write_closed = False
        self.closing = False
        self.closed = False
        self.aborted = False
        self.nodelay = False

    def connect(self, protocol: IProtocol) -> FakeStream:
        self.protocol = protocol
        protocol.makeConnection(self)
        return self

    # -- the transport interface the code under test uses -------------------------------------

    def write(self, data: bytes) -> None:
        assert not self.write_closing, "write after loseWriteConnection"
        assert not self.closed, "write after close"
        self.written += data
        self.unflushed += len(data)
        overfull = self.unflushed > self.high_water
        if self.producer is not None and overfull and not self.producer_paused:
            self.producer_paused = True
            self.producer.pauseProducing()

    def writeSequence(self, chunks: Iterable[bytes]) -> None:
        self.write(b"".join(chunks))

    def registerProducer(self, producer: IPushProducer, streaming: bool) -> None:
        assert self.producer is None, "producer registered twice"
        assert streaming
        self.producer = producer
        self.producer_paused = False

    def unregisterProducer(self) -> None:
        self.producer = None

    def pauseProducing(self) -> None:
        self.reading_paused = True

    def resumeProducing(self) -> None:
        self.reading_paused = False
        self._deliver()

    def stopProducing(self) -> None:
        self.loseConnection()

    def loseWriteConnection(self) -> None:
        self.write_closing = True
        self._settle()

    def loseConnection(self) -> None:
        self.closing = True
        self._settle()

    def abortConnection(self) -> None:
        self.aborted = True
        self.unflushed = 0
        self.closing = True
        self._settle()

    def setTcpNoDelay(self, enabled: bool) -> None:
        self.nodelay = enabled

    def getTcpNoDelay(self) -> bool:
        return self.nodelay

    def setTcpKeepAlive(self, enabled: bool) -> None:
        pass

    def getTcpKeepAlive(self) -> bool:
        return False

    def getPeer(self) -> IPv4Address:
        return self.peer

    def getHost(self) -> IPv4Address:
        return self.host

    # -- driven by the test ------------------------------------------------------------------

    def drain(self) -> bytes:
        """The far side read everything written so far; a paused producer resumes."""
        data = bytes(self.written)
        self.written.clear()
        self.unflushed = 0
        if self.producer is not None and self.producer_paused:
            self.producer_paused = False
            self.producer.resumeProducing()
        self._settle()
        return data

    def receive(self, data: bytes) -> None:
        """The far side sent C{data}."""
        self.inbound.append(data)
        self._deliver()

    def receive_eof(self) -> None:
        """The far side shut down its write side."""
        self.inbound_eof = True
        self._deliver()

    def reset(self) -> None:
        """The connection broke."""
        self._lose(Failure(ConnectionLost("reset")))

    # -- internals ---------------------------------------------------------------------------

    def _deliver(self) -> None:
        assert self.protocol is not None
        while self.inbound and not self.reading_paused and not self.closed:
            self.protocol.dataReceived(self.inbound.pop(0))
        if self.inbound_eof and not self.inbound and not self.reading_paused:
            self.inbound_eof = False
            half = getattr(self.protocol, "readConnectionLost", None)
            if half is not None:
                half()

    def _settle(self) -> None:
        if self.closed:
            return
        if self.unflushed and not self.aborted:
            return
        if self.write_closing and not self.write_closed:
            self.write_closed = True
            half = getattr(self.protocol, "writeConnectionLost", None)
            if half is not None:
                half()
        if self.closing:
            self._lose(Failure(ConnectionDone("closed")))

    def _lose(self, reason: Failure) -> None:
        if self.closed:
            return
        self.closed = True
        producer = self.producer
        if producer is not None:
            producer.stopProducing()
        assert self.protocol is not None
        self.protocol.connectionLost(reason)
