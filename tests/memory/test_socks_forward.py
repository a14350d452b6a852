"""
Remote dynamic forwarding (C{-R port}) end to end, in memory: the application on the server's
side speaks SOCKS through the forward, and rfwd-client connects where it asks.
"""

from __future__ import annotations

from pathlib import Path

from twisted.trial.unittest import TestCase

from tests.support.memory import MemoryRig
from twisted_rfwd.protocol.socks import RemoteOpenPolicy
from twisted_rfwd.protocol.spec import parse_remote_forward

GREETING = b"\x05\x01\x00"
CONNECT_LOOPBACK_80 = b"\x05\x01\x00\x01\x7f\x00\x00\x01\x00\x50"


class SocksForwardTests(TestCase):
    def rig(self, *permit: str) -> MemoryRig:
        tmp = Path(self.mktemp())
        tmp.mkdir()
        rig = MemoryRig(tmp, [parse_remote_forward("1080")])
        if permit:
            rig.client_config.permit_remote_open = RemoteOpenPolicy.parse(list(permit))
        self.successResultOf(rig.connect())
        return rig

    def settle(self, rig: MemoryRig) -> None:
        """Run what was left for the next reactor turn, then pump the SSH connection."""
        rig.reactor.advance(0)
        rig.flush()

    def test_socks5_connect_reaches_destination(self) -> None:
        """A SOCKS5 CONNECT through the forward makes the client connect there; the reply
        comes only once it is connected, and then bytes flow both ways, the first ones sent
        along with the request included."""
        rig = self.rig()
        app = rig.app_connects(1080)
        app.receive(GREETING)
        rig.flush()
        self.assertEqual(app.drain(), b"\x05\x00")
        app.receive(CONNECT_LOOPBACK_80[:3])
        rig.flush()
        self.assertFalse(rig.reactor.tcpClients)
        app.receive(CONNECT_LOOPBACK_80[3:] + b"early")
        rig.flush()
        host, port = rig.reactor.tcpClients[-1][:2]
        self.assertEqual((host, port), ("127.0.0.1", 80))
        self.assertEqual(app.drain(), b"")
        destination = rig.destination_accepts()
        reply = app.drain()
        self.assertEqual(reply[:4], b"\x05\x00\x00\x01")
        self.assertEqual(destination.drain(), b"early")
        app.receive(b"hello")
        rig.flush()
        self.assertEqual(destination.drain(), b"hello")
        destination.receive(b"world")
        rig.flush()
        self.assertEqual(app.drain(), b"world")

    def test_socks4a_granted(self) -> None:
        """SOCKS4A: the host after the user id is where the client connects; 0x5A grants."""
        rig = self.rig()
        app = rig.app_connects(1080)
        app.receive(b"\x04\x01\x00\x50\x00\x00\x00\x01user\x00127.0.0.1\x00")
        rig.flush()
        self.assertEqual(rig.reactor.tcpClients[-1][:2], ("127.0.0.1", 80))
        self.assertEqual(app.drain(), b"")
        rig.destination_accepts()
        self.assertEqual(app.drain(), b"\x00\x5a" + b"\x00" * 6)

    def test_socks5_ipv6(self) -> None:
        """A SOCKS5 IPv6 destination is connected by its address, and permitted by it."""
        rig = self.rig("[::1]:80")
        app = rig.app_connects(1080)
        app.receive(GREETING + b"\x05\x01\x00\x04" + b"\x00" * 15 + b"\x01\x00\x50")
        rig.flush()
        self.assertEqual(rig.reactor.tcpClients[-1][:2], ("::1", 80))

    def test_refused_destination(self) -> None:
        """A destination PermitRemoteOpen does not allow gets SOCKS5 reply 2, no connection is
        tried, and the forwarded connection is closed."""
        rig = self.rig("127.0.0.1:443")
        app = rig.app_connects(1080)
        app.receive(GREETING + CONNECT_LOOPBACK_80)
        rig.flush()
        self.settle(rig)
        self.assertFalse(rig.reactor.tcpClients)
        data = app.drain()
        self.assertEqual(data[:2], b"\x05\x00")
        self.assertEqual(data[2:4], b"\x05\x02")
        self.assertTrue(app.closed or app.write_closed)

    def test_socks4_refused(self) -> None:
        """SOCKS4 clients are refused with 0x5B."""
        rig = self.rig("none")
        app = rig.app_connects(1080)
        app.receive(b"\x04\x01\x00\x50\x7f\x00\x00\x01\0")
        self.settle(rig)
        self.assertEqual(app.drain(), b"\x00\x5b" + b"\0" * 6)
        self.assertFalse(rig.reactor.tcpClients)

    def test_connect_refused(self) -> None:
        """A destination that refuses the connection is SOCKS5 reply 5 (connection refused)."""
        rig = self.rig()
        app = rig.app_connects(1080)
        app.receive(GREETING + CONNECT_LOOPBACK_80)
        rig.flush()
        rig.destination_refuses()
        self.settle(rig)
        self.assertEqual(app.drain()[2:4], b"\x05\x05")
        self.assertTrue(app.closed or app.write_closed)

    def test_not_socks(self) -> None:
        """Something that is not SOCKS (an HTTP request) is closed without a reply."""
        rig = self.rig()
        app = rig.app_connects(1080)
        app.receive(b"GET / HTTP/1.0\r\n\r\n")
        self.settle(rig)
        self.assertEqual(app.drain(), b"")
        self.assertTrue(app.closed or app.write_closed)
        self.assertFalse(rig.reactor.tcpClients)

    def test_application_leaves_while_connecting(self) -> None:
        """The application closing during the connect cancels it; nothing is left open."""
        rig = self.rig()
        app = rig.app_connects(1080)
        app.receive(GREETING + CONNECT_LOOPBACK_80)
        rig.flush()
        connector = rig.reactor.connectors[-1]
        self.assertFalse(connector.stoppedConnecting)
        app.reset()
        self.settle(rig)
        self.assertTrue(connector.stoppedConnecting)
        self.assertFalse(self.client_channels(rig))

    def client_channels(self, rig: MemoryRig) -> dict[int, object]:
        tunnel = rig.tunnel
        assert tunnel.connection is not None
        return dict(tunnel.connection.channels)
