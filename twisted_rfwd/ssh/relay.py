"""
The TCP side of a forwarded connection, the same at both ends.

A L{ChannelRelay} is the protocol of the forwarded socket: the server's accepted connection, or
the client's connection to the destination.  It passes everything to its L{Channel}, which does
flow control and half-close; see L{twisted_rfwd.ssh.channel}.
"""

from __future__ import annotations

from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

from twisted_rfwd.ssh.channel import Channel
from twisted_rfwd.ssh.sockets import set_tcp_nodelay

__all__ = ["ChannelRelay"]


@implementer(IHalfCloseableProtocol)
class ChannelRelay(Protocol):
    """Relays one TCP connection through one SSH channel, both ways."""

    channel: Channel

    def __init__(self, channel: Channel | None = None) -> None:
        if channel is not None:
            self.channel = channel

    def connectionMade(self) -> None:
        set_tcp_nodelay(self.transport)
        self.channel.attach(self.transport)  # type: ignore[arg-type]

    def dataReceived(self, data: bytes) -> None:
        self.channel.write(data)

    def readConnectionLost(self) -> None:
        self.channel.write_eof()

    def writeConnectionLost(self) -> None:
        self.channel.local_write_closed()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.channel.local_connection_lost(reason)
