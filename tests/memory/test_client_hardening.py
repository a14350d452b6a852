"""
rfwd-client against a server that is not the one it asked for (issue 8, items 10 and 11):

- under C{StrictHostKeyChecking=no}, a changed host key ends the client before it logs in, so
  that no password goes to an impostor and no forward is asked of it (in memory, and with real
  processes: rfwd-client -> rfwd-server);
- a C{forwarded-tcpip} channel is taken only for the exact listen address string and port the
  client asked for (the allocated port for port 0), as ssh does.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from twisted.conch.ssh.transport import MSG_SERVICE_REQUEST
from twisted.conch.ssh.userauth import MSG_USERAUTH_REQUEST
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from tests.support.keys import new_key, public_line
from tests.support.logs import CapturedLog
from tests.support.memory import MemoryRig
from twisted_rfwd.client.config import HostKeyPolicy
from twisted_rfwd.client.forwards import ForwardStatus
from twisted_rfwd.client.transport import ClientTransport
from twisted_rfwd.client.tunnel import Tunnel
from twisted_rfwd.errors import (
    ChangedHostKey,
    ChangedHostKeyForwardingDisabled,
    ChannelOpenFailed,
)
from twisted_rfwd.protocol import wire
from twisted_rfwd.protocol.spec import parse_remote_forward
from twisted_rfwd.server.connection import ForwardingServerConnection
from twisted_rfwd.ssh.fingerprint import fingerprint


class RecordingClientTransport(ClientTransport):
    """The client transport, noting the number of every message it sends."""

    def __init__(self, tunnel: Tunnel) -> None:
        super().__init__(tunnel)
        self.sent: list[int] = []

    def sendPacket(self, messageType: int, payload: bytes) -> None:
        self.sent.append(messageType)
        super().sendPacket(messageType, payload)


@implementer(ICredentialsChecker)
class PasswordRecorder:
    """Makes the server offer C{password}; keeps every password it is sent and refuses it."""

    credentialInterfaces = (IUsernamePassword,)

    def __init__(self) -> None:
        self.passwords: list[bytes] = []

    def requestAvatarId(self, credentials: Any) -> Deferred[Any]:
        self.passwords.append(credentials.password)
        return defer.fail(UnauthorizedLogin("recorded"))


def rig_with_changed_key(test: TestCase, *, key_authorized: bool) -> MemoryRig:
    """
    A rig whose client, under C{StrictHostKeyChecking=no} and with a password, has another
    key recorded for the server than the one the server presents.
    """
    tmp = Path(test.mktemp())
    tmp.mkdir()
    options: dict[str, Any] = {} if key_authorized else {"authorized_line": public_line(new_key())}
    rig = MemoryRig(tmp, [parse_remote_forward("8080:127.0.0.1:80")], **options)
    known_hosts = tmp / "known_hosts"
    known_hosts.write_bytes(
        b"# recorded earlier\n[server.test]:2222 " + public_line(new_key()) + b"\n"
    )
    rig.client_config = dataclasses.replace(
        rig.client_config, strict_host_key_checking=HostKeyPolicy.NO, password="hunter2"
    )
    rig.tunnel = Tunnel(rig.reactor, rig.client_config)
    return rig


class ChangedHostKeyInMemoryTests(TestCase):
    """StrictHostKeyChecking=no with a changed host key, client and server in memory."""

    def test_no_login_and_no_forward_request(self) -> None:
        """
        The client stops at the host-key check: it never asks for the userauth service, never
        sends a userauth request nor a global request, the server binds nothing, and connect
        fails with a ChangedHostKey naming the key, the known_hosts line and the rule.
        """
        rig = rig_with_changed_key(self, key_authorized=True)
        ready = rig.connect(RecordingClientTransport)
        error = self.failureResultOf(ready, ChangedHostKeyForwardingDisabled).value
        self.assertIsInstance(error, ChangedHostKey)
        assert isinstance(rig.client, RecordingClientTransport)
        for forbidden in (MSG_SERVICE_REQUEST, MSG_USERAUTH_REQUEST, wire.MSG_GLOBAL_REQUEST):
            self.assertNotIn(forbidden, rig.client.sent)
        self.assertEqual(rig.binder.bound, [])
        self.assertIs(rig.tunnel.fatal_error, error)
        assert rig.server is not None
        self.assertNotIsInstance(rig.server.service, ForwardingServerConnection)
        known_hosts = rig.client_config.known_hosts[0]
        self.assertEqual((error.known_hosts, error.line), (known_hosts, 2))
        message = str(error)
        server_key = rig.server_config.host_keys[0]
        self.assertIn("HOST KEY FOR [server.test]:2222 HAS CHANGED", message)
        self.assertIn(f"ED25519 key {fingerprint(server_key)}", message)
        self.assertIn(f"{known_hosts}:2", message)
        self.assertIn(
            "StrictHostKeyChecking=no does not allow password or keyboard-interactive "
            "authentication or port forwarding to a host whose key changed, as in ssh",
            message,
        )

    def test_password_is_not_sent_to_a_server_offering_it(self) -> None:
        """
        A server that refuses the key and offers password authentication never receives the
        password: the client fails with the changed key instead of trying it.
        """
        rig = rig_with_changed_key(self, key_authorized=False)
        recorder = PasswordRecorder()
        rig.factory.portal.registerChecker(recorder)
        ready = rig.connect(RecordingClientTransport)
        self.failureResultOf(ready, ChangedHostKeyForwardingDisabled)
        self.assertEqual(recorder.passwords, [])
        assert isinstance(rig.client, RecordingClientTransport)
        self.assertNotIn(MSG_USERAUTH_REQUEST, rig.client.sent)


class ForwardedChannelMatchingTests(TestCase):
    """Which forwarded-tcpip channels the client accepts, by listen address and port."""

    def ready(self, spec: str) -> tuple[MemoryRig, Tunnel, ForwardingServerConnection]:
        tmp = Path(self.mktemp())
        tmp.mkdir()
        rig = MemoryRig(tmp, [parse_remote_forward(spec)])
        tunnel = self.successResultOf(rig.connect())
        self.assertEqual(tunnel.forwards[0].status, ForwardStatus.LISTENING)
        assert rig.server is not None
        server = rig.server.service
        assert isinstance(server, ForwardingServerConnection)
        return rig, tunnel, server

    def open_forwarded(
        self, rig: MemoryRig, server: ForwardingServerConnection, address: str, port: int
    ) -> Deferred[Any]:
        """The server opens a forwarded-tcpip channel naming C{address} and C{port}."""
        payload = wire.ForwardedTcpip(address, port, "192.0.2.1", 5555).pack()
        channel = server.open_channel(b"forwarded-tcpip", payload)
        rig.flush()
        return channel.when_opened()

    def assert_refused(
        self, rig: MemoryRig, server: ForwardingServerConnection, address: str, port: int
    ) -> None:
        """Refused as ssh refuses (administratively prohibited), with no connect attempted."""
        opened = self.open_forwarded(rig, server, address, port)
        error = self.failureResultOf(opened, ChannelOpenFailed).value
        self.assertEqual(error.code, wire.OPEN_ADMINISTRATIVELY_PROHIBITED)
        self.assertEqual(rig.reactor.tcpClients, [])

    def assert_accepted(
        self, rig: MemoryRig, server: ForwardingServerConnection, address: str, port: int
    ) -> None:
        """Accepted: the client connects the forward's destination."""
        self.open_forwarded(rig, server, address, port)
        host, destination_port, _ = rig.pending_destination()
        self.assertEqual((host, destination_port), ("127.0.0.1", 80))

    def test_other_address_on_forwarded_port_is_refused(self) -> None:
        """
        Asked for C{localhost} port 8080 (no bind address), a channel naming C{127.0.0.1}
        port 8080 is refused with a log line naming address and port; C{localhost} works.
        """
        rig, _, server = self.ready("8080:127.0.0.1:80")
        log = CapturedLog(self)
        self.assert_refused(rig, server, "127.0.0.1", 8080)
        lines = log.matching("unknown listen address '127.0.0.1' port 8080")
        self.assertEqual(len(lines), 1, log.lines)
        self.assert_accepted(rig, server, "localhost", 8080)

    def test_star_bind_matches_empty_address_only(self) -> None:
        """
        C{*:8080} is asked for as C{""}, which sshd and rfwd-server send back: accepted;
        C{0.0.0.0} and C{*} on the same port are not what was asked for: refused.
        """
        rig, _, server = self.ready("*:8080:127.0.0.1:80")
        self.assert_refused(rig, server, "0.0.0.0", 8080)
        self.assert_refused(rig, server, "*", 8080)
        self.assert_accepted(rig, server, "", 8080)

    def test_explicit_bind_address_is_matched_exactly(self) -> None:
        """
        C{0.0.0.0:8080} is matched by C{0.0.0.0} only (not C{""}, not C{localhost}), and the
        real server's own channel for a connection to it is accepted.
        """
        rig, _, server = self.ready("0.0.0.0:8080:127.0.0.1:80")
        self.assert_refused(rig, server, "", 8080)
        self.assert_refused(rig, server, "localhost", 8080)
        self.assert_accepted(rig, server, "0.0.0.0", 8080)

    def test_port_zero_matches_the_allocated_port(self) -> None:
        """
        For C{-R 0:...} the allocated port is what is matched: C{localhost} on it is taken
        (also from the real server's listener); port 0 and another address on it are refused.
        """
        rig, tunnel, server = self.ready("0:127.0.0.1:80")
        allocated = tunnel.forwards[0].port
        assert allocated is not None
        self.assert_refused(rig, server, "localhost", 0)
        self.assert_refused(rig, server, "127.0.0.1", allocated)
        rig.app_connects(allocated)
        host, destination_port, _ = rig.pending_destination()
        self.assertEqual((host, destination_port), ("127.0.0.1", 80))

    def test_long_address_is_logged_bounded(self) -> None:
        """A server-chosen address of 20,000 characters is cut short in the log line."""
        rig, _, server = self.ready("8080:127.0.0.1:80")
        log = CapturedLog(self)
        self.assert_refused(rig, server, "a" * 20000, 8080)
        lines = log.matching("unknown listen address")
        self.assertEqual(len(lines), 1, log.lines)
        self.assertLess(len(lines[0]), 300)
        self.assertIn("(20000 characters)", lines[0])
