"""
Remote dynamic forwarding (C{-R [bind:]port}): each C{forwarded-tcpip} channel of such a forward
carries a SOCKS handshake from the application on the server's side, and rfwd-client is the
SOCKS server, as OpenSSH's C{ssh} is.

A L{SocksStream} is the channel's local stream until the destination answers: it reads the
request (L{twisted_rfwd.protocol.socks}) from the channel's data, checks C{PermitRemoteOpen},
connects out, and only then answers the client and hands the channel to the ordinary TCP relay
(L{twisted_rfwd.ssh.relay.ChannelRelay}), with whatever the client sent after its request.  While
it connects, the channel grants the peer no more window, so what waits here stays small.  A
refused request is answered with its SOCKS error code, and the channel is closed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import error as net_error
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.interfaces import IPushProducer, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from twisted_rfwd.client.connect_errors import connect_error_text
from twisted_rfwd.protocol.addresses import host_port
from twisted_rfwd.protocol.messages import loggable
from twisted_rfwd.protocol.socks import (
    SOCKS5_CONNECTION_REFUSED,
    SOCKS5_GENERAL_FAILURE,
    SOCKS5_HOST_UNREACHABLE,
    SOCKS5_NETWORK_UNREACHABLE,
    SOCKS5_NOT_ALLOWED,
    RemoteOpenPolicy,
    SocksError,
    SocksParser,
    SocksRequest,
    failure_reply,
    success_reply,
)
from twisted_rfwd.ssh.channel import Channel
from twisted_rfwd.ssh.relay import ChannelRelay

__all__ = ["Connector", "SocksStream", "accept_socks_channel", "socks5_code"]

Connector = Callable[[str, int, Channel], "Deferred[ChannelRelay]"]
"""Connects a destination and relays the channel there (C{connection.connect_destination})."""

_log = Logger()


def socks5_code(failure: Failure) -> int:
    """The SOCKS5 reply for a failed connect to the destination."""
    if failure.check(net_error.ConnectionRefusedError):
        return SOCKS5_CONNECTION_REFUSED
    if failure.check(net_error.NoRouteError):
        return SOCKS5_NETWORK_UNREACHABLE
    if failure.check(net_error.DNSLookupError, net_error.TimeoutError, net_error.UnknownHostError):
        return SOCKS5_HOST_UNREACHABLE
    return SOCKS5_GENERAL_FAILURE


class SocksStream:
    """
    The local stream of one dynamic forward's channel while its SOCKS request is read and its
    destination connected; afterwards the TCP relay replaces it.
    """

    def __init__(
        self,
        clock: IReactorTime,
        channel: Channel,
        policy: RemoteOpenPolicy,
        connect: Connector,
        origin: str,
        remote_port: int,
    ) -> None:
        self._clock = clock
        self._channel = channel
        self._policy = policy
        self._connect = connect
        self._origin = origin
        self._remote_port = remote_port
        self._parser = SocksParser()
        self._connecting: Deferred[ChannelRelay] | None = None
        self._request: SocksRequest | None = None
        self._peer_eof = False
        self._paused = False
        self._done = False
        self._handed_off = False
        self._closed_reported = False

    # -- LocalStream, as the channel drives it ---------------------------------------------------

    def write(self, data: bytes) -> None:
        """Bytes from the SOCKS client (through the channel)."""
        if self._done:
            return
        if self._request is not None:
            # Sent after the request, before our reply: for the destination.  The channel grants
            # no window meanwhile, so this stays within what it had granted.
            self._parser.leftover += data
            return
        try:
            answer, request = self._parser.receive(data)
        except SocksError as e:
            self._refuse(e.reply, f"bad SOCKS request: {e.reason}")
            return
        if answer:
            self._channel.write(answer)
        if request is not None:
            self._start(request)

    def loseWriteConnection(self) -> None:
        """The SOCKS client sent EOF."""
        if self._request is None or self._done:
            self._close()
        else:
            self._peer_eof = True

    def loseConnection(self) -> None:
        """The channel is closing: stop connecting."""
        self._close()

    def abortConnection(self) -> None:
        self._close()

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False

    def registerProducer(self, producer: IPushProducer, streaming: bool) -> None:
        """The channel is the only producer; nothing to remember."""

    def unregisterProducer(self) -> None:
        """See L{registerProducer}."""

    # -- the request --------------------------------------------------------------------------

    def _describe(self, request: SocksRequest) -> str:
        return host_port(loggable(request.host.encode()), request.port)

    def _start(self, request: SocksRequest) -> None:
        self._request = request
        if not self._policy.permits(request.host, request.port):
            self._refuse(
                failure_reply(request.version, SOCKS5_NOT_ALLOWED),
                f"{self._describe(request)} is not permitted by PermitRemoteOpen",
            )
            return
        # Hold the peer's window until the relay takes over.
        self._channel.pauseProducing()
        d = self._connect(request.host, request.port, self._channel)
        self._connecting = d
        d.addCallbacks(self._connected, self._failed)

    def _connected(self, relay: ChannelRelay) -> None:
        """The destination accepted, and the relay is now the channel's stream: answer, splice."""
        self._connecting = None
        self._done = self._handed_off = True
        request = self._request
        assert request is not None
        transport: Any = relay.transport
        bound = transport.getHost()
        address = (getattr(bound, "host", "0.0.0.0"), getattr(bound, "port", 0))
        channel = self._channel
        if self._paused:
            transport.pauseProducing()
        channel.write(success_reply(request.version, address))
        channel.resumeProducing()
        if self._parser.leftover:
            transport.write(self._parser.leftover)
            self._parser.leftover = b""
        if self._peer_eof:
            transport.unregisterProducer()
            transport.loseWriteConnection()

    def _failed(self, failure: Failure) -> None:
        self._connecting = None
        if self._done or failure.check(CancelledError):
            return
        request = self._request
        assert request is not None
        reply = failure_reply(request.version, socks5_code(failure))
        self._refuse(
            reply, f"connect to {self._describe(request)} failed: {connect_error_text(failure)}"
        )

    def _refuse(self, reply: bytes, reason: str) -> None:
        """Answer with C{reply} (if any), send EOF, and close the channel."""
        _log.warn(
            "SOCKS connection from {origin} on remote port {port}: {reason}",
            origin=self._origin,
            port=self._remote_port,
            reason=reason,
        )
        channel = self._channel
        if reply:
            channel.write(reply)
        channel.write_eof()
        if channel.eof_sent or not channel.is_open:
            self._close()
        else:
            # The reply waits for window: the channel closes once the client has it and ends.
            self._done = True

    def _close(self) -> None:
        """Stop connecting, and tell the channel its stream is gone (once, on a later turn)."""
        if self._handed_off:
            return
        self._done = True
        connecting, self._connecting = self._connecting, None
        if connecting is not None:
            connecting.cancel()
        if not self._closed_reported:
            self._closed_reported = True
            self._clock.callLater(0, self._channel.local_connection_lost, None)


def accept_socks_channel(
    clock: IReactorTime,
    channel: Channel,
    policy: RemoteOpenPolicy,
    connect: Connector,
    origin: str,
    remote_port: int,
) -> Deferred[None]:
    """
    Take a dynamic forward's channel: confirmed at once (as ssh does), its data is the SOCKS
    request.
    """
    channel.attach(SocksStream(clock, channel, policy, connect, origin, remote_port))
    return succeed(None)
