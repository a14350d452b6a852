"""systemd's notification protocol (sd_notify): the datagrams sent, and silence without systemd."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import succeed
from twisted.internet.testing import MemoryReactor
from twisted.logger import ILogObserver, LogEvent, LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from twisted_rfwd.server.service import ServerService
from twisted_rfwd.tap import sd_notify
from twisted_rfwd.tap.sd_notify import Notifier, StoppingNotice, TunnelNotifier


class FakePort:
    """A listening port that only says where it listens."""

    def __init__(self, host: str, port: int) -> None:
        self.address = IPv4Address("TCP", host, port)

    def getHost(self) -> IPv4Address:
        return self.address


@implementer(ILogObserver)
class Events:
    """A log observer keeping the events."""

    def __init__(self) -> None:
        self.events: list[LogEvent] = []

    def __call__(self, event: LogEvent) -> None:
        self.events.append(event)


class NotifySocket:
    """A datagram socket bound where systemd's would be, for a test to read."""

    def __init__(self, test: SynchronousTestCase, abstract: bool = False) -> None:
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        test.addCleanup(self.socket.close)
        if abstract:
            name = f"rfwd-test-{os.getpid()}-{os.urandom(6).hex()}"
            self.socket.bind(b"\0" + name.encode())
            self.address = "@" + name
        else:
            # Short: a socket path has room for about 100 bytes, more than mktemp() leaves.
            directory = tempfile.mkdtemp(prefix="rfwd-sd-")
            test.addCleanup(shutil.rmtree, directory)
            self.address = os.path.join(directory, "notify")
            self.socket.bind(self.address)
        self.socket.settimeout(5)

    def receive(self) -> bytes:
        """The next datagram (already queued: a local datagram is delivered by the send)."""
        return self.socket.recv(65536)

    def pending(self) -> list[bytes]:
        """Every datagram queued now."""
        found = []
        self.socket.setblocking(False)
        try:
            while True:
                found.append(self.socket.recv(65536))
        except BlockingIOError:
            return found
        finally:
            self.socket.settimeout(5)


class NotifierTests(SynchronousTestCase):
    def log_events(self) -> list[LogEvent]:
        """The events logged from now to the end of the test."""
        observer = Events()
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        return observer.events

    def test_path_socket(self) -> None:
        """With NOTIFY_SOCKET a path, READY=1 and STATUS= go there in one datagram."""
        listener = NotifySocket(self)
        notifier = Notifier.from_environment(environ={"NOTIFY_SOCKET": listener.address})
        notifier.ready("listening on 0.0.0.0:22")
        self.assertEqual(listener.receive(), b"READY=1\nSTATUS=listening on 0.0.0.0:22\n")
        notifier.status("connected")
        self.assertEqual(listener.receive(), b"STATUS=connected\n")
        notifier.stopping()
        self.assertEqual(listener.receive(), b"STOPPING=1\n")

    def test_held_until_the_reactor_runs(self) -> None:
        """
        Given a reactor not yet running (twistd starts services first), READY=1 waits for it
        to run, when SIGTERM is handled; a running reactor's notices go at once.
        """
        listener = NotifySocket(self)
        reactor = MemoryReactor()
        notifier = Notifier(listener.address, reactor)
        notifier.ready("listening on 0.0.0.0:22")
        self.assertEqual(listener.pending(), [])
        reactor.run()
        self.assertEqual(listener.pending(), [b"READY=1\nSTATUS=listening on 0.0.0.0:22\n"])
        notifier.stopping()
        self.assertEqual(listener.pending(), [b"STOPPING=1\n"])

    def test_abstract_socket(self) -> None:
        """An C{@name} NOTIFY_SOCKET is a socket in the abstract namespace."""
        listener = NotifySocket(self, abstract=True)
        notifier = Notifier.from_environment(environ={"NOTIFY_SOCKET": listener.address})
        notifier.ready("up")
        self.assertEqual(listener.receive(), b"READY=1\nSTATUS=up\n")

    def test_silent_without_notify_socket(self) -> None:
        """Without NOTIFY_SOCKET (or with it empty) no socket is even created."""
        created: list[Any] = []
        self.patch(socket, "socket", lambda *a: created.append(a))
        for environ in ({}, {"NOTIFY_SOCKET": ""}):
            notifier = Notifier.from_environment(environ=environ)
            self.assertFalse(notifier.enabled)
            notifier.ready("listening")
            notifier.status("x")
            notifier.stopping()
            StoppingNotice(notifier).stopService()
        self.assertEqual(created, [])

    def test_unusable_address_is_ignored(self) -> None:
        """NOTIFY_SOCKET neither a path nor @name (a vsock: one): a warning, then silence."""
        logged = self.log_events()
        notifier = Notifier("vsock:2:1234")
        self.assertFalse(notifier.enabled)
        self.assertEqual([e["log_level"] for e in logged], [LogLevel.warn])
        self.assertIn("vsock:2:1234", logged[0]["address"])

    def test_send_failure_is_logged_not_raised(self) -> None:
        """Nobody listening at the path: the notice is dropped with a warning, nothing raised."""
        logged = self.log_events()
        directory = tempfile.mkdtemp(prefix="rfwd-sd-")
        self.addCleanup(shutil.rmtree, directory)
        Notifier(os.path.join(directory, "gone")).ready("listening")
        self.assertEqual(len(logged), 1)
        self.assertEqual(logged[0]["log_level"], LogLevel.warn)
        self.assertIn("gone", logged[0]["address"])

    def test_status_is_one_short_line(self) -> None:
        """A status quoting a peer stays one printable line of bounded length."""
        listener = NotifySocket(self)
        Notifier(listener.address).status("failed: evil\nREADY=1\x1b[2J" + "x" * 500)
        data = listener.receive()
        self.assertEqual(data.count(b"\n"), 1)
        self.assertTrue(data.startswith(b"STATUS=failed: evil READY=1 [2J"))
        self.assertEqual(len(data), len("STATUS=") + sd_notify.MAX_STATUS + 1)

    def test_stopping_notice(self) -> None:
        """The stopping service sends STOPPING=1 when the application stops."""
        listener = NotifySocket(self)
        notice = StoppingNotice(Notifier(listener.address))
        notice.startService()
        self.assertEqual(listener.pending(), [])
        notice.stopService()
        self.assertEqual(listener.receive(), b"STOPPING=1\n")


def snapshot(state: str, forwards: list[str], error: str | None = None) -> dict[str, Any]:
    """A client status as TunnelService.snapshot() gives it, with forwards in these states."""
    return {
        "state": state,
        "server": "hostb.example:22",
        "last_error": error,
        "forwards": [{"state": s, "port": 2222} for s in forwards],
    }


class TunnelNotifierTests(SynchronousTestCase):
    def test_ready_once_then_status(self) -> None:
        """READY=1 the first time the tunnel is connected; later changes are STATUS= only."""
        listener = NotifySocket(self)
        follow = TunnelNotifier(Notifier(listener.address))
        follow(snapshot("connecting", ["requested", "requested"]))
        self.assertEqual(listener.pending(), [b"STATUS=connecting to hostb.example:22\n"])
        follow(snapshot("connecting", ["listening", "requested"]))
        self.assertEqual(listener.pending(), [])
        follow(snapshot("connected", ["listening", "listening"]))
        self.assertEqual(
            listener.pending(),
            [b"READY=1\nSTATUS=connected to hostb.example:22, 2 forwards listening\n"],
        )
        follow(snapshot("disconnected", ["requested", "requested"], "connection lost"))
        follow(snapshot("connected", ["listening", "refused"]))
        follow(snapshot("stopped", ["listening", "refused"]))
        self.assertEqual(
            listener.pending(),
            [
                b"STATUS=not connected to hostb.example:22: connection lost; retrying\n",
                b"STATUS=connected to hostb.example:22, 1 of 2 forwards listening\n",
            ],
        )

    def test_failed(self) -> None:
        """A tunnel that gives up says why in its status, and is never ready."""
        listener = NotifySocket(self)
        follow = TunnelNotifier(Notifier(listener.address))
        follow(snapshot("failed", ["requested"], "host key for hostb.example changed"))
        self.assertEqual(
            listener.pending(), [b"STATUS=failed: host key for hostb.example changed\n"]
        )
        self.assertFalse(follow.is_ready)

    def test_one_forward(self) -> None:
        """One forward is "1 forward"."""
        self.assertEqual(
            sd_notify.tunnel_status(snapshot("connected", ["listening"])),
            "connected to hostb.example:22, 1 forward listening",
        )


class FakeFactory:
    """What ServerService reads of its factory when it starts."""

    class config:  # read as an attribute, as ForwardingServerFactory's
        host_keys: list[Any] = []


class FakeEndpoint:
    def __init__(self, port: FakePort) -> None:
        self.port = port

    def listen(self, factory: object) -> Any:
        return succeed(self.port)


class ServerReadinessTests(SynchronousTestCase):
    def test_ready_when_listening(self) -> None:
        """ServerService tells on_listening its port once it listens, and the notice says where."""
        listener = NotifySocket(self)
        notifier = Notifier(listener.address)
        heard: list[Any] = []

        def listening(port: Any) -> None:
            heard.append(port)
            sd_notify.server_listening(notifier, port)

        port = FakePort("0.0.0.0", 22)
        service = ServerService(
            FakeEndpoint(port),  # type: ignore[arg-type]
            FakeFactory(),  # type: ignore[arg-type]
            self.fail,
            on_listening=listening,
        )
        service.startService()
        self.assertEqual(heard, [port])
        self.assertEqual(listener.receive(), b"READY=1\nSTATUS=listening on 0.0.0.0:22\n")
