"""
The client's C{ssh-connection} service: requests the forwards, and turns each
C{forwarded-tcpip} channel into a TCP connection to the forward's destination.

OpenSSH's Unix-socket forwards (its PROTOCOL, "streamlocal"): a forward whose server end is a
socket path is requested with C{streamlocal-forward@openssh.com} and its connections arrive as
C{forwarded-streamlocal@openssh.com} channels, matched by the path; a forward whose destination
is a socket path (C{-R port:/local.sock}) connects each channel to that Unix socket.

A channel is matched to its forward by the exact address string we asked for and the real port,
as OpenSSH does, and refused otherwise, even on a port we forward; it is confirmed only once the
destination accepted the connection, and a failed connect is answered with C{CONNECT_FAILED} and
the operating system's reason.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.interfaces import IConnector
from twisted.internet.protocol import ClientFactory, Factory
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import Interface

from twisted_rfwd.client.config import ClientConfig
from twisted_rfwd.client.connect_errors import connect_error_text
from twisted_rfwd.client.interfaces import IConnectionOwner
from twisted_rfwd.client.socks import accept_socks_channel
from twisted_rfwd.errors import ChannelOpenFailed
from twisted_rfwd.protocol import wire
from twisted_rfwd.protocol.addresses import host_port
from twisted_rfwd.protocol.policy import is_ip_literal
from twisted_rfwd.protocol.spec import RemoteForward
from twisted_rfwd.ssh.channel import Channel
from twisted_rfwd.ssh.mux import ChannelMux
from twisted_rfwd.ssh.relay import ChannelRelay

__all__ = [
    "DESTINATION_CONNECT_TIMEOUT",
    "ForwardingClientConnection",
    "IStreamLocalOwner",
    "connect_destination",
    "connect_error_text",
]

DESTINATION_CONNECT_TIMEOUT = 30.0


@lru_cache(maxsize=256)
def _numeric(host: str) -> bool:
    return is_ip_literal(host)


_LOGGED_ADDRESS_CHARS = 64


def _bounded_repr(text: str) -> str:
    """A peer's string for a log line: quoted, escaped, and cut short (the server chooses it)."""
    if len(text) <= _LOGGED_ADDRESS_CHARS:
        return repr(text)
    return repr(text[:_LOGGED_ADDRESS_CHARS]) + f"... ({len(text)} characters)"


class _DestinationRelay(ChannelRelay):
    """The relay that also tells its factory the destination accepted the connection."""

    def __init__(self, channel: Channel, factory: _DestinationFactory) -> None:
        super().__init__(channel)
        self._factory = factory

    def connectionMade(self) -> None:
        super().connectionMade()
        if not self._factory.result.called:
            self._factory.result.callback(self)


class _DestinationFactory(ClientFactory):
    """One connect to a numeric destination: quieter and lighter than an endpoint."""

    noisy = False

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self.connector: IConnector | None = None
        self.result: Deferred[ChannelRelay] = Deferred(self._cancel)

    def _cancel(self, _: Deferred[ChannelRelay]) -> None:
        if self.connector is not None:
            self.connector.stopConnecting()

    def buildProtocol(self, addr: object) -> ChannelRelay:
        return _DestinationRelay(self.channel, self)

    def clientConnectionFailed(self, connector: IConnector, reason: Failure) -> None:
        if not self.result.called:
            self.result.errback(reason)


class IStreamLocalOwner(Interface):
    """An owner (L{IConnectionOwner}) that also has forwards listening on Unix sockets."""

    def forward_for_path(path: str) -> RemoteForward | None:
        """The listening forward a C{forwarded-streamlocal} channel for C{path} belongs to."""


def connect_socket(reactor: Any, path: str, channel: Channel) -> Deferred[ChannelRelay]:
    """Connect a forward's Unix-socket destination and relay C{channel} there."""
    factory = _DestinationFactory(channel)
    factory.connector = reactor.connectUNIX(path, factory, timeout=DESTINATION_CONNECT_TIMEOUT)
    return factory.result


def connect_destination(
    reactor: Any, host: str, port: int, channel: Channel
) -> Deferred[ChannelRelay]:
    """Connect a forward's destination and relay C{channel} there; names are resolved."""
    if _numeric(host):
        factory = _DestinationFactory(channel)
        factory.connector = reactor.connectTCP(
            host, port, factory, timeout=DESTINATION_CONNECT_TIMEOUT
        )
        return factory.result
    named = Factory.forProtocol(lambda: ChannelRelay(channel))
    named.noisy = False
    endpoint = HostnameEndpoint(reactor, host, port, timeout=DESTINATION_CONNECT_TIMEOUT)
    connecting: Deferred[Any] = endpoint.connect(named)
    return connecting


class ForwardingClientConnection(ChannelMux):
    """
    Serves the forwards of one tunnel: C{owner} is told when the service starts and when the
    server stops answering, and says which forward a channel belongs to.
    """

    _log = Logger()

    def __init__(self, reactor: Any, config: ClientConfig, owner: IConnectionOwner) -> None:
        super().__init__(reactor, window_size=config.window_size, max_packet=config.max_packet)
        self.reactor = reactor
        self._config = config
        self._owner = owner
        self._accepting = True

    def serviceStarted(self) -> None:
        self._owner.connection_started(self)

    def stop_accepting(self) -> None:
        """Refuse new forwarded connections from now on (the client is stopping)."""
        self._accepting = False

    @property
    def open_channel_count(self) -> int:
        """How many forwarded connections are open."""
        return len(self.channels)

    def request_forward(self, spec: RemoteForward) -> Deferred[int]:
        """Ask for one forward; fires with the port the server listens on (0 for a socket)."""
        if spec.listen_path is not None:
            asked = self.send_global_request(
                b"streamlocal-forward@openssh.com", wire.StreamlocalForward(spec.listen_path).pack()
            )
            return asked.addCallback(lambda _: 0)
        d = self.send_global_request(
            b"tcpip-forward", wire.TcpipForward(spec.request_address, spec.listen_port).pack()
        )
        if spec.listen_port == 0:
            return d.addCallback(wire.parse_allocated_port)
        return d.addCallback(lambda _: spec.listen_port)

    def cancel_forward(self, spec: RemoteForward, port: int) -> Deferred[bytes]:
        if spec.listen_path is not None:
            return self.send_global_request(
                b"cancel-streamlocal-forward@openssh.com",
                wire.StreamlocalForward(spec.listen_path).pack(),
            )
        return self.send_global_request(
            b"cancel-tcpip-forward", wire.TcpipForward(spec.request_address, port).pack()
        )

    def peer_not_responding(self, silent_for: float) -> None:
        config = self._config
        self._owner.peer_disconnected(
            f"Timeout, server {config.host} not responding "
            f"({config.server_alive_count_max} keepalives unanswered)"
        )
        super().peer_not_responding(silent_for)

    def global_request_received(self, name: bytes, data: bytes) -> bytes | None:
        # keepalive@openssh.com gets REQUEST_FAILURE, which OpenSSH counts as "alive";
        # hostkeys-00@openssh.com wants no reply and needs no action.
        return None

    def channel_open_requested(
        self, channel_type: bytes, data: bytes, channel: Channel
    ) -> Deferred[Any]:
        if channel_type == b"forwarded-streamlocal@openssh.com":
            return self._open_streamlocal(wire.ForwardedStreamlocal.parse(data), channel)
        if channel_type != b"forwarded-tcpip":
            raise ChannelOpenFailed(
                wire.OPEN_ADMINISTRATIVELY_PROHIBITED,
                f"rfwd-client accepts only forwarded-tcpip and forwarded-streamlocal channels, "
                f"not {channel_type.decode('ascii', 'replace')}",
            )
        request = wire.ForwardedTcpip.parse(data)
        if not self._accepting:
            raise ChannelOpenFailed(
                wire.OPEN_ADMINISTRATIVELY_PROHIBITED, "rfwd-client is stopping"
            )
        spec = self._owner.forward_for(request.connected_address, request.connected_port)
        if spec is None:
            # ssh answers ADMINISTRATIVELY_PROHIBITED too (its text is "open failed").
            self._log.warn(
                "Refused forwarded connection: the server requests forwarding for unknown "
                "listen address {address} port {port}",
                address=_bounded_repr(request.connected_address),
                port=request.connected_port,
            )
            raise ChannelOpenFailed(wire.OPEN_ADMINISTRATIVELY_PROHIBITED, "unknown listen_port")
        if spec.dynamic:
            # -R [bind:]port: we are the SOCKS server; the request is the channel's data.
            reactor = self.reactor
            return accept_socks_channel(
                reactor,
                channel,
                self._config.permit_remote_open,
                lambda host, port, ch: connect_destination(reactor, host, port, ch),
                host_port(request.originator_address, request.originator_port),
                request.connected_port,
            )
        return self._connect(spec, request, channel)

    def _connect(
        self, spec: RemoteForward, request: wire.ForwardedTcpip, channel: Channel
    ) -> Deferred[Any]:
        handler = self._config.channel_handler
        if handler is not None:
            # An rfwd: endpoint: the channel goes to a protocol in this process.
            handled: Deferred[Any] = maybeDeferred(handler, spec, request, channel)
            return handled
        return self._connect_to(spec, request, channel)

    def _open_streamlocal(
        self, request: wire.ForwardedStreamlocal, channel: Channel
    ) -> Deferred[Any]:
        """A connection to a socket the server listens on for us (C{-R /remote.sock:...})."""
        if not self._accepting:
            raise ChannelOpenFailed(
                wire.OPEN_ADMINISTRATIVELY_PROHIBITED, "rfwd-client is stopping"
            )
        owner = IStreamLocalOwner(self._owner, None)
        spec = owner.forward_for_path(request.path) if owner is not None else None
        if spec is None:
            # As ssh: only a path we asked for, never any other.
            self._log.warn(
                "Refused forwarded connection: the server requests forwarding for unknown "
                "Unix socket {path}",
                path=_bounded_repr(request.path),
            )
            raise ChannelOpenFailed(wire.OPEN_ADMINISTRATIVELY_PROHIBITED, "unknown listen path")
        return self._connect_to(spec, f"on remote socket {spec.listen_path}", channel)

    def _connect_to(
        self, spec: RemoteForward, opened: wire.ForwardedTcpip | str, channel: Channel
    ) -> Deferred[Any]:
        """
        Connect the forward's destination (a host and port, or a Unix socket); C{opened} is the
        channel's request, or where it came from, described only for a failure's log line.
        """
        d: Deferred[Any]
        if spec.host_path is not None:
            d = connect_socket(self.reactor, spec.host_path, channel)
        else:
            d = connect_destination(self.reactor, spec.host, spec.host_port, channel)

        def failed(failure: Failure) -> Failure:
            reason = connect_error_text(failure)
            if isinstance(opened, str):
                where = opened
            else:
                origin = host_port(opened.originator_address, opened.originator_port)
                where = f"from {origin} on remote port {opened.connected_port}"
            self._log.warn(
                "Forwarded connection {where}: connect to {destination} failed: {reason}",
                where=where,
                destination=spec.destination,
                reason=reason,
            )
            return Failure(ChannelOpenFailed(wire.OPEN_CONNECT_FAILED, reason))

        return d.addErrback(failed)
