"""
The server's listening sockets for remote forwards, and the connections they accept.

One L{ForwardListener} per C{tcpip-forward}: it may hold a socket per address family on the same
port (sshd's behaviour), and each connection it accepts becomes a C{forwarded-tcpip} channel.
Sockets are bound as sshd binds them (C{SO_REUSEADDR}, C{IPV6_V6ONLY}) and then adopted by the
reactor; the binder is injectable so tests need no sockets.

One L{StreamLocalListener} per C{streamlocal-forward@openssh.com}: a Unix socket file created
with sshd's C{StreamLocalBindMask} as umask, each connection a C{forwarded-streamlocal} channel.
Unlike sshd, which leaves the file behind, closing the listener removes the file (if it is still
the one we created).
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from twisted.internet import tcp, unix
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort, IReactorSocket
from twisted.internet.protocol import ServerFactory, connectionDone
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure

from twisted_rfwd.errors import BindError
from twisted_rfwd.protocol.addresses import describe_address, host_port
from twisted_rfwd.protocol.messages import loggable
from twisted_rfwd.protocol.policy import is_ip_literal
from twisted_rfwd.protocol.wire import ForwardedStreamlocal, ForwardedTcpip
from twisted_rfwd.ssh.channel import Channel
from twisted_rfwd.ssh.metrics import NO_METRICS, Metrics
from twisted_rfwd.ssh.relay import ChannelRelay

if TYPE_CHECKING:
    from twisted_rfwd.server.descriptors import DescriptorBudget
    from twisted_rfwd.ssh.mux import ChannelMux

__all__ = [
    "BindError",
    "ForwardListener",
    "PortBinder",
    "SocketBinder",
    "SocketFileBinder",
    "SocketFileSource",
    "StreamLocalListener",
    "UnixSocketBinder",
    "bind_forward",
]

_log = Logger()


class PortBinder(Protocol):
    """Binds C{factory} to C{address:port} (port 0: any) or raises L{OSError}."""

    def __call__(self, factory: ServerFactory, address: str, port: int) -> IListeningPort: ...


class SocketBinder:
    """The real binder: a socket set up like sshd's, adopted by the reactor."""

    def __init__(self, reactor: IReactorSocket, backlog: int = socket.SOMAXCONN) -> None:
        self._reactor = reactor
        self._backlog = backlog

    def socket_file_binder(self) -> SocketFileBinder:
        """Unix sockets on the same reactor (see L{SocketFileSource})."""
        return UnixSocketBinder(self._reactor)

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


class SocketFileBinder(Protocol):
    """
    Listens with C{factory} on a Unix socket file at C{path}, created with C{mask} as umask;
    C{unlink_first} removes an existing socket file there first.  Raises L{OSError}.
    """

    def __call__(
        self, factory: ServerFactory, path: str, mask: int, unlink_first: bool
    ) -> IListeningPort: ...


@runtime_checkable
class SocketFileSource(Protocol):
    """
    A port binder that can also make Unix sockets.  Only a binder that makes real sockets says
    so: with a test's fake one, no socket file is ever created by a request off the wire.
    """

    def socket_file_binder(self) -> SocketFileBinder: ...


class _SocketFilePort(unix.Port):
    """
    Twisted's Unix port, except that closing it removes the socket file only if it is still
    ours (a later forward with StreamLocalBindUnlink may have replaced it, or someone removed
    it), and never fails for a file already gone.
    """

    identity: tuple[int, int] | None = None

    def startListening(self) -> None:
        super().startListening()
        with contextlib.suppress(OSError):
            found = os.lstat(self._bindPath)
            self.identity = (found.st_dev, found.st_ino)

    def connectionLost(self, reason: Failure) -> None:
        if self.identity is not None:
            with contextlib.suppress(OSError):
                found = os.lstat(self._bindPath)
                if (found.st_dev, found.st_ino) == self.identity:
                    os.unlink(self._bindPath)
        tcp.Port.connectionLost(self, reason)


class UnixSocketBinder:
    """The real socket file binder (sshd's C{unix_listener}), on a POSIX reactor."""

    def __init__(self, reactor: object, backlog: int = socket.SOMAXCONN) -> None:
        self._reactor = reactor
        self._backlog = backlog

    def __call__(
        self, factory: ServerFactory, path: str, mask: int, unlink_first: bool
    ) -> IListeningPort:
        if unlink_first:
            with contextlib.suppress(FileNotFoundError):
                if stat.S_ISSOCK(os.lstat(path).st_mode):
                    os.unlink(path)
        # The file is created by bind() with the mode the umask leaves (sshd's way: no moment
        # with a wider mode); Twisted's chmod afterwards sets that same mode again.
        port = _SocketFilePort(
            os.fsencode(path), factory, self._backlog, 0o777 & ~mask, self._reactor
        )
        previous = os.umask(mask)
        try:
            port.startListening()
        except CannotListenError as e:
            error = e.socketError
            if isinstance(error, OSError):
                raise error from None
            raise OSError(str(error)) from None
        finally:
            os.umask(previous)
        return port


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
        # Set by the connection once the forward listens (see L{twisted_rfwd.ssh.metrics}).
        self.metrics: Metrics = NO_METRICS
        self.descriptors = descriptors
        self.max_channels = max_channels
        self.note: Note = note if note is not None else _note_always
        self.requested_address = requested_address
        self.user = user
        self.port = 0
        self.ports: list[IListeningPort] = []
        self.addresses: list[str] = []
        self.connections = 0
        # For the status file and metrics: connections open now, and the bytes of those ended.
        self.open_connections: set[ForwardedConnection] = set()
        self._ended_sent = 0
        self._ended_received = 0

    def connection_opened(self, connection: ForwardedConnection) -> None:
        self.open_connections.add(connection)
        self.metrics.forwarded_connection_opened()

    def connection_closed(self, connection: ForwardedConnection, channel: Channel) -> None:
        self.open_connections.discard(connection)
        self._ended_sent += channel.bytes_sent
        self._ended_received += channel.bytes_received
        self.metrics.forwarded_connection_closed(channel.bytes_sent, channel.bytes_received)

    def bytes_transferred(self) -> tuple[int, int]:
        """Bytes sent into the tunnel and received from it, by every connection so far."""
        sent, received = self._ended_sent, self._ended_received
        for connection in self.open_connections:
            sent += connection.channel.bytes_sent
            received += connection.channel.bytes_received
        return sent, received

    def describe(self) -> str:
        """Where it listens, as C{127.0.0.1:8080, [::1]:8080}."""
        return ", ".join(self.addresses)

    @property
    def target(self) -> str:
        """What a connection arrived on, for log lines: C{port 8080}."""
        return f"port {self.port}"

    def describe_peer(self, peer: object) -> str:
        """Who connected, for log lines."""
        return describe_address(peer)

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
        self.listener.connection_opened(self)
        super().connectionMade()
        self.channel.when_opened().addErrback(self._refused, peer)

    budget: DescriptorBudget | None = None

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        budget, self.budget = self.budget, None
        if budget is not None:
            budget.release_forwarded()
        if hasattr(self, "channel"):
            self.listener.connection_closed(self, self.channel)
            super().connectionLost(reason)

    def _refused(self, failure: Failure, peer: object) -> None:
        self.listener.note(
            "forwarded connections not opened",
            LogLevel.info,
            "Forwarded connection from {peer} to {target} of {user} not opened: {reason}",
            peer=self.listener.describe_peer(peer),
            target=self.listener.target,
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
                "Forwarded connection to {target} of {user} closed at once: {reason}",
                target=listener.target,
                user=listener.user,
                reason=refusal,
            )
            return None  # Twisted closes the socket at once
        protocol = ForwardedConnection(self.listener)
        protocol.budget = budget
        return protocol


class StreamLocalListener(ForwardListener):
    """The Unix socket of one C{streamlocal-forward@openssh.com}, and where its connections go."""

    def __init__(
        self,
        mux: ChannelMux,
        path: str,
        user: str,
        note: Note | None = None,
        descriptors: DescriptorBudget | None = None,
        max_channels: int | None = None,
    ) -> None:
        super().__init__(mux, "", user, note, descriptors, max_channels)
        self.path = path

    def describe(self) -> str:
        """The path (the client chose it: cut short for log lines)."""
        return loggable(self.path.encode("utf-8", "surrogateescape"))

    @property
    def target(self) -> str:
        return f"socket {self.describe()}"

    def describe_peer(self, peer: object) -> str:
        return "a local process"

    def open_channel(self, originator: object) -> Channel:
        """A connection arrived: ask the client for a C{forwarded-streamlocal} channel."""
        self.connections += 1
        payload = ForwardedStreamlocal(self.path).pack()
        return self.mux.open_channel(b"forwarded-streamlocal@openssh.com", payload)

    def bind(self, binder: SocketFileBinder, mask: int, unlink_first: bool) -> None:
        """Listen on the path; raises L{BindError} saying why not."""
        try:
            port = binder(_AcceptFactory(self), self.path, mask, unlink_first)
        except OSError as e:
            raise BindError([(self.path, 0, e.strerror or str(e))]) from None
        self.ports.append(port)
        self.addresses.append(self.describe())


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
