"""
The endpoint L{TunnelService} gives L{ClientService}: a connection counts as made only once its
tunnel is ready (authenticated, every forward answered) within C{ConnectTimeout}.

ClientService then does the bookkeeping itself: its count of failed attempts, which paces the
backoff, restarts only when a tunnel gets ready, and an attempt that falls short of that fails
like a refused TCP connect, once its connection has closed.

Not C{ClientService(prepareConnection=)}: there the TCP connection is ClientService's as soon
as it is made, and one that closes before the prepare step succeeded (every failed attempt of
ours: a refused login, a dead handshake) reaches its state machine in a state with no transition
for a lost connection, and C{NoTransition} is raised into the reactor (Twisted 26.10).  Here
ClientService is handed a connection only once the tunnel is ready: a L{TunnelHandle}, whose
transport ends the tunnel the way the service chose when ClientService stops.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import (
    IAddress,
    IProtocol,
    IProtocolFactory,
    IReactorTime,
    IStreamClientEndpoint,
    ITransport,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

from twisted_rfwd.client.transport import ClientTransport
from twisted_rfwd.client.tunnel import Tunnel
from twisted_rfwd.errors import RfwdError

__all__ = ["ReadyTunnelEndpoint", "TunnelHandle", "tunnel_handles"]


class TunnelHandle(Protocol):
    """What ClientService holds while a tunnel is up; it hears when the tunnel has ended."""


def tunnel_handles() -> Factory[TunnelHandle]:
    """The protocol factory to give ClientService along with a L{ReadyTunnelEndpoint}."""
    factory = Factory.forProtocol(TunnelHandle)
    factory.noisy = False
    return factory


@implementer(ITransport)
class _TunnelLink:
    """A handle's transport: closing it ends the tunnel with C{end}; nothing is written."""

    def __init__(
        self, tunnel: Tunnel, client: ClientTransport, end: Callable[[Tunnel], object]
    ) -> None:
        self._tunnel = tunnel
        self._client = client
        self._end = end

    def loseConnection(self) -> None:
        self._end(self._tunnel)

    def write(self, data: bytes) -> None:
        raise NotImplementedError("a tunnel handle carries no bytes")

    def writeSequence(self, data: Iterable[bytes]) -> None:
        raise NotImplementedError("a tunnel handle carries no bytes")

    def getPeer(self) -> IAddress:
        assert self._client.transport is not None
        peer: IAddress = self._client.transport.getPeer()
        return peer

    def getHost(self) -> IAddress:
        assert self._client.transport is not None
        host: IAddress = self._client.transport.getHost()
        return host


class _TransportFactory(Factory):
    """Builds the SSH transport of one attempt, with a fresh tunnel from C{new_tunnel}."""

    noisy = False

    def __init__(self, new_tunnel: Callable[[], Tunnel]) -> None:
        self._new_tunnel = new_tunnel
        self.tunnel: Tunnel | None = None

    def buildProtocol(self, addr: object) -> ClientTransport:
        self.tunnel = self._new_tunnel()
        return ClientTransport(self.tunnel)


@implementer(IStreamClientEndpoint)
class ReadyTunnelEndpoint:
    """
    Connects C{endpoint} with a new tunnel from C{new_tunnel} and fires once the tunnel is
    ready; otherwise fails, after the tunnel closed, with the reason it closed.  A tunnel not
    ready C{ready_within} seconds after its TCP connection was made is dropped.  C{end} is how
    a tunnel is ended when ClientService stops (or cancels an attempt).  A TCP connect that
    fails fails the attempt with what C{connect_failed} makes of it (ssh's sentence, say).
    """

    def __init__(
        self,
        endpoint: IStreamClientEndpoint,
        new_tunnel: Callable[[], Tunnel],
        end: Callable[[Tunnel], object],
        clock: IReactorTime,
        ready_within: float,
        connect_failed: Callable[[Failure], BaseException] | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.new_tunnel = new_tunnel
        self.end = end
        self.clock = clock
        self.ready_within = ready_within
        self.connect_failed = connect_failed

    def __repr__(self) -> str:
        # ClientService names its endpoint when it schedules a retry: the server's, as before.
        return repr(self.endpoint)

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        return _Attempt(self, protocolFactory).result


class _Attempt:
    """One connection attempt: TCP connect, then wait for the tunnel to be ready."""

    def __init__(self, endpoint: ReadyTunnelEndpoint, protocolFactory: IProtocolFactory) -> None:
        self._endpoint = endpoint
        self._protocol_factory = protocolFactory
        self._factory = _TransportFactory(endpoint.new_tunnel)
        self._waiting: Deferred[Any] | None = None
        self.result: Deferred[IProtocol] = Deferred(self._cancel)
        self._connecting = endpoint.endpoint.connect(self._factory)
        self._connecting.addErrback(self._connect_failed)
        self._connecting.addCallback(self._connected).addBoth(self._settle)

    def _connected(self, client: IProtocol) -> Deferred[IProtocol]:
        tunnel = self._factory.tunnel
        assert tunnel is not None and isinstance(client, ClientTransport)
        endpoint = self._endpoint

        def too_slow(result: Any, timeout: float) -> Any:
            tunnel.peer_disconnected(f"no tunnel within ConnectTimeout ({timeout:g} s)")
            tunnel.abort()
            return result

        waiting = tunnel.when_ready().addTimeout(
            endpoint.ready_within, endpoint.clock, onTimeoutCancel=too_slow
        )
        self._waiting = waiting
        return waiting.addCallbacks(
            lambda _: self._hand_over(tunnel, client), lambda _: self._after_close(tunnel)
        )

    def _connect_failed(self, failure: Failure) -> Failure:
        """No TCP connection: the reason, as C{connect_failed} words it (not when cancelled)."""
        describe = self._endpoint.connect_failed
        if describe is None or self.result.called or failure.check(CancelledError):
            return failure
        return Failure(describe(failure))

    def _after_close(self, tunnel: Tunnel) -> Deferred[IProtocol]:
        """Fail with the reason the tunnel closed, once it has (and its owner has heard)."""

        def closed(reason: RfwdError) -> IProtocol:
            raise reason

        return tunnel.when_closed().addCallback(closed)

    def _hand_over(self, tunnel: Tunnel, client: ClientTransport) -> IProtocol:
        """The tunnel is ready: a handle for ClientService, told when the tunnel ends."""
        link = _TunnelLink(tunnel, client, self._endpoint.end)
        handle = self._protocol_factory.buildProtocol(link.getPeer())
        assert handle is not None
        handle.makeConnection(link)
        tunnel.when_closed().addCallback(lambda reason: handle.connectionLost(Failure(reason)))
        return handle

    def _settle(self, outcome: IProtocol | Failure) -> None:
        if self.result.called:
            return  # cancelled: ClientService has moved on
        if isinstance(outcome, Failure):
            self.result.errback(outcome)
        else:
            self.result.callback(outcome)

    def _cancel(self, _: Deferred[IProtocol]) -> None:
        """ClientService is stopping: give up the TCP connect, or end the half-made tunnel."""
        tunnel = self._factory.tunnel
        if tunnel is None:
            self._connecting.cancel()
            return
        if self._waiting is not None:
            self._waiting.cancel()  # and its ConnectTimeout with it
        self._endpoint.end(tunnel)
