"""
The C{rfwd:} server endpoint: any Twisted program listens on HostB, through an SSH server, with
no local port and no second process.

C{serverFromString(reactor, "rfwd:host=H:port=P:user=U:identity=PATH:knownHosts=PATH:
remotePort=N")} (the plugin in C{twisted/plugins/twisted_rfwd_endpoint.py}) gives an
L{RfwdServerEndpoint}.  Its C{listen(factory)} runs a L{TunnelService} with one forward, whose
channels are handed to C{factory}'s protocols (L{ClientConfig.channel_handler}) instead of being
connected to a destination; it fires once the forward listens, with an L{RfwdListeningPort}
whose C{getHost()} is the address bound on HostB.  A first attempt that fails (no connection,
unknown host key, refused login or forward) fails C{listen}, as a TCP listen fails at once;
after that the service reconnects and asks for the forward again, as rfwd-client does.

Each forwarded connection runs over a L{ChannelTransport}, which behaves like Twisted's TCP
transport for the protocol, and is the channel's local stream on the other side (the two faces
are two objects, because both say C{pauseProducing} and mean opposite directions):

  - the protocol's writes go to the channel while it takes them, and wait here while it is
    paused (no window, SSH socket full); the protocol's producer is paused meanwhile;
  - the peer's data is handed to C{dataReceived}; while the protocol paused reading, it waits
    here and the channel grants the peer no window credit, so at most one window waits;
  - C{loseConnection} sends EOF once everything written has gone, then CLOSE; the peer's EOF
    is C{readConnectionLost} for an C{IHalfCloseableProtocol}, a close for any other, as TCP does;
  - C{connectionLost} always comes on a later reactor turn, never from inside the call that
    caused it.
"""

from __future__ import annotations

import getpass
import os
from collections import deque
from collections.abc import Iterable
from dataclasses import replace
from typing import Any, cast

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionAborted, ConnectionDone, ConnectionLost
from twisted.internet.interfaces import (
    IConsumer,
    IDelayedCall,
    IHalfCloseableProtocol,
    IListeningPort,
    IProducer,
    IProtocol,
    IProtocolFactory,
    IPushProducer,
    IReactorTime,
    IStreamServerEndpoint,
    ITCPTransport,
)
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from twisted_rfwd.client.config import ClientConfig, HostKeyPolicy
from twisted_rfwd.client.forwards import ForwardStatus
from twisted_rfwd.client.identity import default_identity_paths, load_identity
from twisted_rfwd.client.service import TunnelService, TunnelState
from twisted_rfwd.errors import ChannelOpenFailed, ConfigError, ConnectionClosed, ForwardRefused
from twisted_rfwd.protocol import wire
from twisted_rfwd.protocol.spec import RemoteForward
from twisted_rfwd.protocol.units import parse_seconds
from twisted_rfwd.ssh.channel import Channel

__all__ = [
    "ChannelTransport",
    "EndpointStringError",
    "RfwdListeningPort",
    "RfwdServerEndpoint",
    "attach_protocol",
    "parse_rfwd_endpoint",
]

_log = Logger()

Address = IPv4Address | IPv6Address


def _address(host: str, port: int) -> Address:
    if ":" in host:
        return IPv6Address("TCP", host, port)
    return IPv4Address("TCP", host, port)


def _bound_host(request_address: str) -> str:
    """Where the server listens for a C{tcpip-forward} address string, as an address."""
    if request_address == "localhost":
        return "127.0.0.1"
    if request_address in ("", "*"):
        return "0.0.0.0"
    return request_address


# -- the transport of one forwarded connection ----------------------------------------------------


class _StreamSide:
    """The face the L{Channel} sees (its L{twisted_rfwd.ssh.channel.LocalStream})."""

    def __init__(self, transport: ChannelTransport) -> None:
        self._t = transport

    def write(self, data: bytes) -> None:
        self._t._peer_data(data)

    def loseConnection(self) -> None:
        self._t._channel_closing()

    def loseWriteConnection(self) -> None:
        self._t._peer_eof()

    def abortConnection(self) -> None:
        self._t._channel_closing()

    def pauseProducing(self) -> None:
        self._t._pause_outbound()

    def resumeProducing(self) -> None:
        self._t._resume_outbound()

    def registerProducer(self, producer: IPushProducer, streaming: bool) -> None:
        self._t._credit = producer

    def unregisterProducer(self) -> None:
        # The channel grants no more credit after this (EOF or close): nothing to release.
        self._t._credit = None
        self._t._credit_held = False


@implementer(ITCPTransport, IConsumer, IPushProducer)
class ChannelTransport:
    """
    A forwarded channel as a TCP-like transport for C{protocol}; give L{stream} to
    L{Channel.attach} and call L{connect} once the channel is open.
    """

    def __init__(
        self,
        clock: IReactorTime,
        channel: Channel,
        protocol: IProtocol,
        peer: Address,
        host: Address,
    ) -> None:
        self._clock = clock
        self._channel = channel
        self.protocol = protocol
        self._peer = peer
        self._host = host
        self.stream = _StreamSide(self)
        self.connected = False
        self.disconnecting = False
        self.disconnected = False
        self._nodelay = True
        self._keepalive = False
        # The protocol's direction, to the channel.
        self._outbound: deque[bytes] = deque()
        self._channel_paused = False
        self._eof_wanted = False
        self._eof_written = False
        # A pull producer is driven with resumeProducing alone.
        self._producer: IPushProducer | None = None
        self._streaming = True
        self._producer_paused = False
        self._pull: IDelayedCall | None = None
        # The peer's direction, to the protocol.
        self._credit: IPushProducer | None = None
        self._credit_held = False
        self._inbound: deque[bytes] = deque()
        self._reading_paused = False
        self._eof_to_deliver = False
        self._close_to_deliver = False
        self._finishing: IDelayedCall | None = None

    def connect(self) -> None:
        """The channel is open: the protocol's C{connectionMade}."""
        if self.disconnected or self._finishing is not None:
            return
        self.connected = True
        self.protocol.makeConnection(self)

    # -- ITransport, for the protocol ---------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self.disconnecting or self.disconnected or self._eof_wanted or not data:
            return
        if self._channel_paused or self._outbound:
            self._outbound.append(bytes(data))
            return
        self._channel.write(bytes(data))

    def writeSequence(self, data: Iterable[bytes]) -> None:
        self.write(b"".join(data))

    def loseConnection(self) -> None:
        """Close once everything written has gone: EOF, then CLOSE."""
        if self.disconnecting or self.disconnected:
            return
        self.disconnecting = True
        # As TCP stops reading: what the peer still sends is dropped.
        self._inbound.clear()
        self._release_credit()
        self.loseWriteConnection()

    def loseWriteConnection(self) -> None:
        """Half-close: EOF once everything written has gone; reading goes on."""
        if self._eof_wanted or self.disconnected:
            return
        self._eof_wanted = True
        if not self._channel_paused and not self._outbound:
            self._write_eof()

    def abortConnection(self) -> None:
        """Drop what waits and close the channel at once, without EOF."""
        if self.disconnected:
            return
        self.disconnecting = True
        self._outbound.clear()
        self._inbound.clear()
        self._finish_soon(Failure(ConnectionAborted()))

    def getPeer(self) -> Address:
        """Who connected to the forwarded port, on HostB (the channel's originator)."""
        return self._peer

    def getHost(self) -> Address:
        """The forwarded address on HostB."""
        return self._host

    def setTcpNoDelay(self, enabled: bool) -> None:
        self._nodelay = enabled

    def getTcpNoDelay(self) -> bool:
        return self._nodelay

    def setTcpKeepAlive(self, enabled: bool) -> None:
        self._keepalive = enabled

    def getTcpKeepAlive(self) -> bool:
        return self._keepalive

    # -- IConsumer: the protocol's producer, paused while the channel is ------------------------

    def registerProducer(self, producer: IProducer, streaming: bool) -> None:
        if self._producer is not None:
            raise RuntimeError(
                f"Cannot register producer {producer!r}, because producer "
                f"{self._producer!r} was never unregistered."
            )
        if self.disconnected:
            producer.stopProducing()
            return
        self._producer = cast(IPushProducer, producer)
        self._streaming, self._producer_paused = streaming, False
        if streaming:
            if self._channel_paused:
                self._pause_producer()
        elif not self._channel_paused:
            self._pull_soon()

    def unregisterProducer(self) -> None:
        self._producer = None
        self._producer_paused = False
        self._cancel_pull()

    # -- IPushProducer: the protocol pauses reading ---------------------------------------------

    def pauseProducing(self) -> None:
        self._reading_paused = True
        self._hold_credit()

    def resumeProducing(self) -> None:
        self._reading_paused = False
        self._deliver_inbound()

    def stopProducing(self) -> None:
        self.loseConnection()

    # -- from the channel: the peer's direction -----------------------------------------------

    def _peer_data(self, data: bytes) -> None:
        if self.disconnecting or self.disconnected:
            return
        if self._reading_paused or self._inbound or not self.connected:
            self._inbound.append(data)
            self._hold_credit()
            return
        self.protocol.dataReceived(data)

    def _peer_eof(self) -> None:
        self._eof_to_deliver = True
        self._deliver_inbound()

    def _channel_closing(self) -> None:
        """The channel is done (the peer closed, or the SSH connection ended)."""
        self._close_to_deliver = True
        self._deliver_inbound()

    def _deliver_inbound(self) -> None:
        """Hand over what waits, then the EOF or close behind it, unless reading is paused."""
        if self.disconnected:
            return
        if self.disconnecting:
            self._inbound.clear()
        while self._inbound and not self._reading_paused and self.connected:
            self.protocol.dataReceived(self._inbound.popleft())
            if self.disconnecting or self.disconnected:
                self._inbound.clear()
        if self.connected and (self._inbound or self._reading_paused):
            return
        self._release_credit()
        if self._eof_to_deliver:
            self._eof_to_deliver = False
            self._read_eof()
        if self._close_to_deliver:
            self._close_to_deliver = False
            eof = self._channel.eof_received
            self._finish_soon(Failure(ConnectionDone() if eof else ConnectionLost()))

    def _read_eof(self) -> None:
        half = IHalfCloseableProtocol(self.protocol, None)
        if half is not None and self.connected and not self.disconnecting:
            half.readConnectionLost()
            self._channel.local_write_closed()
            return
        self._channel.local_write_closed()
        # As TCP does for a protocol that cannot half-close: the connection closes (gently).
        self.loseConnection()

    def _hold_credit(self) -> None:
        if not self._credit_held and self._credit is not None:
            self._credit_held = True
            self._credit.pauseProducing()

    def _release_credit(self) -> None:
        if self._credit_held:
            self._credit_held = False
            if self._credit is not None:
                self._credit.resumeProducing()

    # -- from the channel: the protocol's direction ---------------------------------------------

    def _pause_outbound(self) -> None:
        self._channel_paused = True
        self._pause_producer()
        self._cancel_pull()

    def _resume_outbound(self) -> None:
        self._channel_paused = False
        while self._outbound and not self._channel_paused:
            self._channel.write(self._outbound.popleft())
        if self._channel_paused:
            return
        if self._eof_wanted:
            self._write_eof()
        elif self._producer is not None:
            if not self._streaming:
                self._pull_soon()
            elif self._producer_paused:
                self._producer_paused = False
                self._producer.resumeProducing()

    def _write_eof(self) -> None:
        if not self._eof_written:
            self._eof_written = True
            self._channel.write_eof()
        if self.disconnecting:
            self._finish_soon(Failure(ConnectionDone()))

    def _pause_producer(self) -> None:
        if self._producer is not None and self._streaming and not self._producer_paused:
            self._producer_paused = True
            self._producer.pauseProducing()

    def _pull_soon(self) -> None:
        """A pull producer is asked for more on each turn while the channel takes it."""
        if self._pull is None:
            self._pull = self._clock.callLater(0, self._pull_once)

    def _pull_once(self) -> None:
        self._pull = None
        producer = self._producer
        if producer is None or self._streaming or self._channel_paused or self.disconnecting:
            return
        producer.resumeProducing()
        if self._producer is producer and not self._channel_paused:
            self._pull_soon()

    def _cancel_pull(self) -> None:
        if self._pull is not None and self._pull.active():
            self._pull.cancel()
        self._pull = None

    # -- the end --------------------------------------------------------------------------------

    def _finish_soon(self, reason: Failure) -> None:
        if self._finishing is None and not self.disconnected:
            self._finishing = self._clock.callLater(0, self._finish, reason)

    def _finish(self, reason: Failure) -> None:
        self._finishing = None
        if self.disconnected:
            return
        self.disconnected = True
        self.disconnecting = True
        self._cancel_pull()
        self._outbound.clear()
        self._inbound.clear()
        producer, self._producer = self._producer, None
        if producer is not None:
            producer.stopProducing()
        self._channel.local_connection_lost(reason)
        if self.connected:
            self.connected = False
            self.protocol.connectionLost(reason)


# -- the endpoint and its port ------------------------------------------------------------------


class _EndpointForward(RemoteForward):
    """A forward whose connections go to this process's protocol, not to a destination."""

    @property
    def destination(self) -> str:
        return "this process (rfwd: endpoint)"

    def __str__(self) -> str:
        return f"{self.request_address or '*'}:{self.listen_port} (rfwd: endpoint)"


@implementer(IListeningPort)
class RfwdListeningPort:
    """A forward on HostB that feeds C{factory}; kept up across reconnections until stopped."""

    def __init__(
        self, reactor: Any, config: ClientConfig, forward: RemoteForward, factory: IProtocolFactory
    ) -> None:
        self._reactor = reactor
        self._factory = factory
        self._forward = forward
        self.config = replace(config, forwards=[forward], channel_handler=self._channel_opened)
        self.service = TunnelService(reactor, self.config, self._fatal, on_status=self._status)
        self._ready: Deferred[IListeningPort] = Deferred(self._cancel)
        self._port: int | None = None
        self._announced: object = None
        self._stopping: Deferred[None] | None = None

    def start(self) -> Deferred[IListeningPort]:
        """Connect and ask for the forward; fires with this port once it listens."""
        self._factory.doStart()
        self.service.startService()
        return self._ready

    # -- IListeningPort -----------------------------------------------------------------------

    def startListening(self) -> None:
        """Listening starts with L{RfwdServerEndpoint.listen}; nothing to do here."""

    def stopListening(self) -> Deferred[None]:
        """Cancel the forward and stop the service (open connections drain, bounded)."""
        if self._stopping is None:
            service = self.service
            stopping = service.stopService() if service.running else succeed(None)
            self._stopping = stopping.addBoth(lambda _: self._factory.doStop())
        result: Deferred[None] = Deferred()
        self._stopping.addBoth(lambda _: result.callback(None))
        return result

    def getHost(self) -> Address:
        """The address bound on HostB; an allocated port once the server named it."""
        port = self._port if self._port is not None else self._forward.listen_port
        return _address(_bound_host(self._forward.request_address), port)

    # -- the service's news -------------------------------------------------------------------

    def _status(self, snapshot: dict[str, Any]) -> None:
        service = self.service
        tunnel = service.tunnel
        if service.state is TunnelState.CONNECTED and tunnel is not None and tunnel.forwards:
            state = tunnel.forwards[0]
            if state.status is ForwardStatus.LISTENING and state.port is not None:
                self._port = state.port
                if self._announced is not tunnel:
                    self._announced = tunnel
                    host = self.getHost()
                    _log.info(
                        "rfwd: endpoint listening on {host} port {port} of {server}",
                        host=host.host,
                        port=host.port,
                        server=self.config.host,
                    )
                if not self._ready.called:
                    self._ready.callback(self)
            elif state.status is ForwardStatus.REFUSED and not self._ready.called:
                self._give_up(ForwardRefused(str(self._forward)))
        elif service.state is TunnelState.DISCONNECTED and not self._ready.called:
            self._give_up(ConnectionClosed(service.last_error or "the SSH connection failed"))

    def _fatal(self, error: Exception) -> None:
        if not self._ready.called:
            self._ready.errback(error)
            self._factory.doStop()
            return
        _log.error("rfwd: endpoint stopped: {error}", error=str(error))

    def _give_up(self, error: Exception) -> None:
        """The first attempt failed: C{listen} fails, and nothing is retried."""
        self._ready.errback(error)
        # Not from inside the service's own callback: it may be mid-attempt.
        self._reactor.callLater(0, self._stop_quietly)

    def _stop_quietly(self) -> None:
        if self.service.running:
            self.service.stopService()
        self._factory.doStop()

    def _cancel(self, _: Deferred[IListeningPort]) -> None:
        self._reactor.callLater(0, self._stop_quietly)

    # -- forwarded connections ------------------------------------------------------------------

    def _channel_opened(
        self, spec: RemoteForward, request: wire.ForwardedTcpip, channel: Channel
    ) -> None:
        attach_protocol(self._reactor, self._factory, spec, request, channel)


def attach_protocol(
    clock: IReactorTime,
    factory: IProtocolFactory,
    spec: RemoteForward,
    request: wire.ForwardedTcpip,
    channel: Channel,
) -> ChannelTransport:
    """
    A L{ClientConfig.channel_handler}: C{channel} becomes a connection of C{factory}'s protocol,
    made once the channel is open; refused if the factory builds none.
    """
    peer = _address(request.originator_address, request.originator_port)
    protocol = factory.buildProtocol(peer)
    if protocol is None:
        raise ChannelOpenFailed(wire.OPEN_CONNECT_FAILED, "refused by the application")
    host = _address(_bound_host(spec.request_address), request.connected_port)
    transport = ChannelTransport(clock, channel, protocol, peer, host)
    channel.attach(transport.stream)
    channel.when_opened().addCallbacks(lambda _: transport.connect(), lambda _: None)
    return transport


@implementer(IStreamServerEndpoint)
class RfwdServerEndpoint:
    """Listens on C{remote_interface:remote_port} of the SSH server in C{config}."""

    def __init__(
        self,
        reactor: Any,
        config: ClientConfig,
        remote_port: int,
        remote_interface: str | None = None,
    ) -> None:
        self._reactor = reactor
        self.config = config
        self.forward = _EndpointForward(
            listen_port=remote_port, host="localhost", host_port=1, bind_address=remote_interface
        )

    def listen(self, protocolFactory: IProtocolFactory) -> Deferred[IListeningPort]:
        port = RfwdListeningPort(self._reactor, self.config, self.forward, protocolFactory)
        return port.start()


# -- the endpoint string --------------------------------------------------------------------------


class EndpointStringError(ConfigError, ValueError):
    """An C{rfwd:} endpoint string cannot be used (a ValueError, as Twisted's parsers raise)."""


_KEYWORDS = (
    "host",
    "port",
    "user",
    "identity",
    "knownHosts",
    "remotePort",
    "remoteInterface",
    "strictHostKeyChecking",
    "serverAliveInterval",
    "serverAliveCountMax",
    "connectTimeout",
)


def parse_rfwd_endpoint(reactor: Any, *args: str, **kwargs: str) -> RfwdServerEndpoint:
    """
    The endpoint for C{rfwd:} and its arguments, as Twisted splits them: keywords (see
    L{_KEYWORDS}), or the short form C{rfwd:[user@]host:remotePort} (keywords may follow).
    """
    try:
        return _parse(reactor, list(args), dict(kwargs))
    except ConfigError as e:
        raise EndpointStringError(f"rfwd: endpoint: {e}") from None


def _parse(reactor: Any, args: list[str], kwargs: dict[str, str]) -> RfwdServerEndpoint:
    unknown = sorted(set(kwargs) - set(_KEYWORDS))
    if unknown:
        raise ConfigError(f"unknown option '{unknown[0]}'; known: " + ", ".join(_KEYWORDS))
    if len(args) > 2:
        raise ConfigError("expected rfwd:[user@]host:remotePort or keyword=value options")
    if args:
        user, at, host = args[0].rpartition("@")
        _only_once(kwargs, "host", host)
        if at:
            _only_once(kwargs, "user", user)
    if len(args) == 2:
        _only_once(kwargs, "remotePort", args[1])
    host = kwargs.get("host", "")
    if not host:
        raise ConfigError("no SSH server: give host=NAME")
    if "remotePort" not in kwargs:
        raise ConfigError("no port to listen on: give remotePort=N (0 lets the server choose)")
    remote_port = _number(kwargs["remotePort"], "remotePort", 0, 65535)
    settings: dict[str, Any] = {}
    if "port" in kwargs:
        settings["port"] = _number(kwargs["port"], "port", 1, 65535)
    if "knownHosts" in kwargs:
        settings["known_hosts"] = [os.path.expanduser(kwargs["knownHosts"])]
    if "strictHostKeyChecking" in kwargs:
        settings["strict_host_key_checking"] = HostKeyPolicy.parse(kwargs["strictHostKeyChecking"])
    if "serverAliveInterval" in kwargs:
        interval = kwargs["serverAliveInterval"]
        settings["server_alive_interval"] = parse_seconds(interval, "serverAliveInterval")
    if "serverAliveCountMax" in kwargs:
        settings["server_alive_count_max"] = _number(
            kwargs["serverAliveCountMax"], "serverAliveCountMax", 1, 1_000_000
        )
    if "connectTimeout" in kwargs:
        settings["connect_timeout"] = parse_seconds(kwargs["connectTimeout"], "connectTimeout")
    config = ClientConfig(
        host=host,
        user=kwargs.get("user") or getpass.getuser(),
        identities=_identities(kwargs.get("identity")),
        **settings,
    )
    interface = kwargs.get("remoteInterface")
    return RfwdServerEndpoint(reactor, config, remote_port, interface)


def _number(text: str, what: str, low: int, high: int) -> int:
    if not (text.isascii() and text.isdigit()) or not low <= int(text) <= high:
        raise ConfigError(f"{what} must be {low} to {high}, not '{text}'")
    return int(text)


def _only_once(kwargs: dict[str, str], name: str, value: str) -> None:
    if name in kwargs:
        raise ConfigError(f"{name} is given twice")
    kwargs[name] = value


def _identities(path: str | None) -> list[Any]:
    """The key given, or ssh's default ones that exist."""
    if path is not None:
        return [load_identity(path)]
    found = [load_identity(p) for p in default_identity_paths() if os.path.exists(p)]
    if not found:
        raise ConfigError("no identity: give identity=PATH of a private key")
    return found
