"""
What the SSH transport (L{twisted_rfwd.ssh.transport}) and the C{ssh-connection} service
(L{twisted_rfwd.ssh.mux}) need from each other, declared instead of found by name.

Conch's own L{twisted.conch.endpoints} does the same with C{_ISSHConnectionCreator}.  The
transport checks which of these its service provides once, when the service is set, never per
packet; test fakes declare them too, so mypy-zope checks that they keep up.

Phases of one connection, as both sides see them:

  1. B{Before login.}  The transport runs key exchange and then C{ssh-userauth}; the service is
     the userauth one, which provides neither L{IChannelDataSink} nor L{IKeyExchangeObserver}.
  2. B{Connection.}  Once logged in, C{setService} installs the multiplexer: from then on the
     transport hands it every C{CHANNEL_DATA} through L{IChannelDataSink.channel_data} (other
     messages through Conch's C{packetReceived}), and the multiplexer sends through
     L{ISSHTransport}.
  3. B{Re-keying.}  Each key re-exchange (RFC 4253 section 9) is bracketed by
     L{IKeyExchangeObserver.key_exchange_started} and C{key_exchange_finished}: in between, the
     transport keeps every connection-protocol packet in memory until the new keys are in use.
  4. B{End.}  When the TCP connection is lost, Conch calls the service's C{serviceStopped}; the
     multiplexer sends nothing after that.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

from zope.interface import Interface

__all__ = ["IChannelDataSink", "IKeyExchangeObserver", "ISSHTransport"]


class IChannelDataSink(Interface):
    """A service that takes C{CHANNEL_DATA} straight from the packet layer (phase 2)."""

    def channel_data(plaintext: bytes, start: int, end: int) -> None:
        """
        One C{SSH_MSG_CHANNEL_DATA}: its body (after the message number) is
        C{plaintext[start:end]}, so the data is sliced out of the decrypted packet once.  The
        sink handles the peer's protocol errors itself.  It may hold the data until
        L{read_done}, to write what one read brought for a channel at once.
        """

    def read_done() -> None:
        """Every packet of one read of the SSH socket has been dispatched."""


class IKeyExchangeObserver(Interface):
    """A service told when a key re-exchange holds its packets (phase 3)."""

    def key_exchange_started() -> None:
        """We sent KEXINIT: packets sent from now on wait in memory until the new keys."""

    def key_exchange_finished() -> None:
        """The new keys are in use, and what waited has been sent."""


class ISSHTransport(Interface):
    """What the C{ssh-connection} service needs of the SSH transport under it (phases 2-4)."""

    otherVersionString: bytes
    """The peer's identification line, such as C{b"SSH-2.0-OpenSSH_9.6"}."""

    packets_received: int
    """Packets received since the connection began: evidence the peer is alive."""

    transport: Any
    """
    The TCP connection under SSH, or C{None}: Twisted's C{ITCPTransport}, which is also an
    C{IConsumer} (when it provides that interface, the service registers as its streaming
    producer) and carries Twisted's C{disconnecting} flag.
    """

    def sendPacket(messageType: int, payload: bytes) -> None:
        """Send one message; during a key re-exchange, it waits for the new keys."""

    def send_channel_data(recipient: int, data: bytes | memoryview, max_packet: int) -> None:
        """Send C{data} as C{CHANNEL_DATA} packets of at most C{max_packet} bytes each."""

    def sendDisconnect(reason: int, desc: bytes) -> None:
        """Send C{SSH_MSG_DISCONNECT} and close the connection; the caller has logged why."""

    def batch() -> AbstractContextManager[None]:
        """A context whose packets are written together, with one send(), when it ends."""

    def sendUnimplemented() -> None:
        """Answer the packet being handled with C{SSH_MSG_UNIMPLEMENTED}."""
