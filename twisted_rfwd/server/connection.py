"""
The server's C{ssh-connection} service: C{tcpip-forward} and C{cancel-tcpip-forward} open and
close listeners, and so do OpenSSH's C{streamlocal-forward@openssh.com} and
C{cancel-streamlocal-forward@openssh.com} for Unix sockets (sshd's AllowStreamLocalForwarding,
StreamLocalBindMask, StreamLocalBindUnlink; the socket belongs to the server's user).  A
C{session} channel is held open, running nothing, so that C{ssh -R ...} without C{-N} keeps its
forwards until the user leaves (L{twisted_rfwd.server.session}; with C{sessions} off it is
refused, as every other channel the client asks for is).
"""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger, LogLevel

from twisted_rfwd._version import __version__
from twisted_rfwd.errors import ChannelOpenFailed
from twisted_rfwd.protocol import wire
from twisted_rfwd.protocol.messages import loggable
from twisted_rfwd.protocol.policy import listen_addresses, privileged_port_refusal
from twisted_rfwd.server.auth import LoginIdentity
from twisted_rfwd.server.config import ServerConfig
from twisted_rfwd.server.descriptors import DescriptorBudget, ForwardCounts
from twisted_rfwd.server.listeners import (
    BindError,
    ForwardListener,
    PortBinder,
    SocketFileBinder,
    SocketFileSource,
    StreamLocalListener,
    bind_forward,
)
from twisted_rfwd.server.session import HeldSession
from twisted_rfwd.ssh.channel import Channel
from twisted_rfwd.ssh.log_budget import LogBudget
from twisted_rfwd.ssh.metrics import NO_METRICS, Metrics
from twisted_rfwd.ssh.mux import ChannelMux

__all__ = ["ForwardingServerConnection"]

_REFUSALS = {
    b"session": "rfwd-server only forwards ports: no shell, command or subsystem (use ssh -N)",
    b"direct-tcpip": "rfwd-server does not do local (-L) or dynamic (-D) forwarding",
    b"direct-streamlocal@openssh.com": "rfwd-server does not forward Unix sockets",
}


class ForwardingServerConnection(ChannelMux):
    """One logged-in client's forwards."""

    _log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        config: ServerConfig,
        login: LoginIdentity,
        binder: PortBinder,
        registry: set[ForwardingServerConnection] | None = None,
        descriptors: DescriptorBudget | None = None,
        forward_counts: ForwardCounts | None = None,
        socket_binder: SocketFileBinder | None = None,
        metrics: Metrics = NO_METRICS,
    ) -> None:
        super().__init__(clock, window_size=config.window_size, max_packet=config.max_packet)
        self.config = config
        self.login = login
        self.binder = binder
        self.listeners: dict[tuple[str, int], ForwardListener] = {}
        # Unix-socket forwards (streamlocal-forward@openssh.com), by path.
        self.socket_listeners: dict[str, StreamLocalListener] = {}
        if socket_binder is None and isinstance(binder, SocketFileSource):
            socket_binder = binder.socket_file_binder()
        # None: this server cannot make Unix sockets (a test's fake binder).
        self.socket_binder = socket_binder
        self._registry = registry if registry is not None else set()
        self.shutting_down = False
        # Shared with the factory (and so with every other connection); own ones if embedded alone.
        self.descriptors = descriptors if descriptors is not None else DescriptorBudget(1 << 30)
        self.forward_counts = forward_counts if forward_counts is not None else ForwardCounts()
        # Every line the client can repeat at will goes through this (see log_budget).
        self.log_budget: LogBudget | None = None
        self.sessions: dict[Channel, HeldSession] = {}
        # The client said it opens no more sessions (no-more-sessions@openssh.com).
        self.no_more_sessions = False
        # For the status file and metrics (see twisted_rfwd.server.status): since login.
        self.metrics = metrics
        self.since = clock.seconds()

    def note(self, what: str, level: LogLevel, format: str, /, **fields: object) -> None:
        """Log a line the client could make us repeat, within this connection's budget."""
        if self.log_budget is None:
            self.log_budget = LogBudget(self.clock, self.peer_description())
        self.log_budget.emit(what, self._log, level, format, **fields)

    def serviceStarted(self) -> None:
        self._registry.add(self)
        self.metrics.ssh_logged_in()
        self.start_keepalive(self.config.client_alive_interval, self.config.client_alive_count_max)
        if self.login.method == "publickey":
            self._log.info(
                "Accepted publickey for {user} from {peer}: {key_type} {fingerprint}",
                user=self.login.user,
                peer=self.peer_description(),
                key_type=self.login.key_type,
                fingerprint=self.login.fingerprint,
            )
        else:
            self._log.info(
                "Accepted {method} for {user} from {peer}",
                method=self.login.method,
                user=self.login.user,
                peer=self.peer_description(),
            )

    def serviceStopped(self) -> None:
        super().serviceStopped()
        self._registry.discard(self)
        self.metrics.ssh_logged_out()
        why = self.end_reason or "the SSH connection ended"
        for listener in self._all_listeners():
            self._close_listener(listener, why)
        self.listeners.clear()
        self.socket_listeners.clear()
        if self.log_budget is not None:
            self.log_budget.flush()
        self._log.info(
            "Connection from {peer} for {user} closed",
            peer=self.peer_description(),
            user=self.login.user,
        )

    def stop_forwarding(self, why: str) -> None:
        """Close every listener and accept no new forwards; open connections carry on."""
        self.shutting_down = True
        for listener in self._all_listeners():
            self._close_listener(listener, why)
        self.listeners.clear()
        self.socket_listeners.clear()
        for session in list(self.sessions.values()):
            session.server_stopping()

    def global_request_received(self, name: bytes, data: bytes) -> bytes | None:
        if name == b"tcpip-forward":
            return self._forward(wire.TcpipForward.parse(data))
        if name == b"cancel-tcpip-forward":
            return self._cancel(wire.TcpipForward.parse(data, "cancel-tcpip-forward request"))
        if name == b"streamlocal-forward@openssh.com":
            return self._forward_socket(wire.StreamlocalForward.parse(data))
        if name == b"cancel-streamlocal-forward@openssh.com":
            request = wire.StreamlocalForward.parse(data, "cancel-streamlocal-forward request")
            return self._cancel_socket(request)
        if name == b"no-more-sessions@openssh.com":
            self.no_more_sessions = True
            return b""
        return None

    def channel_open_requested(self, channel_type: bytes, data: bytes, channel: Channel) -> None:
        if channel_type == b"session":
            refusal = self._session_refusal()
            if refusal is None:
                self._open_session(channel)
                return
            reason = refusal
        else:
            reason = _REFUSALS.get(channel_type, f"unknown channel type {loggable(channel_type)}")
        self.note(
            "channel refusals",
            LogLevel.info,
            "Refused {channel_type} channel from {user} at {peer}: {reason}",
            channel_type=loggable(channel_type),
            user=self.login.user,
            peer=self.peer_description(),
            reason=reason,
        )
        code = (
            wire.OPEN_UNKNOWN_CHANNEL_TYPE
            if channel_type not in _REFUSALS
            else wire.OPEN_ADMINISTRATIVELY_PROHIBITED
        )
        raise ChannelOpenFailed(code, reason)

    def channel_request_received(
        self, channel: Channel, request_type: bytes, want_reply: bool, data: bytes
    ) -> bool:
        """Requests on a session go to it; those on forwarded channels are refused."""
        session = self.sessions.get(channel)
        return session is not None and session.request(request_type, data)

    def _session_refusal(self) -> str | None:
        if not self.config.sessions:
            return _REFUSALS[b"session"]
        if self.shutting_down:
            return "the server is shutting down"
        if self.no_more_sessions:
            return "the client asked for no more sessions (no-more-sessions@openssh.com)"
        if self.config.max_sessions == 0:
            return "sessions are disabled on this server (MaxSessions 0); use ssh -N"
        if len(self.sessions) >= self.config.max_sessions:
            return f"this connection already has {len(self.sessions)} sessions (MaxSessions)"
        return None

    def _open_session(self, channel: Channel) -> None:
        """Hold a session channel open (see L{HeldSession}); it is confirmed on return."""
        session = HeldSession(
            channel,
            self,
            user=self.login.user,
            version=__version__,
            forwards=lambda: [listener.describe() for listener in self._all_listeners()],
            event=lambda what: self._session_event(channel, what),
            ended=self._session_ended,
        )
        self.sessions[channel] = session
        channel.attach(session)
        self._session_event(channel, "opened")

    def _session_ended(self, session: HeldSession) -> None:
        self.sessions.pop(session.channel, None)

    def _session_event(self, channel: Channel, what: str) -> None:
        self.note(
            "sessions",
            LogLevel.info,
            "Session {number} of {user} from {peer}: {what}",
            number=channel.local_id,
            user=self.login.user,
            peer=self.peer_description(),
            what=what,
        )

    def _forward(self, request: wire.TcpipForward) -> bytes | None:
        address, port = request.address, request.port
        refusal = "the server is shutting down" if self.shutting_down else None
        refusal = refusal or self._policy_refusal(address, port)
        if refusal:
            self._refuse(address, port, refusal)
            return None
        if (address, port) in self.listeners and port != 0:
            self._refuse(address, port, "this connection already forwards that port")
            return None
        user = self.login.user
        addresses = listen_addresses(address, self.config.gateway_ports)
        if not self.forward_counts.try_add(user, self.config.max_forwards_per_user):
            held = self.forward_counts.of(user)
            self._refuse(address, port, f"{user} already has {held} forwards (MaxForwardsPerUser)")
            return None
        if not self.descriptors.acquire_listeners(user, len(addresses)):
            self.forward_counts.remove(user)
            self._refuse(address, port, "too few file descriptors left for new forwards")
            return None
        listener = ForwardListener(
            self,
            address,
            user,
            self.note,
            self.descriptors,
            self.config.max_channels_per_connection,
        )
        try:
            bind_forward(self.binder, listener, addresses, port)
        except BindError as e:
            self.descriptors.release_listeners(user, len(addresses))
            self.forward_counts.remove(user)
            self._refuse(address, port, str(e))
            return None
        # Addresses that did not bind hold no descriptor.
        self.descriptors.release_listeners(user, len(addresses) - len(listener.ports))
        self.listeners[(address, listener.port)] = listener
        listener.metrics = self.metrics
        self.metrics.forward_opened()
        for session in list(self.sessions.values()):
            session.forward_added(listener.describe())
        self.note(
            "forwards",
            LogLevel.info,
            "Remote forward for {user}: listening on {bound} (requested {address!r} port {port})",
            user=self.login.user,
            bound=listener.describe(),
            address=address,
            port=port,
        )
        return wire.pack_uint32(listener.port) if port == 0 else b""

    def _policy_refusal(self, address: str, port: int) -> str | None:
        options = self.login.options
        if not self.config.allow_tcp_forwarding:
            return "TCP forwarding is disabled on this server (AllowTcpForwarding)"
        if not options.port_forwarding:
            return "port forwarding is disabled for this key"
        if not options.allows_listen(address, port):
            return "not permitted by the key's permitlisten"
        if not self.config.permit_listen.allows(address, port):
            return "not permitted by PermitListen"
        privileged = privileged_port_refusal(
            self.login.user, address, port, self.config.permit_listen
        )
        if privileged:
            return privileged
        return self._count_refusal()

    def _count_refusal(self) -> str | None:
        held = len(self.listeners) + len(self.socket_listeners)
        if held >= self.config.max_forwards_per_connection:
            return f"this connection already has {held} forwards (MaxForwardsPerConnection)"
        return None

    def _all_listeners(self) -> list[ForwardListener]:
        return [*self.listeners.values(), *self.socket_listeners.values()]

    def _socket_refusal(self, path: str) -> str | None:
        if self.shutting_down:
            return "the server is shutting down"
        if not self.config.allow_stream_local_forwarding:
            return "Unix-socket forwarding is disabled on this server (AllowStreamLocalForwarding)"
        if self.socket_binder is None:
            return "this server cannot listen on Unix sockets"
        if not self.login.options.port_forwarding:
            return "port forwarding is disabled for this key"
        if not path.startswith("/"):
            return "the socket path must be absolute"
        if "\0" in path:
            return "the socket path contains a NUL byte"
        if path in self.socket_listeners:
            return "this connection already forwards that socket"
        return self._count_refusal()

    def _forward_socket(self, request: wire.StreamlocalForward) -> bytes | None:
        """Listen on a Unix socket (C{ssh -R /path:host:port}), as sshd does."""
        path, user = request.path, self.login.user
        refusal = self._socket_refusal(path)
        if refusal is None and not self.forward_counts.try_add(
            user, self.config.max_forwards_per_user
        ):
            held = self.forward_counts.of(user)
            refusal = f"{user} already has {held} forwards (MaxForwardsPerUser)"
        elif refusal is None and not self.descriptors.acquire_listeners(user, 1):
            self.forward_counts.remove(user)
            refusal = "too few file descriptors left for new forwards"
        if refusal is not None:
            self._refuse_socket(path, refusal)
            return None
        listener = StreamLocalListener(
            self, path, user, self.note, self.descriptors, self.config.max_channels_per_connection
        )
        assert self.socket_binder is not None
        try:
            listener.bind(
                self.socket_binder,
                self.config.stream_local_bind_mask,
                self.config.stream_local_bind_unlink,
            )
        except BindError as e:
            self.descriptors.release_listeners(user, 1)
            self.forward_counts.remove(user)
            self._refuse_socket(path, f"cannot listen there: {e.failures[0][2]}")
            return None
        self.socket_listeners[path] = listener
        listener.metrics = self.metrics
        self.metrics.forward_opened()
        for session in list(self.sessions.values()):
            session.forward_added(listener.describe())
        self.note(
            "forwards",
            LogLevel.info,
            "Remote forward for {user}: listening on Unix socket {path}",
            user=user,
            path=loggable(path.encode("utf-8", "surrogateescape")),
        )
        return b""

    def _refuse_socket(self, path: str, reason: str) -> None:
        self.note(
            "forward refusals",
            LogLevel.warn,
            "Refused remote forward for {user} from {peer}: Unix socket {path}: {reason}",
            user=self.login.user,
            peer=self.peer_description(),
            path=loggable(path.encode("utf-8", "surrogateescape")),
            reason=reason,
        )

    def _cancel_socket(self, request: wire.StreamlocalForward) -> bytes | None:
        listener = self.socket_listeners.pop(request.path, None)
        if listener is None:
            self.note(
                "forward refusals",
                LogLevel.info,
                "{user} cancelled a Unix-socket forward it does not have: {path}",
                user=self.login.user,
                path=loggable(request.path.encode("utf-8", "surrogateescape")),
            )
            return None
        self._close_listener(listener, "cancelled by the client")
        return b""

    def _refuse(self, address: str, port: int, reason: str) -> None:
        self.note(
            "forward refusals",
            LogLevel.warn,
            "Refused remote forward for {user} from {peer}: address {address!r} port {port}: "
            "{reason}",
            user=self.login.user,
            peer=self.peer_description(),
            address=address,
            port=port,
            reason=reason,
        )

    def _cancel(self, request: wire.TcpipForward) -> bytes | None:
        listener = self.listeners.pop((request.address, request.port), None)
        if listener is None:
            self.note(
                "forward refusals",
                LogLevel.info,
                "{user} cancelled a forward it does not have: {address!r} port {port}",
                user=self.login.user,
                address=request.address,
                port=request.port,
            )
            return None
        self._close_listener(listener, "cancelled by the client")
        return b""

    def _close_listener(self, listener: ForwardListener, why: str) -> None:
        where = listener.describe()
        self.descriptors.release_listeners(self.login.user, len(listener.ports))
        self.forward_counts.remove(self.login.user)
        listener.close()
        self.metrics.forward_closed()
        self.note(
            "forwards",
            LogLevel.info,
            "Remote forward for {user} on {bound} closed: {why} ({count} connections forwarded)",
            user=self.login.user,
            bound=where,
            why=why,
            count=listener.connections,
        )
