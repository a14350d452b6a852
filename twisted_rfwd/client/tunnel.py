"""
A L{Tunnel} is one SSH connection to the server with the remote forwards it carries: what
L{connect} gives an embedding program, and what the twistd service watches.

It collects what the protocol objects learn (a host key problem, an authentication refusal, the
server's disconnect message, each forward's outcome) so the caller gets one precise reason when
something fails, instead of "connection lost".
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, fail, gatherResults
from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from twisted_rfwd.client.config import ClientConfig
from twisted_rfwd.client.connect_errors import connect_failure
from twisted_rfwd.client.connection import ForwardingClientConnection, IStreamLocalOwner
from twisted_rfwd.client.forwards import ForwardState, ForwardStatus, ForwardTable
from twisted_rfwd.client.interfaces import ITransportOwner
from twisted_rfwd.client.known_hosts import KnownHosts
from twisted_rfwd.client.transport import ClientTransport
from twisted_rfwd.errors import ConnectionClosed, ForwardRefused, RfwdError
from twisted_rfwd.protocol.spec import RemoteForward
from twisted_rfwd.ssh.mux import GlobalRequestFailed
from twisted_rfwd.ssh.outcome import Outcome

# ClientTransport, ForwardState and ForwardStatus live in their own modules now; they stay
# importable from here, where embedding programs and the README found them.
__all__ = [
    "ClientTransport",
    "ForwardState",
    "ForwardStatus",
    "Tunnel",
    "client_endpoint",
    "connect",
]

_log = Logger()


@implementer(ITransportOwner, IStreamLocalOwner)
class Tunnel:
    """One SSH connection and its remote forwards."""

    def __init__(self, reactor: Any, config: ClientConfig) -> None:
        self.reactor = reactor
        self.config = config
        self.forwards = ForwardTable(config.forwards)
        self.known_hosts = KnownHosts(
            config.known_hosts, config.strict_host_key_checking, config.host, config.port
        )
        self.transport: ClientTransport | None = None
        self.connection: ForwardingClientConnection | None = None
        self._ready: Outcome[Tunnel] = Outcome()
        self._closed: Outcome[RfwdError] = Outcome()
        self._fatal: RfwdError | None = None
        self._peer_reason: str | None = None
        # Called whenever a forward changes state (for the status file).
        self.on_change: Callable[[], None] = lambda: None

    # -- for the user of the tunnel ----------------------------------------------------------

    def when_ready(self) -> Deferred[Tunnel]:
        """Fires once authenticated and every forward answered; fails with the reason if not."""
        return self._ready.wait()

    def when_closed(self) -> Deferred[RfwdError]:
        """Fires, with the reason as a value, when the connection has ended."""
        return self._closed.wait()

    @property
    def fatal_error(self) -> RfwdError | None:
        """A failure that retrying cannot fix (host key, authentication, refused forward)."""
        return self._fatal

    def add_forward(self, spec: RemoteForward) -> Deferred[ForwardState]:
        """Request one more forward on this connection."""
        if self.connection is None or self.connection.stopped:
            return fail(ConnectionClosed("the tunnel is not connected"))
        return self._request(self.forwards.add(spec))

    def retry_forward(self, state: ForwardState) -> Deferred[ForwardState]:
        """Ask again for a refused forward (its port may have been freed since)."""
        if self.connection is None or self.connection.stopped:
            return fail(ConnectionClosed("the tunnel is not connected"))
        state.requested()
        return self._request(state)

    def drain(self, timeout: float) -> Deferred[RfwdError]:
        """
        Stop gracefully: take no new forwarded connections, cancel the forwards, let open
        connections finish for up to C{timeout} seconds, then disconnect.
        """
        connection = self.connection
        if connection is None or connection.stopped:
            return self.close()
        connection.stop_accepting()
        for state in self.forwards.with_status(ForwardStatus.LISTENING):
            self.cancel_forward(state.spec).addErrback(lambda _: None)
        idle = connection.when_idle().addTimeout(timeout, self.reactor)
        open_channels = connection.open_channel_count
        if open_channels:
            _log.info(
                "Draining {count} forwarded connections for up to {timeout:g} s",
                count=open_channels,
                timeout=timeout,
            )
        return idle.addBoth(lambda _: self.close())

    def cancel_forward(self, spec: RemoteForward) -> Deferred[None]:
        """
        Stop the server listening for C{spec}; connections already open carry on.  The forward
        leaves L{forwards} at once (a cancelled forward is no longer one of this tunnel's).
        """
        state = self.forwards.listening(spec)
        if state is None:
            return fail(KeyError(f"no listening forward {spec}"))
        assert self.connection is not None and state.port is not None
        state.cancelled()
        self.forwards.remove(state)
        self.on_change()
        d = self.connection.cancel_forward(spec, state.port)
        return d.addCallback(lambda _: None)

    def close(self, grace: float = 5.0) -> Deferred[RfwdError]:
        """
        Disconnect; fires when the connection is gone.  A goodbye that cannot leave (a dead
        link) does not hold the caller up: after C{grace} seconds the connection is dropped.
        """
        if self.transport is not None and not self._closed.settled:
            self.transport.say_goodbye()
            deadline = self.reactor.callLater(grace, self.abort)
            self._closed.wait().addBoth(lambda _: deadline.cancel() if deadline.active() else None)
        return self.when_closed()

    def hang_up(self) -> None:
        """Close a connection still being set up (nothing to say goodbye to yet)."""
        if self.transport is not None:
            self.transport.hang_up()

    def abort(self) -> None:
        """Drop the connection at once (used when a connect attempt is cancelled)."""
        if self.transport is not None:
            self.transport.abort()

    def forward_for(self, address: str, port: int) -> RemoteForward | None:
        """The listening forward a C{forwarded-tcpip} channel belongs to, or C{None}."""
        return self.forwards.forward_for(address, port)

    def forward_for_path(self, path: str) -> RemoteForward | None:
        """The listening forward a C{forwarded-streamlocal} channel belongs to, or C{None}."""
        return self.forwards.forward_for_path(path)

    # -- ITransportOwner: fed by the protocol objects -----------------------------------------

    def transport_connected(self, transport: ClientTransport) -> None:
        self.transport = transport

    def fail(self, error: RfwdError) -> None:
        """Record a failure retrying cannot fix; the first one is what the user is told."""
        if self._fatal is None:
            self._fatal = error

    def peer_disconnected(self, description: str) -> None:
        if self._peer_reason is None:
            self._peer_reason = description

    def connection_started(self, connection: ForwardingClientConnection) -> None:
        """Authenticated: request every forward, then report ready (or fail)."""
        self.connection = connection
        connection.start_keepalive(
            self.config.server_alive_interval, self.config.server_alive_count_max
        )
        requests = [self._request(state) for state in self.forwards]
        gatherResults(requests, consumeErrors=True).addCallbacks(
            self._forwards_answered, lambda _: None
        )

    def connection_lost(self, reason: Failure) -> None:
        error = self._closing_reason(reason)
        if not self._ready.settled:
            self._ready.settle(Failure(error))
        self._closed.settle(error)

    # -- internals ---------------------------------------------------------------------------

    def _request(self, state: ForwardState) -> Deferred[ForwardState]:
        assert self.connection is not None
        spec = state.spec

        def listening(port: int) -> ForwardState:
            state.listening(port)
            self.on_change()
            if spec.listen_path is not None:
                _log.info(
                    "Remote forward: server socket {path} to {destination}",
                    path=spec.listen_path,
                    destination=spec.destination,
                )
            elif spec.listen_port == 0:
                _log.info(
                    "Allocated port {port} for remote forward to {destination}",
                    port=port,
                    destination=spec.destination,
                )
            else:
                _log.info(
                    "Remote forward: server port {port} to {destination}",
                    port=port,
                    destination=spec.destination,
                )
            return state

        def refused(failure: Failure) -> ForwardState:
            failure.trap(GlobalRequestFailed)
            state.refused(str(ForwardRefused(str(spec))))
            if not self.config.exit_on_forward_failure:
                # Under ExitOnForwardFailure it is the error the tunnel fails with: said once.
                _log.warn("Warning: {error}", error=state.error)
            self.on_change()
            return state

        return self.connection.request_forward(spec).addCallbacks(listening, refused)

    def _forwards_answered(self, states: list[ForwardState]) -> None:
        refused = [s for s in states if s.status is ForwardStatus.REFUSED]
        if refused and self.config.exit_on_forward_failure:
            self.fail(ForwardRefused(str(refused[0].spec)))
            self._ready.settle(Failure(self._fatal or ForwardRefused(str(refused[0].spec))))
            self.close()
            return
        listening = len(self.forwards.with_status(ForwardStatus.LISTENING))
        _log.info(
            "Connected to {host} port {port}: {listening} of {total} forwards listening",
            host=self.config.host,
            port=self.config.port,
            listening=listening,
            total=len(self.forwards),
        )
        self._ready.settle(self)

    def _closing_reason(self, reason: Failure) -> RfwdError:
        if self._fatal is not None:
            return self._fatal
        where = f"{self.config.host} port {self.config.port}"
        if self._peer_reason is not None:
            return ConnectionClosed(f"Disconnected from {where}: {self._peer_reason}")
        return ConnectionClosed(f"Connection to {where} closed: {reason.getErrorMessage()}")


def client_endpoint(reactor: Any, config: ClientConfig) -> IStreamClientEndpoint:
    """The TCP connection to the SSH server, as AddressFamily and BindAddress say."""
    bind = (config.bind_address, 0) if config.bind_address else None
    timeout = config.connect_timeout
    if config.address_family == "inet":
        return TCP4ClientEndpoint(reactor, config.host, config.port, timeout, bind)
    if config.address_family == "inet6":
        return TCP6ClientEndpoint(reactor, config.host, config.port, timeout, bind)
    return HostnameEndpoint(reactor, config.host, config.port, timeout=timeout, bindAddress=bind)


def connect(
    reactor: Any, config: ClientConfig, endpoint: IStreamClientEndpoint | None = None
) -> Deferred[Tunnel]:
    """
    Connect, verify the host key, log in, and request every forward in C{config}.

    Fires with the L{Tunnel} once the server answered every forward request; fails with an
    L{RfwdError} saying why otherwise.  Cancelling the Deferred abandons the attempt.
    """
    tunnel = Tunnel(reactor, config)
    if endpoint is None:
        endpoint = client_endpoint(reactor, config)
    factory = Factory.forProtocol(lambda: ClientTransport(tunnel))
    connecting = endpoint.connect(factory)

    def connect_failed(failure: Failure) -> Failure:
        return Failure(connect_failure(config.host, config.port, failure))

    def connected(_: object) -> Deferred[Tunnel]:
        return tunnel.when_ready()

    def cancel(d: Deferred[Tunnel]) -> None:
        connecting.cancel()
        tunnel.abort()

    result: Deferred[Tunnel] = Deferred(cancel)
    ready: Deferred[Tunnel] = connecting.addErrback(connect_failed).addCallback(connected)
    ready.chainDeferred(result)
    return result
