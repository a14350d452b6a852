"""
Session channels held open by rfwd-server, in memory: rfwd's own client opens a C{session} and
sends what OpenSSH's ssh sends without C{-N} (C{pty-req}, C{env}, C{shell}), or a command; the
server writes what it forwards, holds the session, and ends it with exit-status 0 when the user
leaves (or 1, with a stderr line, for a command or subsystem).
"""

from __future__ import annotations

from pathlib import Path

from twisted.trial.unittest import TestCase

from tests.support.logs import CapturedLog
from tests.support.memory import MemoryRig
from tests.support.streams import FakeStream
from twisted_rfwd.client.connection import ForwardingClientConnection
from twisted_rfwd.client.tunnel import ForwardStatus, Tunnel
from twisted_rfwd.errors import ChannelOpenFailed
from twisted_rfwd.protocol import wire
from twisted_rfwd.protocol.session import EXTENDED_DATA_STDERR, pack_channel_request
from twisted_rfwd.protocol.spec import parse_remote_forward
from twisted_rfwd.server.connection import ForwardingServerConnection
from twisted_rfwd.ssh.channel import Channel
from twisted_rfwd.ssh.relay import ChannelRelay

PTY_REQ = (
    wire.pack_string(b"xterm-256color")
    + wire.pack_uint32(80)
    + wire.pack_uint32(24)
    + wire.pack_uint32(640)
    + wire.pack_uint32(480)
    + wire.pack_string(b"\x00")
)
ENV = wire.pack_string(b"LANG") + wire.pack_string(b"C.UTF-8")


class Spy:
    """Every message (but CHANNEL_DATA) the client's connection receives."""

    def __init__(self, connection: ForwardingClientConnection) -> None:
        self.packets: list[tuple[int, bytes]] = []
        original = connection.packetReceived

        def spy(number: int, payload: bytes) -> None:
            self.packets.append((number, payload))
            original(number, payload)

        connection.packetReceived = spy  # type: ignore[method-assign,assignment]


class ClientSession:
    """A session channel the client opened, its output collected in a fake terminal."""

    def __init__(self, rig: MemoryRig, connection: ForwardingClientConnection, spy: Spy) -> None:
        self.rig = rig
        self.connection = connection
        self.spy = spy
        self.channel: Channel = connection.open_channel(b"session", b"")
        self.terminal = FakeStream()
        self.terminal.connect(ChannelRelay(self.channel))
        settle(rig)

    def request(self, name: bytes, data: bytes = b"", want_reply: bool = True) -> None:
        payload = pack_channel_request(self.channel.remote_id, name, want_reply, data)
        self.connection.transport.sendPacket(wire.MSG_CHANNEL_REQUEST, payload)
        settle(self.rig)

    def type(self, keys: bytes) -> None:
        self.terminal.receive(keys)
        settle(self.rig)

    def end_input(self) -> None:
        self.terminal.receive_eof()
        settle(self.rig)

    def mine(self, number: int) -> list[bytes]:
        """Payloads of message C{number} for this channel."""
        return [
            payload
            for n, payload in self.spy.packets
            if n == number and wire.parse_channel_number(payload, "test") == self.channel.local_id
        ]

    def replies(self) -> list[str]:
        """SUCCESS and FAILURE replies, in order."""
        names = {wire.MSG_CHANNEL_SUCCESS: "success", wire.MSG_CHANNEL_FAILURE: "failure"}
        return [
            names[n]
            for n, payload in self.spy.packets
            if n in names and wire.parse_channel_number(payload, "test") == self.channel.local_id
        ]

    def exit_statuses(self) -> list[int]:
        found = []
        for payload in self.mine(wire.MSG_CHANNEL_REQUEST):
            request = wire.ChannelRequest.parse(payload)
            if request.name == b"exit-status":
                self_reply = request.want_reply
                assert not self_reply, "exit-status must not want a reply"
                found.append(wire.Reader(request.data, "exit-status").uint32())
        return found

    def stderr(self) -> bytes:
        out = b""
        for payload in self.mine(wire.MSG_CHANNEL_EXTENDED_DATA):
            _, data_type, data = wire.parse_extended_data(payload)
            assert data_type == EXTENDED_DATA_STDERR
            out += data
        return out

    def order(self) -> list[str]:
        """The names of what came for this channel after its confirmation, in order."""
        names = {
            wire.MSG_CHANNEL_REQUEST: "request",
            wire.MSG_CHANNEL_EXTENDED_DATA: "stderr",
            wire.MSG_CHANNEL_EOF: "eof",
            wire.MSG_CHANNEL_CLOSE: "close",
        }
        return [
            names[n]
            for n, payload in self.spy.packets
            if n in names and wire.parse_channel_number(payload, "test") == self.channel.local_id
        ]

    @property
    def closed(self) -> bool:
        return self.channel.close_received


def settle(rig: MemoryRig) -> None:
    """Run what the reactor has for now (the session's next turn) and pump the bytes."""
    for _ in range(5):
        rig.reactor.advance(0)
        rig.flush()


class SessionTests(TestCase):
    def rig(self, *specs: str, **options: object) -> MemoryRig:
        tmp = Path(self.mktemp())
        tmp.mkdir()
        return MemoryRig(tmp, [parse_remote_forward(s) for s in specs], **options)

    def connect(self, rig: MemoryRig) -> tuple[Tunnel, ForwardingClientConnection, Spy]:
        tunnel = self.successResultOf(rig.connect())
        connection = tunnel.connection
        assert isinstance(connection, ForwardingClientConnection)
        return tunnel, connection, Spy(connection)

    def server(self, rig: MemoryRig) -> ForwardingServerConnection:
        assert rig.server is not None
        service = rig.server.service
        assert isinstance(service, ForwardingServerConnection)
        return service

    def shell(self, rig: MemoryRig, pty: bool = True) -> ClientSession:
        _, connection, spy = self.connect(rig)
        session = ClientSession(rig, connection, spy)
        if pty:
            session.request(b"pty-req", PTY_REQ)
        session.request(b"env", ENV, want_reply=False)
        session.request(b"shell")
        return session

    def test_shell_shows_the_bound_ports_and_holds_the_forwards(self) -> None:
        """
        pty-req and shell succeed; the text names the server, each forward's bound addresses
        (port 0 resolved) and how to leave, with CRLF line ends; the session stays open and
        data crosses the forward meanwhile.
        """
        rig = self.rig("0:127.0.0.1:80", "8080:127.0.0.1:80")
        session = self.shell(rig)
        self.assertEqual(session.replies(), ["success", "success"])
        text = session.terminal.drain().decode()
        allocated = rig.binder.bound[0][1].port
        self.assertNotEqual(allocated, 0)
        self.assertIn("rfwd-server", text)
        self.assertIn(f"127.0.0.1:{allocated}, [::1]:{allocated}", text)
        self.assertIn("127.0.0.1:8080, [::1]:8080", text)
        self.assertIn("Ctrl-D", text)
        self.assertIn("\r\n", text)
        self.assertNotIn("127.0.0.1:0,", text)
        self.assertFalse(session.closed)
        self.assertEqual(session.exit_statuses(), [])
        app = rig.app_connects(8080)
        destination = rig.destination_accepts()
        app.receive(b"through the forward")
        rig.flush()
        self.assertEqual(destination.drain(), b"through the forward")

    def test_ctrl_c_ends_the_session_with_status_zero(self) -> None:
        """Through a pty, Ctrl-C ends the session: exit-status 0, then EOF, then CLOSE."""
        rig = self.rig("8080:127.0.0.1:80")
        session = self.shell(rig)
        session.type(b"\x03")
        self.assertEqual(session.exit_statuses(), [0])
        self.assertEqual(session.order(), ["request", "eof", "close"])
        self.assertTrue(session.closed)
        self.successResultOf(session.channel.when_closed())
        self.assertEqual(self.server(rig).sessions, {})

    def test_ctrl_d_ends_the_session_with_status_zero(self) -> None:
        """Through a pty, Ctrl-D (sent as a byte, not EOF) ends the session with status 0."""
        rig = self.rig("8080:127.0.0.1:80")
        session = self.shell(rig)
        session.type(b"\x04")
        self.assertEqual(session.exit_statuses(), [0])
        self.assertTrue(session.closed)

    def test_other_keys_get_one_hint_and_do_not_end_it(self) -> None:
        """Typing anything else through a pty prints one hint; the session stays."""
        rig = self.rig("8080:127.0.0.1:80")
        session = self.shell(rig)
        session.terminal.drain()
        session.type(b"ls\r")
        session.type(b"pwd\r")
        hint = session.terminal.drain().decode()
        self.assertEqual(hint.count("Nothing runs here"), 1)
        self.assertFalse(session.closed)

    def test_eof_ends_a_session_without_pty(self) -> None:
        """Without a pty, the text uses LF; Ctrl-C is only data; EOF ends it with status 0."""
        rig = self.rig("8080:127.0.0.1:80")
        session = self.shell(rig, pty=False)
        self.assertEqual(session.replies(), ["success"])
        text = session.terminal.drain().decode()
        self.assertIn("127.0.0.1:8080", text)
        self.assertNotIn("\r", text)
        session.type(b"\x03\x04")
        self.assertFalse(session.closed)
        session.end_input()
        self.assertEqual(session.exit_statuses(), [0])
        self.assertEqual(session.order(), ["request", "eof", "close"])
        self.assertTrue(session.closed)
        self.assertEqual(self.server(rig).sessions, {})

    def test_eof_before_shell_ends_it_once_held(self) -> None:
        """EOF before the shell request (input from /dev/null): the text, then status 0."""
        rig = self.rig("8080:127.0.0.1:80")
        _, connection, spy = self.connect(rig)
        session = ClientSession(rig, connection, spy)
        session.end_input()
        self.assertFalse(session.closed)
        session.request(b"shell")
        self.assertIn(b"127.0.0.1:8080", session.terminal.drain())
        self.assertEqual(session.exit_statuses(), [0])
        self.assertTrue(session.closed)

    def test_forwards_stay_until_the_connection_ends(self) -> None:
        """Leaving the session leaves the forwards to the connection, which closes them."""
        rig = self.rig("8080:127.0.0.1:80")
        session = self.shell(rig)
        session.type(b"\x03")
        self.assertTrue(rig.binder.listening(8080))
        rig.disconnect()
        self.assertEqual(rig.binder.listening(8080), [])

    def test_connection_dropped_under_a_held_session(self) -> None:
        """The connection drops: the session is forgotten, the forwards close, nothing raises."""
        rig = self.rig("8080:127.0.0.1:80")
        log = CapturedLog(self)
        session = self.shell(rig)
        server = self.server(rig)
        rig.disconnect()
        self.assertEqual(server.sessions, {})
        self.assertTrue(server.idle)
        self.assertEqual(rig.binder.listening(8080), [])
        self.assertTrue(log.matching("ended: the SSH connection ended"))
        self.assertEqual(log.failures(), [])
        self.assertEqual(session.exit_statuses(), [])

    def test_exec_runs_nothing(self) -> None:
        """exec is accepted, then one stderr line, exit-status 1, EOF, CLOSE; no command logged."""
        rig = self.rig("8080:127.0.0.1:80")
        log = CapturedLog(self)
        _, connection, spy = self.connect(rig)
        session = ClientSession(rig, connection, spy)
        session.request(b"exec", wire.pack_string(b"cat /etc/secret-token"))
        self.assertEqual(session.replies(), ["success"])
        stderr = session.stderr().decode()
        self.assertIn("runs no commands", stderr)
        self.assertEqual(stderr.count("\n"), 1)
        self.assertEqual(session.exit_statuses(), [1])
        self.assertEqual(session.order(), ["stderr", "request", "eof", "close"])
        self.assertEqual(session.terminal.drain(), b"")
        self.assertTrue(session.closed)
        self.assertNotIn("secret-token", log.text())
        self.assertTrue(log.matching("asked for a command"))

    def test_subsystem_runs_nothing(self) -> None:
        """subsystem sftp: a stderr line naming it, exit-status 1, and the channel closes."""
        rig = self.rig("8080:127.0.0.1:80")
        _, connection, spy = self.connect(rig)
        session = ClientSession(rig, connection, spy)
        session.request(b"subsystem", wire.pack_string(b"sftp"))
        self.assertEqual(session.replies(), ["success"])
        self.assertIn("runs no subsystem (sftp)", session.stderr().decode())
        self.assertEqual(session.exit_statuses(), [1])
        self.assertTrue(session.closed)

    def test_stderr_never_exceeds_the_window(self) -> None:
        """A peer window too small for the stderr line: it is dropped; exit-status 1 still goes."""
        rig = self.rig("8080:127.0.0.1:80")
        _, connection, spy = self.connect(rig)
        connection.window_size = 10
        session = ClientSession(rig, connection, spy)
        session.request(b"exec", wire.pack_string(b"true"))
        self.assertFalse(self.server(rig).stopped)
        self.assertEqual(session.stderr(), b"")
        self.assertEqual(session.exit_statuses(), [1])
        self.assertTrue(session.closed)

    def test_requests_out_of_place_are_refused(self) -> None:
        """x11-req, a second pty-req and a second shell are refused; the session stays held."""
        rig = self.rig("8080:127.0.0.1:80")
        session = self.shell(rig)
        session.request(b"x11-req", b"\x00" + wire.pack_string(b"MIT") + wire.pack_string(b"0"))
        session.request(b"pty-req", PTY_REQ)
        session.request(b"shell")
        session.request(b"exec", wire.pack_string(b"true"))
        session.request(b"window-change", PTY_REQ[-22:-6], want_reply=False)
        self.assertEqual(session.replies(), ["success", "success"] + ["failure"] * 4)
        self.assertFalse(session.closed)

    def test_malformed_pty_request_is_a_protocol_error(self) -> None:
        """A truncated pty-req ends the connection with PROTOCOL_ERROR naming it, as sshd does."""
        rig = self.rig("8080:127.0.0.1:80")
        log = CapturedLog(self)
        _, connection, spy = self.connect(rig)
        session = ClientSession(rig, connection, spy)
        session.request(b"pty-req", PTY_REQ[:10])
        self.assertTrue(self.server(rig).stopped)
        self.assertTrue(log.matching("Protocol error from"))
        self.assertTrue(log.matching("malformed pty-req request"))
        self.assertEqual(log.failures(), [])

    def test_a_forward_added_later_is_announced(self) -> None:
        """A forward granted while the session is held gets a line of its own."""
        rig = self.rig("8080:127.0.0.1:80")
        tunnel, connection, spy = self.connect(rig)
        session = ClientSession(rig, connection, spy)
        session.request(b"shell")
        session.terminal.drain()
        state = tunnel.add_forward(parse_remote_forward("0:127.0.0.1:81"))
        settle(rig)
        self.assertEqual(self.successResultOf(state).status, ForwardStatus.LISTENING)
        port = rig.binder.bound[-1][1].port
        self.assertIn(
            f"Now also forwarding 127.0.0.1:{port}, [::1]:{port}\n",
            session.terminal.drain().decode(),
        )

    def test_max_sessions_refuses_the_eleventh(self) -> None:
        """MaxSessions 10 (the default): the 11th session is refused; closing one frees a slot."""
        rig = self.rig("8080:127.0.0.1:80")
        _, connection, spy = self.connect(rig)
        sessions = [ClientSession(rig, connection, spy) for _ in range(10)]
        for session in sessions:
            self.successResultOf(session.channel.when_opened())
        extra = ClientSession(rig, connection, spy)
        error = self.failureResultOf(extra.channel.when_opened(), ChannelOpenFailed).value
        self.assertEqual(error.code, wire.OPEN_ADMINISTRATIVELY_PROHIBITED)
        self.assertIn("already has 10 sessions (MaxSessions)", error.description)
        sessions[0].request(b"shell")
        sessions[0].end_input()
        self.assertTrue(sessions[0].closed)
        self.successResultOf(ClientSession(rig, connection, spy).channel.when_opened())

    def test_max_sessions_zero_refuses_all(self) -> None:
        """MaxSessions 0 refuses every session, as sshd's does; forwards still work."""
        rig = self.rig("8080:127.0.0.1:80", max_sessions=0)
        _, connection, spy = self.connect(rig)
        session = ClientSession(rig, connection, spy)
        error = self.failureResultOf(session.channel.when_opened(), ChannelOpenFailed).value
        self.assertIn("MaxSessions 0", error.description)
        self.assertTrue(rig.binder.listening(8080))

    def test_sessions_off_refuses_as_before(self) -> None:
        """sessions=False keeps the old refusal: administratively prohibited, use ssh -N."""
        rig = self.rig("8080:127.0.0.1:80", sessions=False)
        _, connection, spy = self.connect(rig)
        session = ClientSession(rig, connection, spy)
        error = self.failureResultOf(session.channel.when_opened(), ChannelOpenFailed).value
        self.assertEqual(error.code, wire.OPEN_ADMINISTRATIVELY_PROHIBITED)
        self.assertIn("only forwards ports", error.description)
        self.assertIn("use ssh -N", error.description)

    def test_no_more_sessions_is_honoured(self) -> None:
        """After no-more-sessions@openssh.com, a session open is refused."""
        rig = self.rig("8080:127.0.0.1:80")
        _, connection, spy = self.connect(rig)
        connection.transport.sendPacket(
            wire.MSG_GLOBAL_REQUEST,
            wire.GlobalRequest(b"no-more-sessions@openssh.com", False, b"").pack(),
        )
        session = ClientSession(rig, connection, spy)
        error = self.failureResultOf(session.channel.when_opened(), ChannelOpenFailed).value
        self.assertIn("no-more-sessions", error.description)

    def test_server_shutdown_closes_the_session_without_status(self) -> None:
        """When the server stops forwarding, a held session says so and closes, no exit-status."""
        rig = self.rig("8080:127.0.0.1:80")
        session = self.shell(rig)
        session.terminal.drain()
        self.server(rig).stop_forwarding("the server is shutting down")
        settle(rig)
        self.assertIn(b"shutting down", session.terminal.drain())
        self.assertEqual(session.exit_statuses(), [])
        self.assertTrue(session.closed)
        self.assertTrue(self.server(rig).idle)


class AllowTcpForwardingTests(TestCase):
    def test_forwarding_off_refuses_tcpip_forward(self) -> None:
        """AllowTcpForwarding no: tcpip-forward is refused and logged naming the setting."""
        tmp = Path(self.mktemp())
        tmp.mkdir()
        log = CapturedLog(self)
        rig = MemoryRig(
            tmp, [parse_remote_forward("8080:127.0.0.1:80")], allow_tcp_forwarding=False
        )
        tunnel = self.successResultOf(rig.connect())
        self.assertEqual(tunnel.forwards[0].status, ForwardStatus.REFUSED)
        self.assertEqual(rig.binder.bound, [])
        self.assertTrue(log.matching("AllowTcpForwarding"))
