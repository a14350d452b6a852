"""
The client's SSH transport: Conch's client transport with our packet layer, checking the host key
against known_hosts and logging in.  What it learns goes to its owner (the tunnel) through
L{ITransportOwner}.
"""

from __future__ import annotations

from twisted.conch.ssh.keys import Key
from twisted.conch.ssh.transport import (
    DISCONNECT_BY_APPLICATION,
    DISCONNECT_HOST_KEY_NOT_VERIFIABLE,
    SSHClientTransport,
)
from twisted.internet.defer import Deferred, succeed
from twisted.python.failure import Failure

from twisted_rfwd.client.agent import AgentKeys
from twisted_rfwd.client.connection import ForwardingClientConnection
from twisted_rfwd.client.interfaces import ITransportOwner
from twisted_rfwd.client.userauth import PublicKeyAuth
from twisted_rfwd.errors import ConnectionClosed, HostKeyError, MalformedPacket
from twisted_rfwd.protocol.certificates import (
    CERT_ALGORITHMS,
    is_certificate,
    parse_certificate,
)
from twisted_rfwd.protocol.messages import loggable
from twisted_rfwd.ssh.transport import PUBLIC_KEY_ALGORITHMS, TransportMixin

__all__ = ["ClientTransport"]


class ClientTransport(TransportMixin, SSHClientTransport):
    """Conch's client transport, checking host keys against known_hosts and logging in."""

    def __init__(self, tunnel: ITransportOwner) -> None:
        self.tunnel = tunnel
        self.clock = tunnel.reactor
        config = tunnel.config
        self.rekey_bytes = config.rekey_bytes
        self.rekey_seconds = config.rekey_seconds
        # HostKeyAlgorithms, in its order, of those we implement; by default, with the
        # certificate algorithms first, as OpenSSH's default list (a list given names none, so
        # none are offered); then ordered by known_hosts.
        wanted = [a for a in config.host_key_algorithms if a in PUBLIC_KEY_ALGORITHMS]
        certs = []
        if wanted == PUBLIC_KEY_ALGORITHMS:
            certs = [c for w in wanted for c, plain in CERT_ALGORITHMS.items() if plain == w]
        self.supportedPublicKeys = tunnel.known_hosts.order_algorithms(certs + wanted)
        self.supportedCiphers = list(config.ciphers)
        self.supportedMACs = list(config.macs)
        self.supportedKeyExchanges = list(config.kex_algorithms)
        self._logging_in = False

    def connectionMade(self) -> None:
        self.tunnel.transport_connected(self)
        super().connectionMade()

    def say_goodbye(self) -> None:
        """Tell the server we are closing (it closes the connection in turn)."""
        self.sendDisconnect(DISCONNECT_BY_APPLICATION, b"rfwd-client closing")

    def hang_up(self) -> None:
        """Close the TCP connection without a goodbye, once what is written has left."""
        if self.transport is not None:
            self.transport.loseConnection()

    def abort(self) -> None:
        """Drop the TCP connection at once, without a goodbye."""
        if self.transport is not None:
            self.transport.abortConnection()

    def certified_host_key(self, host_key: bytes) -> Key | None:
        if not is_certificate(host_key):
            return None
        try:
            key: Key = Key.fromString(parse_certificate(host_key).key_blob, type="blob")
            return key
        except (MalformedPacket, ValueError):
            return None

    def verifyHostKey(self, hostKey: bytes, fingerprint: bytes) -> Deferred[bool]:
        try:
            if is_certificate(hostKey):
                now = self.tunnel.reactor.seconds()
                self.tunnel.known_hosts.verify_certificate(parse_certificate(hostKey), now)
            else:
                self.tunnel.known_hosts.verify(Key.fromString(hostKey))
        except HostKeyError as e:
            self.tunnel.fail(e)
            # Disconnect here: Conch's own errback would send the peer a traceback.
            self.sendDisconnect(DISCONNECT_HOST_KEY_NOT_VERIFIABLE, b"host key verification failed")
            return Deferred()
        return succeed(True)

    def connectionSecure(self) -> None:
        # Conch calls this after every NEWKEYS, re-exchanges included: log in only once.
        if self._logging_in:
            return
        self._logging_in = True
        tunnel = self.tunnel
        config = tunnel.config
        connection = ForwardingClientConnection(tunnel.reactor, config, tunnel)
        agent = AgentKeys(tunnel.reactor, config.agent_socket) if config.agent_socket else None
        self.requestService(
            PublicKeyAuth(
                config.user,
                config.identities,
                connection,
                tunnel.fail,
                password=config.password,
                agent=agent,
                identities_only=config.identities_only,
                accepted_algorithms=config.pubkey_accepted_algorithms,
                certificates=config.certificates,
            )
        )

    def receiveError(self, reasonCode: int, description: bytes) -> None:
        # The server's words, kept short: they reach the log and the status file.
        self.tunnel.peer_disconnected(loggable(description, 200))

    def connectionLost(self, reason: Failure | None = None) -> None:
        super().connectionLost(reason)
        self.tunnel.connection_lost(reason if reason is not None else Failure(ConnectionClosed("")))
