"""
The server's C{ssh-connection} service: C{tcpip-forward} and C{cancel-tcpip-forward} open and
close listeners; every channel the client asks for is refused, because this server only
forwards ports (so C{ssh -N} works, and a shell request gets a clear no).
"""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger, LogLevel

from twisted_rfwd.errors import ChannelOpenFailed
from twisted_rfwd.protocol import wire
from twisted_rfwd.protocol.messages import loggable
from twisted_rfwd.protocol.policy import listen_addresses, privileged_port_refusal
from twisted_rfwd.server.auth import LoginIdentity
from twisted_rfwd.server.config import ServerConfig
from twisted_rfwd.server.descriptors import DescriptorBudget, ForwardCounts
from twisted_rfwd.server.listeners import BindError, ForwardListener, PortBinder, bind_forward
from twisted_rfwd.ssh.channel import Channel
from twisted_rfwd.ssh.log_budget import LogBudget
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
    ) -> None:
        super().__init__(clock, window_size=config.window_size, max_packet=config.max_packet)
        self.config = config
        self.login = login
        self.binder = binder
        self.listeners: dict[tuple[str, int], ForwardListener] = {}
        self._registry = registry if registry is not None else set()
        self.shutting_down = False
        # Shared with the factory (and so with every other connection); own ones if embedded alone.
        self.descriptors = descriptors if descriptors is not None else DescriptorBudget(1 << 30)
        self.forward_counts = forward_counts if forward_counts is not None else ForwardCounts()
        # Every line the client can repeat at will goes through this (see log_budget).
        self.log_budget: LogBudget | None = None

    def note(self, what: str, level: LogLevel, format: str, /, **fields: object) -> None:
        """Log a line the client could make us repeat, within this connection's budget."""
        if self.log_budget is None:
            self.log_budget = LogBudget(self.clock, self.peer_description())
        self.log_budget.emit(what, self._log, level, format, **fields)

    def serviceStarted(self) -> None:
        self._registry.add(self)
        self.start_keepalive(self.config.client_alive_interval, self.config.client_alive_count_max)
        self._log.info(
            "Accepted publickey for {user} from {peer}: {key_type} {fingerprint}",
            user=self.login.user,
            peer=self.peer_description(),
            key_type=self.login.key_type,
            fingerprint=self.login.fingerprint,
        )

    def serviceStopped(self) -> None:
        super().serviceStopped()
        self._registry.discard(self)
        why = self.end_reason or "the SSH connection ended"
        for listener in list(self.listeners.values()):
            self._close_listener(listener, why)
        self.listeners.clear()
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
        for listener in list(self.listeners.values()):
            self._close_listener(listener, why)
        self.listeners.clear()

    def global_request_received(self, name: bytes, data: bytes) -> bytes | None:
        if name == b"tcpip-forward":
            return self._forward(wire.TcpipForward.parse(data))
        if name == b"cancel-tcpip-forward":
            return self._cancel(wire.TcpipForward.parse(data, "cancel-tcpip-forward request"))
        return None

    def channel_open_requested(self, channel_type: bytes, data: bytes, channel: Channel) -> None:
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
        if len(self.listeners) >= self.config.max_forwards_per_connection:
            return (
                f"this connection already has {len(self.listeners)} forwards "
                "(MaxForwardsPerConnection)"
            )
        return None

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
        self.note(
            "forwards",
            LogLevel.info,
            "Remote forward for {user} on {bound} closed: {why} ({count} connections forwarded)",
            user=self.login.user,
            bound=where,
            why=why,
            count=listener.connections,
        )
