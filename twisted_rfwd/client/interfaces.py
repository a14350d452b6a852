"""
What the protocol objects of one client connection report to the tunnel that owns them.

The transport and the C{ssh-connection} service hold their owner only as one of these interfaces,
so they never reach into the tunnel, and a test can hand them a recorder instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.python.failure import Failure
from zope.interface import Attribute, Interface

from twisted_rfwd.errors import RfwdError
from twisted_rfwd.protocol.spec import RemoteForward

if TYPE_CHECKING:
    from twisted_rfwd.client.connection import ForwardingClientConnection
    from twisted_rfwd.client.transport import ClientTransport

__all__ = ["IConnectionOwner", "ITransportOwner"]


class IConnectionOwner(Interface):
    """What the client's C{ssh-connection} service tells its owner, and the one thing it asks."""

    def connection_started(connection: ForwardingClientConnection) -> None:
        """Authenticated: the service runs and the forwards may be requested."""

    def forward_for(address: str, port: int) -> RemoteForward | None:
        """The listening forward a C{forwarded-tcpip} channel names, or C{None} to refuse it."""

    def peer_disconnected(description: str) -> None:
        """Why the server is gone, in words for the user (its message, or its silence)."""


class ITransportOwner(IConnectionOwner):
    """What the client's SSH transport needs from the tunnel it carries, and reports to it."""

    reactor = Attribute("The reactor the connection runs on (IReactorTime and IReactorTCP).")
    config = Attribute("The ClientConfig of this connection.")
    known_hosts = Attribute("The KnownHosts that checks the server's host key.")

    def transport_connected(transport: ClientTransport) -> None:
        """The TCP connection is made; C{transport} is how the owner disconnects it."""

    def fail(error: RfwdError) -> None:
        """A failure retrying cannot fix (host key, authentication)."""

    def connection_lost(reason: Failure) -> None:
        """The connection has ended."""
