"""
The server's listening sockets for remote forwards, and the connections they accept.

One L{ForwardListener} per C{tcpip-forward}: it may hold a socket per address family on the same
port (sshd's behaviour), and each connection it accepts becomes a C{forwarded-tcpip} channel.
Sockets are bound as sshd binds them (C{SO_REUSEADDR}, C{IPV6_V6ONLY}) and then adopted by the
reactor; the binder is injectable so tests need no sockets.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.internet.interfaces import IListeningPort, IReactorSocket
from twisted.internet.protocol import ServerFactory, connectionDone
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure

from twisted_rfwd.errors import BindError
from twisted_rfwd.protocol.addresses import describe_address, host_port
from twisted_rfwd.protocol.policy import is_ip_literal
from twisted_rfwd.protocol.wire import ForwardedTcpip
from twisted_rfwd.ssh.channel import Channel
from twisted_rfwd.ssh.relay import ChannelRelay

if TYPE_CHECKING:
    from twisted_rfwd.server.descriptors import DescriptorBudget
    from twisted_rfwd.ssh.mux import ChannelMux

__all__ = ["BindError", "ForwardListener", "PortBinder", "SocketBinder", "bind_forward"]

_log = Logger()


class PortBinder(Protocol):
    """Binds C{factory} to C{address:port} (port 0: any) or raises L{OSError}."""

    def __call__(self, factory: ServerFactory, address: str, port: int) -> IListeningPort: ...


class SocketBinder:
    """The real binder: a socket set up like sshd's, adopted by the reactor."""

    def __init__(self, reactor: IReactorSocket, backlog: int = socket.SOMAXCONN) -> None:
        self._reactor = reactor
        self._backlog = backlog

    def __call__(self, factory: ServerFactory, address: str, port: int) -> IListeningPort:
        if not is_ip_literal(address):
            raise OSError(f"'{address}' is not a numeric address")
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((address, port))
            sock.listen(self._backlog)
            sock.setblocking(False)
            return self._reactor.adoptStreamPort(sock.fileno(), family, factory)
        finally:
            sock.close()


class Note(Protocol):
    """Logs a line that a client can make us repeat, within its connection's log budget."""

    def __call__(self, what: str, level: LogLevel, format: str, /, **fields: object) -> None: ...


def _note_always(what: str, level: LogLevel, format: str, /, **fields: object) -> None:
    _log.emit(level, format, **fields)


class ForwardListener:
    """The sockets of one remote forward, and where their connections go."""

    def __init__(
        self,
        mux: ChannelMux,
        requested_address: str,
        user: str,
        note: Note | None = None,
        descriptors: DescriptorBudget | None = None,
        max_channels: int | None = None,
    ) -> None:
        self.mux = mux
        self.descriptors = descriptors
        self.max_channels = max_channels
        self.note: Note = note if note is not None else _note_always
        self.requested_address = requested_address
        self.user = user
        self.port = 0
        self.ports: list[IListeningPort] = []
        self.addresses: list[str] = []
        self.connections = 0

    def describe(self) -> str:
        """Where it listens, as C{127.0.0.1:8080, [::1]:8080}."""
        return ", ".join(self.addresses)

    def open_channel(self, originator: object) -> Channel:
        """A connection arrived: ask the client for a C{forwarded-tcpip} channel."""
        self.connections += 1
        payload = ForwardedTcpip(
            connected_address=self.requested_address,
            connected_port=self.port,
            originator_address=str(getattr(originator, "host", "")),
            originator_port=int(getattr(originator, "port", 0)),
        ).pack()
        return self.mux.open_channel(b"forwarded-tcpip", payload)

    def close(self) -> Deferred[None]:
        """Stop listening; connections already forwarded carry on."""
        ports, self.ports = self.ports, []
        stopping = DeferredList([maybeDeferred(p.stopListening) for p in ports], consumeErrors=True)
        return stopping.addCallback(lambda _: None)


class ForwardedConnection(ChannelRelay):
    """A connection accepted on a forward's port, relayed through a new channel."""

    def __init__(self, listener: ForwardListener) -> None:
        super().__init__()
        self.listener = listener

    def connectionMade(self) -> None:
        if self.listener.mux.stopped:
            self.transport.loseConnection()  # type: ignore[union-attr]
            return
        peer = self.transport.getPeer()  # type: ignore[union-attr]
        self.channel = self.listener.open_channel(peer)
        super().connectionMade()
        self.channel.when_opened().addErrback(self._refused, describe_address(peer))

    budget: DescriptorBudget | None = None

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        budget, self.budget = self.budget, None
        if budget is not None:
            budget.release_forwarded()
        if hasattr(self, "channel"):
            super().connectionLost(reason)

    def _refused(self, failure: Failure, peer: str) -> None:
        self.listener.note(
            "forwarded connections not opened",
            LogLevel.info,
            "Forwarded connection from {peer} to port {port} of {user} not opened: {reason}",
            peer=peer,
            port=self.listener.port,
            user=self.listener.user,
            reason=failure.getErrorMessage(),
        )


class _AcceptFactory(ServerFactory):
    noisy = False

    def __init__(self, listener: ForwardListener) -> None:
        self.listener = listener

    def buildProtocol(self, addr: object) -> ForwardedConnection | None:
        listener = self.listener
        refusal = None
        if (
            listener.max_channels is not None
            and len(listener.mux.channels) >= listener.max_channels
        ):
            refusal = f"{len(listener.mux.channels)} channels open (MaxChannelsPerConnection)"
        budget = listener.descriptors
        if refusal is None and budget is not None and not budget.acquire_forwarded():
            refusal = "too few file descriptors left for forwarded connections"
        if refusal is not None:
            listener.note(
                "forwarded connections not opened",
                LogLevel.warn,
                "Forwarded connection to port {port} of {user} closed at once: {reason}",
                port=listener.port,
                user=listener.user,
                reason=refusal,
            )
            return None  # Twisted closes the socket at once
        protocol = ForwardedConnection(self.listener)
        protocol.budget = budget
        return protocol


def bind_forward(
    binder: PortBinder, listener: ForwardListener, addresses: Sequence[str], port: int
) -> None:
    """
    Bind C{listener} on each of C{addresses} at C{port}, as sshd does: with port 0 the port the
    first bind picked is reused for the others; success if at least one address binds.

    @raise BindError: listing every address that failed, if none bound.
    """
    factory = _AcceptFactory(listener)
    failures: list[tuple[str, int, str]] = []
    for address in addresses:
        try:
            bound = binder(factory, address, port)
        except OSError as e:
            failures.append((address, port, e.strerror or str(e)))
            continue
        host = bound.getHost()
        listener.ports.append(bound)
        listener.addresses.append(describe_address(host))
        if port == 0:
            port = int(getattr(host, "port", 0))
        listener.port = port
    if not listener.ports:
        raise BindError(failures)
    for address, failed_port, reason in failures:
        _log.debug(
            "Forward for {user} also wanted {where}: {reason}",
            user=listener.user,
            where=host_port(address, failed_port),
            reason=reason,
        )
