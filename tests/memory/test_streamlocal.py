"""
Unix-socket remote forwards (OpenSSH's streamlocal extension) end to end in memory: real SSH over
iosim, a real socket file on the server's side (under a memory reactor, so nothing is accepted
from it: connections are handed to its factory), fake streams at the forwarded ends.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Any

from twisted.internet.address import UNIXAddress
from twisted.internet.protocol import ServerFactory
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase

from tests.support.memory import FakeBinder, MemoryRig
from tests.support.streams import FakeStream
from twisted_rfwd.client.connection import ForwardingClientConnection
from twisted_rfwd.client.forwards import ForwardStatus, ForwardTable
from twisted_rfwd.errors import ChannelOpenFailed
from twisted_rfwd.protocol import wire
from twisted_rfwd.protocol.spec import parse_remote_forward
from twisted_rfwd.server.connection import ForwardingServerConnection
from twisted_rfwd.server.listeners import SocketFileBinder, StreamLocalListener, UnixSocketBinder


class _FilesToo(FakeBinder):
    """The fake port binder, with real Unix sockets beside it."""

    reactor: Any = None

    def socket_file_binder(self) -> SocketFileBinder:
        return UnixSocketBinder(self.reactor)


class StreamLocalMemoryTests(TestCase):
    def setUp(self) -> None:
        # sun_path is short: a directory of our own under the system's temp directory.
        self.sockets = Path(tempfile.mkdtemp(prefix="rfwd-sl-"))
        self.addCleanup(shutil.rmtree, self.sockets, True)

    def rig(self, *specs: str, **server_options: Any) -> MemoryRig:
        """A memory rig whose server makes real socket files (under its memory reactor)."""
        tmp = Path(self.mktemp())
        tmp.mkdir()
        rig = MemoryRig(tmp, [parse_remote_forward(s) for s in specs], **server_options)
        binder = _FilesToo()
        binder.reactor = rig.reactor
        rig.binder = rig.factory.binder = binder
        return rig

    def server_connection(self, rig: MemoryRig) -> ForwardingServerConnection:
        assert rig.server is not None
        service = rig.server.service
        assert isinstance(service, ForwardingServerConnection)
        return service

    def app_connects(self, rig: MemoryRig, path: str) -> FakeStream:
        """A local process connects to the server's socket at C{path}."""
        listener = self.server_connection(rig).socket_listeners[path]
        factory = listener.ports[0].factory  # type: ignore[attr-defined]
        assert isinstance(factory, ServerFactory)
        protocol = factory.buildProtocol(UNIXAddress(None))
        assert protocol is not None
        stream = FakeStream()
        stream.connect(protocol)
        rig.flush()
        return stream

    def logged(self, events: EventLoggingObserver) -> str:
        return "\n".join(formatEvent(event) for event in events)

    def settle(self, rig: MemoryRig) -> None:
        """Run the SSH exchange and the reactor's pending calls (a port closes a turn later)."""
        rig.flush()
        rig.reactor.advance(0)
        rig.flush()

    def test_remote_socket_relays_both_ways(self) -> None:
        """-R /remote.sock:host:port: the socket file (mode 0600) relays to host:port and back."""
        remote = str(self.sockets / "remote.sock")
        rig = self.rig(f"{remote}:127.0.0.1:80")
        tunnel = self.successResultOf(rig.connect())
        self.assertEqual(tunnel.forwards[0].status, ForwardStatus.LISTENING)
        self.assertTrue(stat.S_ISSOCK(os.stat(remote).st_mode))
        self.assertEqual(stat.S_IMODE(os.stat(remote).st_mode), 0o600)
        app = self.app_connects(rig, remote)
        host, port = rig.reactor.tcpClients[-1][:2]
        self.assertEqual((host, port), ("127.0.0.1", 80))
        destination = rig.destination_accepts()
        app.receive(b"hello")
        rig.flush()
        self.assertEqual(destination.drain(), b"hello")
        destination.receive(b"world")
        rig.flush()
        self.assertEqual(app.drain(), b"world")

    def test_cancel_removes_the_socket_file(self) -> None:
        """Cancelling the forward closes the socket and removes its file."""
        remote = str(self.sockets / "remote.sock")
        rig = self.rig(f"{remote}:127.0.0.1:80")
        tunnel = self.successResultOf(rig.connect())
        cancelled = tunnel.cancel_forward(tunnel.forwards[0].spec)
        self.settle(rig)
        self.successResultOf(cancelled)
        self.assertEqual(self.server_connection(rig).socket_listeners, {})
        self.assertFalse(os.path.lexists(remote))

    def test_disconnect_removes_the_socket_file(self) -> None:
        """The SSH connection's end closes its sockets and removes their files."""
        remote = str(self.sockets / "remote.sock")
        rig = self.rig(f"{remote}:127.0.0.1:80")
        self.successResultOf(rig.connect())
        connection = self.server_connection(rig)
        rig.disconnect()
        self.settle(rig)
        self.assertFalse(os.path.lexists(remote))
        self.assertEqual(connection.descriptors.listeners_of("alice"), 0)
        self.assertEqual(connection.forward_counts.of("alice"), 0)

    def test_port_to_local_socket(self) -> None:
        """-R port:/local.sock: each forwarded-tcpip channel connects to the Unix socket."""
        local = str(self.sockets / "local.sock")
        rig = self.rig(f"8080:{local}")
        self.successResultOf(rig.connect())
        app = rig.app_connects(8080)
        path, factory = rig.reactor.unixClients[-1][:2]
        self.assertEqual(path, local)
        protocol = factory.buildProtocol(UNIXAddress(local))
        destination = FakeStream()
        destination.connect(protocol)
        rig.flush()
        app.receive(b"ping")
        rig.flush()
        self.assertEqual(destination.drain(), b"ping")

    def test_refused_when_disabled(self) -> None:
        """allow_stream_local_forwarding off: the forward is refused and no file is made."""
        remote = str(self.sockets / "remote.sock")
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        rig = self.rig(f"{remote}:127.0.0.1:80", allow_stream_local_forwarding=False)
        tunnel = self.successResultOf(rig.connect())
        self.assertEqual(tunnel.forwards[0].status, ForwardStatus.REFUSED)
        self.assertFalse(os.path.lexists(remote))
        self.assertIn("(AllowStreamLocalForwarding)", self.logged(events))

    def test_refused_without_socket_binder(self) -> None:
        """A server whose binder makes no real sockets (a test's fake) refuses, making none."""
        remote = str(self.sockets / "remote.sock")
        tmp = Path(self.mktemp())
        tmp.mkdir()
        rig = MemoryRig(tmp, [parse_remote_forward(f"{remote}:127.0.0.1:80")])
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        tunnel = self.successResultOf(rig.connect())
        self.assertEqual(tunnel.forwards[0].status, ForwardStatus.REFUSED)
        self.assertFalse(os.path.lexists(remote))
        self.assertIn("cannot listen on Unix sockets", self.logged(events))

    def test_relative_path_refused(self) -> None:
        """A relative socket path is refused (it would depend on the server's directory)."""
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        rig = self.rig("rel/remote.sock:127.0.0.1:80")
        tunnel = self.successResultOf(rig.connect())
        self.assertEqual(tunnel.forwards[0].status, ForwardStatus.REFUSED)
        self.assertIn("the socket path must be absolute", self.logged(events))

    def test_existing_file_refused_then_unlinked(self) -> None:
        """An existing socket file: refused by default, replaced with StreamLocalBindUnlink."""
        remote = str(self.sockets / "remote.sock")
        first = self.rig(f"{remote}:127.0.0.1:80")
        self.successResultOf(first.connect())
        first_connection = self.server_connection(first)
        second = self.rig(f"{remote}:127.0.0.1:80")
        tunnel = self.successResultOf(second.connect())
        self.assertEqual(tunnel.forwards[0].status, ForwardStatus.REFUSED)
        third = self.rig(f"{remote}:127.0.0.1:80", stream_local_bind_unlink=True)
        tunnel = self.successResultOf(third.connect())
        self.assertEqual(tunnel.forwards[0].status, ForwardStatus.LISTENING)
        # The first forward's end leaves the file now owned by the third alone.
        first.disconnect()
        self.settle(first)
        self.assertEqual(first_connection.socket_listeners, {})
        self.assertTrue(os.path.lexists(remote))
        third.disconnect()
        self.settle(third)
        self.assertFalse(os.path.lexists(remote))

    def test_client_refuses_unknown_path(self) -> None:
        """A forwarded-streamlocal channel for a path the client never asked for is refused."""
        remote = str(self.sockets / "remote.sock")
        rig = self.rig(f"{remote}:127.0.0.1:80")
        self.successResultOf(rig.connect())
        client = rig.tunnel.connection
        assert isinstance(client, ForwardingClientConnection)
        payload = wire.ForwardedStreamlocal(str(self.sockets / "other.sock")).pack()
        with self.assertRaises(ChannelOpenFailed):
            client.channel_open_requested(
                b"forwarded-streamlocal@openssh.com",
                payload,
                None,  # type: ignore[arg-type]
            )

    def test_listener_describes_a_long_path_briefly(self) -> None:
        """The client chose the path: log lines get it cut short."""
        listener = StreamLocalListener(None, "/" + "x" * 500, "alice")  # type: ignore[arg-type]
        self.assertLess(len(listener.describe()), 100)


class StreamLocalTableTests(TestCase):
    def test_tcp_channel_never_matches_a_socket_forward(self) -> None:
        """forwarded-tcpip for C{localhost} port 0 does not match a socket forward (port 0)."""
        table = ForwardTable([parse_remote_forward("/r.sock:127.0.0.1:80")])
        table[0].listening(0)
        self.assertIsNone(table.forward_for("localhost", 0))
        self.assertEqual(table.forward_for_path("/r.sock"), table[0].spec)
        self.assertIsNone(table.forward_for_path("/other.sock"))


class StreamLocalWireTests(TestCase):
    def test_round_trips(self) -> None:
        """The streamlocal payloads pack and parse as OpenSSH's PROTOCOL lays them out."""
        request = wire.StreamlocalForward("/tmp/a.sock")
        self.assertEqual(request.pack(), b"\x00\x00\x00\x0b/tmp/a.sock")
        self.assertEqual(wire.StreamlocalForward.parse(request.pack()), request)
        opened = wire.ForwardedStreamlocal("/tmp/a.sock")
        self.assertEqual(opened.pack(), b"\x00\x00\x00\x0b/tmp/a.sock\x00\x00\x00\x00")
        self.assertEqual(wire.ForwardedStreamlocal.parse(opened.pack()), opened)
        # Any bytes but NUL survive the round trip.
        odd = wire.StreamlocalForward.parse(b"\x00\x00\x00\x03/\xff\xfe")
        self.assertEqual(odd.pack(), b"\x00\x00\x00\x03/\xff\xfe")
