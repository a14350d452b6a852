"""
rfwd-server's status file (L{twisted_rfwd.server.status}): what it lists, that each write
replaces the file whole, and that a busy server writes it at most once a second.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from twisted_rfwd.protocol.authorized_keys import KeyOptions
from twisted_rfwd.server.auth import LoginIdentity
from twisted_rfwd.server.listeners import ForwardListener
from twisted_rfwd.server.status import ServerStatus, StatusFileService
from twisted_rfwd.ssh.metrics import NO_METRICS, FanOut, Metrics, combine

START = 1_800_000_000.0  # 2027-01-15T08:00:00Z


@dataclass
class FakeChannel:
    bytes_sent: int = 0
    bytes_received: int = 0


@dataclass(eq=False)
class FakeForwarded:
    """What a listener keeps of a forwarded connection: its channel."""

    channel: FakeChannel


@dataclass(eq=False)
class FakeConnection:
    """What the status file reads of a logged-in connection."""

    login: LoginIdentity
    since: float
    peer: str = "192.0.2.7:50122"
    listeners: dict[tuple[str, int], ForwardListener] = field(default_factory=dict)
    socket_listeners: dict[str, ForwardListener] = field(default_factory=dict)

    def peer_description(self) -> str:
        return self.peer


def listener(address: str, port: int, bound: list[str]) -> ForwardListener:
    forward = ForwardListener(mux=None, requested_address=address, user="alice")  # type: ignore[arg-type]
    forward.port = port
    forward.addresses = bound
    return forward


def key_login(user: str = "alice") -> LoginIdentity:
    return LoginIdentity(user, "ssh-ed25519", "SHA256:abc", KeyOptions())


class Recorder(Metrics):
    """Records the events it hears."""

    def __init__(self) -> None:
        self.events: list[tuple[str, tuple[Any, ...]]] = []

    def forward_opened(self) -> None:
        self.events.append(("forward_opened", ()))

    def forwarded_connection_opened(self) -> None:
        self.events.append(("forwarded_connection_opened", ()))

    def forwarded_connection_closed(self, sent: int, received: int) -> None:
        self.events.append(("forwarded_connection_closed", (sent, received)))


class StatusTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(START)
        self.directory = Path(self.mktemp())
        self.directory.mkdir()
        self.path = self.directory / "status.json"
        self.connections: set[Any] = set()
        self.status = ServerStatus(self.clock, self.connections, str(self.path))

    def read(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(self.path.read_text())
        return loaded


class ContentTests(StatusTestCase):
    def test_connections_and_forwards(self) -> None:
        """
        Each connection is listed with its user, peer, key and login time, and each forward with
        where it is bound and its connections (open and in all) and bytes, ended ones included.
        """
        connection = FakeConnection(key_login(), since=START - 60)
        forward = listener("localhost", 8080, ["127.0.0.1:8080", "[::1]:8080"])
        connection.listeners[("localhost", 8080)] = forward
        self.connections.add(connection)
        ended, open_ = FakeForwarded(FakeChannel(100, 20)), FakeForwarded(FakeChannel(5, 7))
        forward.connections = 2
        forward.connection_opened(ended)  # type: ignore[arg-type]
        forward.connection_opened(open_)  # type: ignore[arg-type]
        forward.connection_closed(ended, ended.channel)  # type: ignore[arg-type]

        self.status.write()

        status = self.read()
        self.assertEqual(status["pid"], os.getpid())
        self.assertEqual(status["since"], "2027-01-15T08:00:00Z")
        self.assertEqual(
            status["connections"],
            [
                {
                    "user": "alice",
                    "peer": "192.0.2.7:50122",
                    "method": "publickey",
                    "key": "ssh-ed25519 SHA256:abc",
                    "since": "2027-01-15T07:59:00Z",
                    "forwards": [
                        {
                            "address": "localhost",
                            "port": 8080,
                            "bound": ["127.0.0.1:8080", "[::1]:8080"],
                            "connections_open": 1,
                            "connections_total": 2,
                            "bytes_sent": 105,
                            "bytes_received": 27,
                        }
                    ],
                }
            ],
        )

    def test_password_login_and_certificate(self) -> None:
        """
        A password login has no key (null); a certificate login shows the fingerprint the
        server logs for it, certificate ID included; connections are listed oldest first.
        """
        certificate = LoginIdentity(
            "bob", "ssh-ed25519-cert-v01@openssh.com", 'SHA256:xyz ID "bob@ci"', KeyOptions()
        )
        password = LoginIdentity("carol", "password", "", KeyOptions(), method="password")
        self.connections.add(FakeConnection(password, since=START))
        self.connections.add(FakeConnection(certificate, since=START - 5))

        self.status.write()

        listed = self.read()["connections"]
        self.assertEqual([c["user"] for c in listed], ["bob", "carol"])
        self.assertEqual(
            listed[0]["key"], 'ssh-ed25519-cert-v01@openssh.com SHA256:xyz ID "bob@ci"'
        )
        self.assertIsNone(listed[1]["key"])
        self.assertEqual(listed[1]["method"], "password")

    def test_unix_socket_forward(self) -> None:
        """A Unix-socket forward is listed by its path, with no address or port."""
        connection = FakeConnection(key_login(), since=START)
        connection.socket_listeners["/run/app.sock"] = listener("", 0, ["/run/app.sock"])
        self.connections.add(connection)

        self.status.write()

        [forward] = self.read()["connections"][0]["forwards"]
        self.assertEqual(forward["path"], "/run/app.sock")
        self.assertIsNone(forward["address"])
        self.assertIsNone(forward["port"])

    def test_listener_reports_its_connections(self) -> None:
        """A forward tells its metrics of each forwarded connection, with its bytes at the end."""
        recorder = Recorder()
        forward = listener("localhost", 8080, ["127.0.0.1:8080"])
        forward.metrics = recorder
        connection = FakeForwarded(FakeChannel(3, 4))
        forward.connection_opened(connection)  # type: ignore[arg-type]
        forward.connection_closed(connection, connection.channel)  # type: ignore[arg-type]
        self.assertEqual(
            recorder.events,
            [("forwarded_connection_opened", ()), ("forwarded_connection_closed", (3, 4))],
        )
        self.assertEqual(forward.open_connections, set())


class AtomicReplaceTests(StatusTestCase):
    def test_each_write_replaces_the_file(self) -> None:
        """
        Each write is a new file renamed over the old one: a reader that opened the old one
        still reads it whole, and no temporary file is left behind.
        """
        self.status.write()
        first = self.path.stat().st_ino
        with self.path.open() as reader:
            self.connections.add(FakeConnection(key_login(), since=START))
            self.status.write()
            self.assertEqual(json.loads(reader.read())["connections"], [])
        self.assertNotEqual(self.path.stat().st_ino, first)
        self.assertEqual(len(self.read()["connections"]), 1)
        self.assertEqual(os.listdir(self.directory), ["status.json"])

    def test_unwritable_directory_is_not_fatal(self) -> None:
        """A status file that cannot be written is logged, and the server carries on."""
        status = ServerStatus(self.clock, self.connections, str(self.directory / "no" / "s.json"))
        status.write()
        status.write()
        self.assertEqual(len(self.flushLoggedErrors()), 0)
        self.assertFalse((self.directory / "no").exists())


class RateLimitTests(StatusTestCase):
    def test_first_change_written_at_once(self) -> None:
        """On a quiet server a change is written at once."""
        self.status.forward_opened()
        self.assertEqual(self.status.writes, 1)
        self.assertTrue(self.path.exists())

    def test_busy_server_writes_once_a_second(self) -> None:
        """
        Many changes within a second make one write when the second is up, showing the last
        state; none in between.
        """
        self.status.ssh_logged_in()
        self.assertEqual(self.status.writes, 1)
        for n in range(50):
            self.clock.advance(0.01)
            self.status.forwarded_connection_opened()
            self.status.forwarded_connection_closed(n, n)
        self.connections.add(FakeConnection(key_login(), since=START))
        self.assertEqual(self.status.writes, 1)
        self.assertEqual(self.read()["connections"], [])
        self.clock.advance(0.4)
        self.assertEqual(self.status.writes, 1)
        self.clock.advance(0.2)
        self.assertEqual(self.status.writes, 2)
        self.assertEqual(len(self.read()["connections"]), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_change_after_a_quiet_second_is_immediate(self) -> None:
        """Once a second has passed since the last write, the next change is written at once."""
        self.status.forward_opened()
        self.clock.advance(1.0)
        self.status.forward_closed()
        self.assertEqual(self.status.writes, 2)

    def test_flush_writes_at_once_and_cancels_the_pending_write(self) -> None:
        """Stopping writes the last state at once; the write that was waiting is dropped."""
        self.status.forward_opened()
        self.status.forward_closed()
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.status.flush()
        self.assertEqual(self.status.writes, 2)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_events_that_do_not_change_the_file(self) -> None:
        """Events the file does not show (authentication failures, re-keys) write nothing."""
        self.status.auth_failed("password")
        self.status.rekeyed()
        self.status.ssh_connection_opened()
        self.assertEqual(self.status.writes, 0)


class SlowStop(Service):
    """A service whose stop takes until the test says."""

    def __init__(self) -> None:
        self.stopping: Deferred[None] = Deferred()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return self.stopping


class StatusFileServiceTests(StatusTestCase):
    def test_written_at_start_and_after_the_server_stopped(self) -> None:
        """
        The file is written when the server starts, and once more after the server's own stop
        (its drain) has finished, so it ends with the connections gone.
        """
        inner = SlowStop()
        service = StatusFileService(inner, self.status)
        service.startService()
        self.assertEqual(self.status.writes, 1)
        connection = FakeConnection(key_login(), since=START)
        self.connections.add(connection)
        stopped = service.stopService()
        self.assertEqual(self.status.writes, 1)
        self.connections.discard(connection)
        inner.stopping.callback(None)
        self.successResultOf(stopped)
        self.assertEqual(self.status.writes, 2)
        self.assertEqual(self.read()["connections"], [])


class FanOutTests(SynchronousTestCase):
    def test_combine(self) -> None:
        """Receivers combine into one; none is the no-op default; events reach each one."""
        self.assertIs(combine(None, NO_METRICS), NO_METRICS)
        one, two = Recorder(), Recorder()
        self.assertIs(combine(one, None), one)
        both = combine(one, two)
        self.assertIsInstance(both, FanOut)
        both.forward_opened()
        both.forwarded_connection_closed(1, 2)
        self.assertEqual(one.events, two.events)
        self.assertEqual(
            one.events, [("forward_opened", ()), ("forwarded_connection_closed", (1, 2))]
        )
