"""
The C{rfwd:} endpoint's transport, in memory: a whole SSH connection over iosim whose forwarded
channels go to a protocol in this process (L{attach_protocol}) instead of a destination, with a
fake socket on the server's side; and the endpoint string.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import ConnectionAborted, ConnectionDone
from twisted.internet.interfaces import IHalfCloseableProtocol, IPullProducer, IPushProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from tests.support.memory import MemoryRig
from tests.support.streams import FakeStream
from twisted_rfwd.client.config import HostKeyPolicy
from twisted_rfwd.client.endpoint import (
    ChannelTransport,
    EndpointStringError,
    RfwdServerEndpoint,
    attach_protocol,
)
from twisted_rfwd.protocol.spec import parse_remote_forward

MiB = 1024 * 1024


class Recorder(Protocol):
    """Keeps what arrives and how the connection ended."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.made = False
        self.lost: Failure | None = None

    def connectionMade(self) -> None:
        self.made = True

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure = ConnectionDone) -> None:  # type: ignore[assignment]
        self.lost = reason


@implementer(IHalfCloseableProtocol)
class HalfCloser(Recorder):
    """A recorder that hears each direction's end on its own."""

    def __init__(self) -> None:
        super().__init__()
        self.read_eof = False
        self.write_eof = False

    def readConnectionLost(self) -> None:
        self.read_eof = True

    def writeConnectionLost(self) -> None:
        self.write_eof = True


@implementer(IPushProducer)
class Pauses:
    """A streaming producer that counts how it is driven."""

    def __init__(self) -> None:
        self.paused = False
        self.pauses = 0
        self.stopped = False

    def pauseProducing(self) -> None:
        self.paused = True
        self.pauses += 1

    def resumeProducing(self) -> None:
        self.paused = False

    def stopProducing(self) -> None:
        self.stopped = True


@implementer(IPullProducer)
class Chunks:
    """A pull producer that writes one chunk each time it is asked, then closes."""

    def __init__(self, transport: ChannelTransport, chunks: list[bytes]) -> None:
        self.transport = transport
        self.chunks = chunks
        self.asked = 0

    def resumeProducing(self) -> None:
        self.asked += 1
        if self.chunks:
            self.transport.write(self.chunks.pop(0))
        if not self.chunks:
            self.transport.unregisterProducer()
            self.transport.loseConnection()

    def stopProducing(self) -> None:
        self.chunks = []


class EndpointTransportTests(TestCase):
    def connect(self, protocol_type: type[Recorder] = HalfCloser) -> tuple[MemoryRig, FakeStream]:
        """A tunnel whose forward on port 8080 feeds C{protocol_type}; one app connected."""
        tmp = Path(self.mktemp())
        tmp.mkdir()
        rig = MemoryRig(tmp, [parse_remote_forward("8080:localhost:1")])
        self.protocols: list[Recorder] = []

        def build() -> Recorder:
            protocol = protocol_type()
            self.protocols.append(protocol)
            return protocol

        factory = Factory.forProtocol(build)
        rig.client_config.channel_handler = partial(attach_protocol, rig.reactor, factory)
        self.successResultOf(rig.connect())
        app = rig.app_connects(8080, peer_port=50001)
        return rig, app

    def settle(self, rig: MemoryRig) -> None:
        """Run the pump and the zero-delay calls until neither has anything left."""
        for _ in range(1000):
            rig.flush()
            now = rig.reactor.seconds()
            if not any(call.getTime() <= now for call in rig.reactor.getDelayedCalls()):
                return
            rig.reactor.advance(0)
        self.fail("the tunnel never settled")

    @property
    def protocol(self) -> Recorder:
        self.assertEqual(len(self.protocols), 1)
        return self.protocols[0]

    def transport(self) -> ChannelTransport:
        transport = self.protocol.transport
        assert isinstance(transport, ChannelTransport)
        return transport

    def test_bytes_flow_both_ways_with_addresses(self) -> None:
        """A connection to the forwarded port is a connection of the factory's protocol: the
        app's bytes reach dataReceived, write and writeSequence reach the app, getPeer is the
        app's address on HostB and getHost the forwarded port."""
        rig, app = self.connect()
        self.assertTrue(self.protocol.made)
        transport = self.transport()
        self.assertEqual(transport.getPeer(), IPv4Address("TCP", "127.0.0.1", 50001))
        self.assertEqual(transport.getHost(), IPv4Address("TCP", "127.0.0.1", 8080))
        app.receive(b"GET / HTTP/1.0\r\n\r\n")
        self.settle(rig)
        self.assertEqual(bytes(self.protocol.received), b"GET / HTTP/1.0\r\n\r\n")
        transport.write(b"HTTP/1.0 200 OK\r\n")
        transport.writeSequence([b"\r\n", b"body"])
        self.settle(rig)
        self.assertEqual(app.drain(), b"HTTP/1.0 200 OK\r\n\r\nbody")
        self.assertIsNone(self.protocol.lost)

    def test_half_close_each_way(self) -> None:
        """The app's EOF is readConnectionLost, and the protocol may still answer; its own
        loseWriteConnection then ends the connection cleanly at both ends."""
        rig, app = self.connect()
        protocol = self.protocol
        assert isinstance(protocol, HalfCloser)
        app.receive(b"question")
        app.receive_eof()
        self.settle(rig)
        self.assertTrue(protocol.read_eof)
        self.assertIsNone(protocol.lost)
        self.transport().write(b"answer")
        self.transport().loseWriteConnection()
        self.settle(rig)
        self.assertEqual(app.drain(), b"answer")
        self.settle(rig)
        self.assertTrue(app.write_closed)
        self.assertTrue(app.closed)
        assert protocol.lost is not None
        self.assertIsInstance(protocol.lost.value, ConnectionDone)

    def test_lose_connection_sends_everything_first(self) -> None:
        """loseConnection after more than a window of writes: every byte arrives in order,
        the protocol's producer is paused while the window is used up, then the app sees
        EOF and the protocol connectionLost."""
        rig, app = self.connect()
        transport = self.transport()
        producer = Pauses()
        transport.registerProducer(producer, True)
        payload = bytes(range(256)) * (3 * MiB // 256)
        for i in range(0, len(payload), 64 * 1024):
            transport.write(payload[i : i + 64 * 1024])
        transport.loseConnection()
        self.assertGreater(producer.pauses, 0)
        received = bytearray()
        for _ in range(200):
            self.settle(rig)
            received += app.drain()
            if app.closed:
                break
        self.assertEqual(len(received), len(payload))
        self.assertEqual(bytes(received), payload)
        self.assertTrue(app.closed)
        assert self.protocol.lost is not None
        self.assertIsInstance(self.protocol.lost.value, ConnectionDone)

    def test_pull_producer_is_asked_while_the_channel_takes_more(self) -> None:
        """A pull producer (as twisted.web's static files use) is asked for a chunk per turn
        while the channel takes it, and not while the window is used up; all of it arrives."""
        rig, app = self.connect()
        transport = self.transport()
        chunks = [bytes([i]) * 64 * 1024 for i in range(64)]
        expected = b"".join(chunks)
        producer = Chunks(transport, chunks)
        transport.registerProducer(producer, False)
        received = bytearray()
        for _ in range(500):
            self.settle(rig)
            received += app.drain()
            if app.closed:
                break
        self.assertEqual(bytes(received), expected)
        self.assertEqual(producer.asked, 64)

    def test_abort_drops_what_waits(self) -> None:
        """abortConnection closes the channel without EOF; the app's socket is closed and
        the protocol hears ConnectionAborted, on a later turn."""
        rig, app = self.connect()
        transport = self.transport()
        transport.abortConnection()
        self.assertIsNone(self.protocol.lost)
        self.settle(rig)
        assert self.protocol.lost is not None
        self.assertIsInstance(self.protocol.lost.value, ConnectionAborted)
        self.assertTrue(app.closed)
        self.assertFalse(app.write_closing)

    def test_paused_reading_stops_the_sender(self) -> None:
        """While the protocol pauses reading, nothing reaches it and the app's socket stops
        being read once the window is used up; resuming delivers every byte."""
        rig, app = self.connect()
        transport = self.transport()
        transport.pauseProducing()
        payload = b"x" * (4 * MiB)
        for i in range(0, len(payload), 256 * 1024):
            app.receive(payload[i : i + 256 * 1024])
        self.settle(rig)
        self.assertEqual(self.protocol.received, b"")
        self.assertTrue(app.reading_paused)
        self.assertTrue(app.inbound, "the app's bytes should wait in its socket")
        transport.resumeProducing()
        for _ in range(200):
            self.settle(rig)
            if len(self.protocol.received) >= len(payload):
                break
        self.assertEqual(len(self.protocol.received), len(payload))

    def test_eof_closes_a_protocol_that_cannot_half_close(self) -> None:
        """As with TCP, the app's EOF ends the connection of a protocol that is not an
        IHalfCloseableProtocol: connectionLost, and the app's socket is closed."""
        rig, app = self.connect(Recorder)
        app.receive(b"bye")
        app.receive_eof()
        self.settle(rig)
        self.assertEqual(bytes(self.protocol.received), b"bye")
        self.settle(rig)
        assert self.protocol.lost is not None
        self.assertIsInstance(self.protocol.lost.value, ConnectionDone)
        self.assertTrue(app.closed)


class EndpointStringTests(TestCase):
    def parse(self, description: str) -> RfwdServerEndpoint:
        # The plugin file, found by Twisted in the checkout's twisted/plugins.
        endpoint = serverFromString(object(), description)
        assert isinstance(endpoint, RfwdServerEndpoint)
        return endpoint

    def key(self) -> str:
        from harness.keys import generate_key, write_private_key

        path = Path(self.mktemp())
        path.parent.mkdir(parents=True, exist_ok=True)
        return str(write_private_key(generate_key(), path))

    def test_keyword_form(self) -> None:
        """Every keyword lands in the client's settings; colons in values are escaped."""
        key = self.key()
        endpoint = self.parse(
            f"rfwd:host=hostb.example:port=2022:user=tunnel:identity={key}"
            ":knownHosts=/tmp/kh:remotePort=0:remoteInterface=\\:\\:1"
            ":strictHostKeyChecking=accept-new:serverAliveInterval=5:serverAliveCountMax=2"
        )
        config = endpoint.config
        self.assertEqual((config.host, config.port, config.user), ("hostb.example", 2022, "tunnel"))
        self.assertEqual(config.known_hosts, ["/tmp/kh"])
        self.assertEqual(config.strict_host_key_checking, HostKeyPolicy.ACCEPT_NEW)
        self.assertEqual((config.server_alive_interval, config.server_alive_count_max), (5, 2))
        self.assertEqual([i.source for i in config.identities], [key])
        self.assertEqual((endpoint.forward.listen_port, endpoint.forward.bind_address), (0, "::1"))
        self.assertEqual(endpoint.forward.request_address, "::1")

    def test_short_form(self) -> None:
        """C{rfwd:user@host:remotePort} with keywords after it."""
        endpoint = self.parse(f"rfwd:tunnel@hostb.example:8080:identity={self.key()}")
        self.assertEqual((endpoint.config.user, endpoint.config.host), ("tunnel", "hostb.example"))
        self.assertEqual(endpoint.config.port, 22)
        self.assertEqual(endpoint.forward.listen_port, 8080)
        self.assertEqual(endpoint.forward.request_address, "localhost")

    def test_mistakes_are_one_line(self) -> None:
        """An unknown option, a missing remote port or a bad value is a ValueError that
        names it."""
        key = self.key()
        cases = {
            f"rfwd:host=h:remotePort=1:identity={key}:bogus=1": "unknown option 'bogus'",
            f"rfwd:host=h:identity={key}": "give remotePort=N",
            f"rfwd:host=h:remotePort=70000:identity={key}": "remotePort must be 0 to 65535",
            f"rfwd:host=h:remotePort=1:identity={key}:strictHostKeyChecking=maybe": "accept-new",
        }
        for description, words in cases.items():
            error = self.assertRaises(ValueError, serverFromString, object(), description)
            self.assertIsInstance(error, EndpointStringError)
            self.assertIn(words, str(error))
            self.assertNotIn("\n", str(error))

    def test_ipv6_peer(self) -> None:
        """An IPv6 originator is an IPv6Address."""
        from twisted_rfwd.client.endpoint import _address

        self.assertEqual(_address("::1", 5), IPv6Address("TCP", "::1", 5))
