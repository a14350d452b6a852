"""
What both ends change in Conch's SSH transport: algorithms, banner, socket options, and how a
peer's garbage is handled.

Key exchange, host-key signatures and the packet layer are Conch's
(L{twisted.conch.ssh.transport}); this module only narrows and orders what is offered, and makes
sure a message that fails to parse ends the connection with a reason instead of a traceback.
"""

from __future__ import annotations

from typing import Any

from twisted.conch.ssh.transport import DISCONNECT_PROTOCOL_ERROR, SSHTransportBase
from twisted.internet.interfaces import ITCPTransport
from twisted.logger import Logger

from twisted_rfwd._address import describe_address
from twisted_rfwd._version import __version__
from twisted_rfwd.errors import RemoteProtocolError

__all__ = [
    "CIPHERS",
    "KEY_EXCHANGES",
    "MACS",
    "VERSION_STRING",
    "TransportMixin",
    "set_tcp_nodelay",
]

# Not "OpenSSH_*": OpenSSH peers change their behaviour by the banner they see.
VERSION_STRING = f"SSH-2.0-rfwd_{__version__}".encode("ascii")

# No mlkem768x25519-sha256: Conch implements it for servers only, and OpenSSH 9.2 (what we can
# test against here) lacks it.  curve25519 is what OpenSSH 10 negotiates without it.
KEY_EXCHANGES: list[bytes] = [
    kex
    for kex in (
        b"curve25519-sha256",
        b"curve25519-sha256@libssh.org",
        b"ecdh-sha2-nistp256",
        b"ecdh-sha2-nistp384",
        b"ecdh-sha2-nistp521",
    )
    if kex in SSHTransportBase.supportedKeyExchanges
]
CIPHERS: list[bytes] = [b"aes128-ctr", b"aes192-ctr", b"aes256-ctr"]
MACS: list[bytes] = [b"hmac-sha2-256", b"hmac-sha2-512"]
# The signature algorithms we accept for host keys and user keys: no SHA-1, no DSA.
PUBLIC_KEY_ALGORITHMS: list[bytes] = [
    b"ssh-ed25519",
    b"ecdsa-sha2-nistp256",
    b"ecdsa-sha2-nistp384",
    b"ecdsa-sha2-nistp521",
    b"rsa-sha2-512",
    b"rsa-sha2-256",
]


def set_tcp_nodelay(transport: object) -> None:
    """Turn Nagle off where the transport is TCP: forwarded traffic is interactive."""
    tcp = ITCPTransport(transport, None)
    if tcp is not None:
        tcp.setTcpNoDelay(True)


class TransportMixin:
    """Mixed in before Conch's client or server transport class."""

    _log = Logger()

    ourVersionString = VERSION_STRING
    supportedKeyExchanges: list[bytes] = KEY_EXCHANGES
    supportedCiphers: list[bytes] = CIPHERS
    supportedMACs: list[bytes] = MACS
    supportedCompressions: list[bytes] = [b"none"]

    transport: Any

    def connectionMade(self) -> None:
        set_tcp_nodelay(self.transport)
        super().connectionMade()  # type: ignore[misc]

    def dataReceived(self, data: bytes) -> None:
        try:
            super().dataReceived(data)  # type: ignore[misc]
        except RemoteProtocolError as e:
            self._protocol_error(str(e))
        except Exception:
            # Conch's parsers raise struct.error, IndexError, ValueError... on garbage.  Say so
            # once, with the traceback for whoever debugs it, and drop only this connection.
            self._log.failure("Could not handle a message from {peer}", peer=self._peer())
            self._protocol_error("could not handle a message")

    def _protocol_error(self, message: str) -> None:
        self._log.error(
            "Protocol error from {peer}: {message}; disconnecting",
            peer=self._peer(),
            message=message,
        )
        transport: SSHTransportBase = self  # type: ignore[assignment]
        transport.sendDisconnect(DISCONNECT_PROTOCOL_ERROR, message.encode("utf-8"))

    def _peer(self) -> str:
        return describe_address(self.transport.getPeer())
