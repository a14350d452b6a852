"""
The SSH server factory: host keys, the login portal, and which service runs when.

This is the piece an embedding program listens with::

    factory = ForwardingServerFactory(reactor, ServerConfig(host_keys=[key]))
    serverFromString(reactor, "tcp:2222").listen(factory)

It also decides which accepted connections may stay: sshd's C{MaxStartups} and
C{PerSourceMaxStartups} (L{twisted_rfwd.server.admission}), and the process's file descriptors
(L{twisted_rfwd.server.descriptors}), which it shares with the forwards it serves.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.conch.ssh.factory import SSHFactory
from twisted.conch.ssh.service import SSHService
from twisted.conch.ssh.transport import (
    DISCONNECT_BY_APPLICATION,
    DISCONNECT_CONNECTION_LOST,
    DISCONNECT_KEY_EXCHANGE_FAILED,
    DISCONNECT_PROTOCOL_ERROR,
    SSHServerTransport,
)
from twisted.cred.portal import Portal
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IAddress, IDelayedCall, IReactorSocket, IReactorTime
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from twisted_rfwd.errors import RemoteProtocolError
from twisted_rfwd.protocol.certificates import CERT_ALGORITHMS
from twisted_rfwd.protocol.messages import loggable
from twisted_rfwd.server.admission import DROP_MESSAGE, Startup, StartupGate, ThrottledLog
from twisted_rfwd.server.auth import (
    AuthorizedKeysChecker,
    AuthorizedKeysFiles,
    ForwardingAvatar,
    ForwardingRealm,
    ServerUserAuth,
)
from twisted_rfwd.server.config import ServerConfig
from twisted_rfwd.server.connection import ForwardingServerConnection
from twisted_rfwd.server.descriptors import DescriptorBudget, ForwardCounts
from twisted_rfwd.server.host_keys import host_key_tables
from twisted_rfwd.server.listeners import PortBinder, SocketBinder
from twisted_rfwd.server.passwords import PasswordChecker
from twisted_rfwd.ssh.metrics import NO_METRICS, Metrics
from twisted_rfwd.ssh.transport import PUBLIC_KEY_ALGORITHMS, TransportMixin

__all__ = ["ForwardingServerFactory", "MatchHook", "ServerTransport"]

_log = Logger()


class ServerTransport(TransportMixin, SSHServerTransport):
    """Conch's server transport with our algorithms and an honest C{server-sig-algs}."""

    _log = Logger()
    login_grace_time: float = 120.0
    _grace: IDelayedCall | None = None
    # Set by the factory: this connection's MaxStartups slot (until login) and descriptor.
    startup: Startup | None = None
    # What server-sig-algs announces: the configured PubkeyAcceptedAlgorithms.
    pubkey_algorithms: list[bytes] = PUBLIC_KEY_ALGORITHMS
    descriptors: DescriptorBudget | None = None
    # For metrics: whether it logged in, and why it ended (see twisted_rfwd.ssh.metrics).
    logged_in = False
    disconnect_reason: str | None = None

    def connectionMade(self) -> None:
        super().connectionMade()
        # sshd's LoginGraceTime counts from the TCP connection, not from the userauth request
        # (where Conch's own timeout starts): a peer that never finishes the key exchange is
        # dropped too.
        if self.clock is not None and self.login_grace_time > 0:
            self._grace = self.clock.callLater(self.login_grace_time, self._grace_expired)

    def _grace_expired(self) -> None:
        self._grace = None
        self._log.info(
            "{peer} did not log in within {seconds:g} s; disconnecting",
            peer=self._peer(),
            seconds=self.login_grace_time,
        )
        self.disconnect_reason = "login_grace_time"
        self.sendDisconnect(DISCONNECT_PROTOCOL_ERROR, b"login grace time exceeded")
        if self.transport is not None:
            self.transport.abortConnection()

    def setService(self, service: Any) -> None:
        if isinstance(service, ForwardingServerConnection):
            # Logged in: no longer one of MaxStartups' unauthenticated connections.
            self.logged_in = True
            self._release_startup()
            if self._grace is not None:
                if self._grace.active():
                    self._grace.cancel()
                self._grace = None
        super().setService(service)

    def _release_startup(self) -> None:
        startup, self.startup = self.startup, None
        if startup is not None:
            startup.release()

    def connectionLost(self, reason: Any = None) -> None:
        if self._grace is not None and self._grace.active():
            self._grace.cancel()
        self._grace = None
        self._release_startup()
        descriptors, self.descriptors = self.descriptors, None
        if descriptors is not None:
            descriptors.release_connection()
        super().connectionLost(reason)
        self.metrics.ssh_connection_closed(
            self.disconnect_reason or "connection_lost", self.logged_in
        )

    def sendDisconnect(self, reason: int, desc: bytes) -> None:
        if self.disconnect_reason is None:
            self.disconnect_reason = _disconnect_reason(reason, desc, self.factory)
        super().sendDisconnect(reason, desc)

    def receiveError(self, reasonCode: int, description: bytes) -> None:
        # A client saying goodbye is not an error on our side.
        if self.disconnect_reason is None:
            self.disconnect_reason = "peer"
        self._log.info(
            "{peer} disconnected: {reason} (code {code})",
            peer=self._peer(),
            reason=loggable(description, 200),
            code=reasonCode,
        )

    def ssh_SERVICE_REQUEST(self, packet: bytes) -> None:
        # Conch would start userauth again and stop the running connection: its forwards.
        if isinstance(self.service, ForwardingServerConnection):
            raise RemoteProtocolError("service request after authentication")
        super().ssh_SERVICE_REQUEST(packet)

    def sendExtInfo(self, extensions: list[tuple[bytes, bytes]]) -> None:
        # Conch advertises its host-key algorithms here; clients read this as the user-key
        # algorithms we accept, and OpenSSH skips RSA keys if rsa-sha2-* are missing.
        super().sendExtInfo([(b"server-sig-algs", b",".join(self.pubkey_algorithms))])


class _Dropped(Protocol):
    """A connection past MaxStartups: sshd's one line, then closed."""

    def __init__(self, descriptors: DescriptorBudget) -> None:
        self._descriptors = descriptors

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(DROP_MESSAGE)
        self.transport.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._descriptors.release_connection()


def _disconnect_reason(code: int, description: bytes, factory: object) -> str:
    """Why we disconnect, as one of the metrics' few reasons."""
    if description == b"Too many authentication failures":
        return "auth_failures"
    if code == DISCONNECT_BY_APPLICATION and getattr(factory, "shutting_down", False):
        return "shutdown"
    return _DISCONNECT_CODES.get(code, "by_application")


_DISCONNECT_CODES = {
    DISCONNECT_PROTOCOL_ERROR: "protocol_error",
    DISCONNECT_KEY_EXCHANGE_FAILED: "key_exchange_failed",
    DISCONNECT_CONNECTION_LOST: "keepalive_timeout",
}


MatchHook = Callable[[ServerConfig, str, str | None, str | None, int | None], ServerConfig]
"""C{(config, user, address, local_address, local_port) -> that connection's config}."""


def _ip(addr: object) -> str | None:
    """The IP address of a TCP address object; None for other kinds (UNIX sockets, fakes)."""
    host = getattr(addr, "host", None)
    return host if isinstance(host, str) and host else None


def _source(addr: IAddress) -> str:
    """The address MaxStartups counts by: the peer's IP address (UNIX sockets: all one)."""
    host = getattr(addr, "host", None)
    return host if isinstance(host, str) and host else type(addr).__name__


class ForwardingServerFactory(SSHFactory):
    """
    Serves remote forwarding to clients whose keys are in their authorized_keys.

    @ivar descriptors: the process's file descriptors, shared by SSH connections (counted here)
        and forwards (counted by their connections).
    @ivar forward_counts: forwards held per login name, for C{max_forwards_per_user}.
    @ivar startups: the unauthenticated connections, for MaxStartups.
    """

    protocol = ServerTransport
    noisy = False

    def __init__(
        self,
        reactor: Any,
        config: ServerConfig,
        binder: PortBinder | None = None,
        descriptors: DescriptorBudget | None = None,
        random_below: Callable[[int], int] | None = None,
        match: MatchHook | None = None,
        metrics: Metrics = NO_METRICS,
    ) -> None:
        """
        @param descriptors: the budget to share (default: measured from this process).
        @param random_below: C{n -> [0, n)} for MaxStartups' random early drop (tests).
        @param match: per-connection settings (sshd's Match blocks), e.g. a
            L{twisted_rfwd.server.config_file.MatchRules}: see L{config_for}.
        @param metrics: hears what happens, for operators (L{twisted_rfwd.ssh.metrics}); may be
            set later, before the first connection.
        """
        if not config.host_keys:
            raise ValueError("ServerConfig.host_keys is empty: a server needs a host key")
        self.reactor: IReactorTime = reactor
        self.config = config
        self.match = match
        self.metrics = metrics
        self.binder: PortBinder = (
            binder if binder is not None else SocketBinder(IReactorSocket(reactor))
        )
        checker = AuthorizedKeysChecker(AuthorizedKeysFiles(config.authorized_keys), reactor)
        self.portal = Portal(ForwardingRealm(), [checker, PasswordChecker(reactor)])
        # Certificates (HostCertificate) under their algorithms' names, beside the keys.
        self.publicKeys, self.privateKeys = host_key_tables(
            config.host_keys, config.host_certificates
        )
        self.primes = None
        self.connections: set[ForwardingServerConnection] = set()
        self.shutting_down = False
        self.descriptors = (
            descriptors if descriptors is not None else DescriptorBudget.for_this_process()
        )
        self.forward_counts = ForwardCounts()
        self.startups = StartupGate(
            reactor, config.max_startups, config.per_source_max_startups, random_below
        )
        self.descriptor_refusals = ThrottledLog(
            reactor, "Refused new SSH connections: too few file descriptors left"
        )

    def startFactory(self) -> None:
        # Listening sockets, log files and the reactor are open by now: they are the base.
        self.descriptors.rebase()
        _log.info("File descriptors: {budget}", budget=self.descriptors.describe())
        super().startFactory()

    def getPrimes(self) -> None:
        """No group-exchange moduli: the elliptic-curve exchanges are all we offer."""
        return None

    def buildProtocol(self, addr: Any) -> Any:
        """
        A L{ServerTransport}; or a protocol that sends sshd's line and closes, past MaxStartups;
        or None, which closes the socket at once, when descriptors run short.  (Typed C{Any}:
        callers that build one in memory know they get a L{ServerTransport}.)
        """
        source = _source(addr)
        if not self.descriptors.acquire_connection():
            # None: Twisted closes the socket at once, without a write to wait for.
            self.descriptor_refusals.event("no descriptor", f"from {source}")
            self.metrics.ssh_connection_refused(max_startups=False)
            return None
        startup = self.startups.admit(source)
        if startup is None:
            self.metrics.ssh_connection_refused(max_startups=True)
            return _Dropped(self.descriptors)
        transport = super().buildProtocol(addr)
        assert isinstance(transport, ServerTransport)
        transport.metrics = self.metrics
        self.metrics.ssh_connection_opened()
        transport.startup = startup
        transport.descriptors = self.descriptors
        # A certificate algorithm is offered when its plain algorithm is allowed; certificates
        # first, as in sshd's default HostKeyAlgorithms.
        offered = list(dict.fromkeys(transport.supportedPublicKeys))
        allowed = self.config.host_key_algorithms
        transport.supportedPublicKeys = [
            name for name in offered if CERT_ALGORITHMS.get(name) in allowed
        ] + [name for name in offered if name in PUBLIC_KEY_ALGORITHMS and name in allowed]
        transport.pubkey_algorithms = list(self.config.pubkey_accepted_algorithms)
        transport.clock = self.reactor
        transport.login_grace_time = self.config.login_grace_time
        transport.rekey_bytes = self.config.rekey_bytes
        transport.rekey_seconds = self.config.rekey_seconds
        transport.supportedCiphers = list(self.config.ciphers)
        transport.supportedMACs = list(self.config.macs)
        transport.supportedKeyExchanges = list(self.config.kex_algorithms)
        return transport

    def drain(self, timeout: float) -> Deferred[None]:
        """
        Shut down gracefully: close every forward's listener, let forwarded connections finish
        for up to C{timeout} seconds, then tell each client the server is going away.
        """
        self.shutting_down = True
        connections = list(self.connections)
        for connection in connections:
            connection.stop_forwarding("the server is shutting down")
        idle = DeferredList([c.when_idle() for c in connections], consumeErrors=True)
        idle.addTimeout(timeout, self.reactor)

        def disconnect(_: object) -> Deferred[None]:
            ended = []
            for connection in connections:
                ended.append(connection.when_stopped())
                if not connection.stopped:
                    connection.transport.sendDisconnect(
                        DISCONNECT_BY_APPLICATION, b"the server is shutting down"
                    )
            # Let the goodbyes leave before the reactor drops every socket.
            gone = DeferredList(ended, consumeErrors=True).addTimeout(5, self.reactor)
            return gone.addBoth(lambda _: None)

        return idle.addBoth(disconnect)

    def config_for(
        self,
        user: str,
        address: str | None = None,
        local_address: str | None = None,
        local_port: int | None = None,
    ) -> ServerConfig:
        """
        The settings for one connection of C{user} (sshd applies its Match blocks once the user
        name arrives): C{config} with the C{match} hook's changes, if there is a hook.
        C{address} is the client's IP address, C{local_address} and C{local_port} where it
        connected to.
        """
        if self.match is None:
            return self.config
        return self.match(self.config, user, address, local_address, local_port)

    def config_for_transport(self, transport: Any, user: str) -> ServerConfig:
        """L{config_for} with the addresses of C{transport}'s socket (a L{ServerTransport})."""
        socket = getattr(transport, "transport", None)
        peer = socket.getPeer() if socket is not None else None
        host = socket.getHost() if socket is not None else None
        return self.config_for(
            user, _ip(peer), _ip(host), getattr(host, "port", None) if _ip(host) else None
        )

    def getService(self, transport: Any, service: bytes) -> Callable[[], SSHService] | None:
        if service == b"ssh-userauth":
            return lambda: ServerUserAuth(
                self.reactor, self.config.login_grace_time, self.config.max_auth_tries
            )
        # Conch sets "avatar" on the transport only once logged in (and its connectionLost
        # tests for the attribute itself), so it cannot be declared on the class.
        avatar = getattr(transport, "avatar", None)
        if service == b"ssh-connection" and isinstance(avatar, ForwardingAvatar):
            login = avatar.login
            config = self.config_for_transport(transport, login.user)
            if config is not self.config:
                # RekeyLimit in a Match block: the byte limit at once, the time from the next
                # key exchange on.
                transport.rekey_bytes = config.rekey_bytes
                transport.rekey_seconds = config.rekey_seconds
            return lambda: ForwardingServerConnection(
                self.reactor,
                config,
                login,
                self.binder,
                self.connections,
                self.descriptors,
                self.forward_counts,
                metrics=self.metrics,
            )
        return None
