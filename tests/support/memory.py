"""
A whole rfwd-client and rfwd-server connected in memory, with no sockets and no real time.

The SSH connection runs over L{twisted.test.iosim} (semi-private, so it is wrapped here and
nowhere else).  The server's listeners are recorded by a fake binder, the client's connections to
destinations by a L{MemoryReactorClock}; both ends of every forwarded connection are
L{FakeStream}s the test drives.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import ClientFactory, ServerFactory
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.test import iosim

from tests.support.keys import new_key, public_line
from tests.support.streams import FakeStream
from twisted_rfwd.client.config import ClientConfig, HostKeyPolicy
from twisted_rfwd.client.identity import Identity
from twisted_rfwd.client.transport import ClientTransport
from twisted_rfwd.client.tunnel import Tunnel
from twisted_rfwd.protocol.spec import RemoteForward
from twisted_rfwd.server.config import ServerConfig
from twisted_rfwd.server.factory import ForwardingServerFactory, ServerTransport


class FakePort:
    """A listening port that only remembers whether it was stopped."""

    def __init__(self, address: str, port: int) -> None:
        self.address = address
        self.port = port
        self.listening = True

    def getHost(self) -> IPv4Address:
        return IPv4Address("TCP", self.address, self.port)

    def stopListening(self) -> None:
        self.listening = False

    def startListening(self) -> None:
        self.listening = True


@dataclass
class FakeBinder:
    """Records the server's binds; C{busy} ports fail like EADDRINUSE."""

    busy: set[int] = field(default_factory=set)
    bound: list[tuple[ServerFactory, FakePort]] = field(default_factory=list)
    next_port: int = 40000

    def __call__(self, factory: ServerFactory, address: str, port: int) -> IListeningPort:
        if port in self.busy:
            raise OSError(98, "Address already in use")
        if port == 0:
            self.next_port += 1
            port = self.next_port
        fake = FakePort(address, port)
        self.bound.append((factory, fake))
        return fake  # type: ignore[return-value]

    def listening(self, port: int) -> list[tuple[ServerFactory, FakePort]]:
        return [(f, p) for f, p in self.bound if p.port == port and p.listening]


class MemoryRig:
    """A server factory, a client tunnel and the pump between them."""

    def __init__(self, tmp: Path, forwards: list[RemoteForward], **server_options: Any) -> None:
        self.reactor = MemoryReactorClock()
        self.binder = FakeBinder()
        user_key = new_key()
        self.user_key = user_key
        authorized = tmp / "authorized_keys"
        authorized.write_bytes(server_options.pop("authorized_line", public_line(user_key)) + b"\n")
        self.server_config = ServerConfig(
            host_keys=[new_key()], authorized_keys=str(authorized), **server_options
        )
        self.factory = ForwardingServerFactory(self.reactor, self.server_config, self.binder)
        self.factory.doStart()
        self.client_config = ClientConfig(
            host="server.test",
            user="alice",
            port=2222,
            forwards=forwards,
            identities=[Identity(user_key, "test key")],
            strict_host_key_checking=HostKeyPolicy.ACCEPT_NEW,
            known_hosts=[str(tmp / "known_hosts")],
        )
        self.tunnel = Tunnel(self.reactor, self.client_config)
        self.server: ServerTransport | None = None
        self.client: ClientTransport | None = None
        self.pump: iosim.IOPump | None = None

    def connect(self, client_type: type[ClientTransport] = ClientTransport) -> Deferred[Tunnel]:
        """Start the SSH connection and run it until nothing more happens."""
        ready = self.tunnel.when_ready()
        server = self.factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 2222))
        client = client_type(self.tunnel)
        self.server, self.client = server, client
        self.pump = iosim.connect(
            server,
            iosim.makeFakeServer(server),
            client,
            iosim.makeFakeClient(client),
            greet=False,
        )
        self.flush()
        return ready

    def flush(self) -> None:
        assert self.pump is not None
        self.pump.flush()

    def app_connects(self, port: int, peer_port: int = 50000) -> FakeStream:
        """An application connects to the server's listener on C{port}."""
        listeners = self.binder.listening(port)
        assert listeners, f"nothing listens on port {port}"
        factory, _ = listeners[0]
        protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", peer_port))
        assert protocol is not None
        stream = FakeStream(peer=IPv4Address("TCP", "127.0.0.1", peer_port))
        stream.connect(protocol)
        self.flush()
        return stream

    def pending_destination(self) -> tuple[str, int, ClientFactory]:
        """The client's most recent connection attempt to a forward's destination."""
        assert self.reactor.tcpClients, "the client has not tried to connect anywhere"
        host, port, factory, _, _ = self.reactor.tcpClients.pop()
        return host, port, factory

    def destination_accepts(self) -> FakeStream:
        """The destination accepts the client's pending connection."""
        _, _, factory = self.pending_destination()
        protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 80))
        assert protocol is not None
        stream = FakeStream()
        stream.connect(protocol)
        self.flush()
        return stream

    def destination_refuses(self) -> None:
        """The destination refuses the client's pending connection."""
        _, _, factory = self.pending_destination()
        refused = Failure(ConnectionRefusedError(111, "Connection refused"))
        factory.clientConnectionFailed(None, refused)  # type: ignore[arg-type]
        self.flush()

    def disconnect(self) -> None:
        """Drop the SSH connection, as a broken network would."""
        assert self.server is not None and self.client is not None
        self.client.transport.loseConnection()
        self.flush()
