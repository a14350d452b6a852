"""
The pure side of held sessions: session request payloads, the rules for which request is
accepted when, the keys that end a session, the text the user sees, and the two options.
"""

from __future__ import annotations

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from twisted_rfwd.errors import MalformedPacket
from twisted_rfwd.protocol import wire
from twisted_rfwd.protocol.session import (
    EnvRequest,
    ExecRequest,
    PtyRequest,
    SessionPhase,
    SubsystemRequest,
    Verdict,
    WindowChange,
    decide,
    ends_session,
    forward_added_text,
    held_text,
    pack_channel_request,
    pack_exit_status,
    pack_extended_data,
    parse_request,
)
from twisted_rfwd.tap import server as server_tap

PTY = (
    wire.pack_string(b"xterm")
    + wire.pack_uint32(80)
    + wire.pack_uint32(24)
    + wire.pack_uint32(640)
    + wire.pack_uint32(480)
    + wire.pack_string(b"\x81\x00\x00\x96\x00\x00")
)


class ParseTests(SynchronousTestCase):
    def test_pty_req(self) -> None:
        """pty-req: terminal type, size in characters and pixels, modes kept as sent."""
        self.assertEqual(
            PtyRequest.parse(PTY),
            PtyRequest(b"xterm", 80, 24, 640, 480, b"\x81\x00\x00\x96\x00\x00"),
        )

    def test_window_change_env_exec_subsystem(self) -> None:
        """The other session requests' payloads."""
        size = b"".join(wire.pack_uint32(n) for n in (100, 40, 0, 0))
        self.assertEqual(WindowChange.parse(size), WindowChange(100, 40, 0, 0))
        env = wire.pack_string(b"LANG") + wire.pack_string(b"C.UTF-8")
        self.assertEqual(EnvRequest.parse(env), EnvRequest(b"LANG", b"C.UTF-8"))
        self.assertEqual(ExecRequest.parse(wire.pack_string(b"ls -l")), ExecRequest(b"ls -l"))
        self.assertEqual(
            SubsystemRequest.parse(wire.pack_string(b"sftp")), SubsystemRequest(b"sftp")
        )

    def test_parse_request_by_name(self) -> None:
        """parse_request picks the parser by name; shell and unknown names carry nothing."""
        self.assertEqual(parse_request(b"exec", wire.pack_string(b"x")), ExecRequest(b"x"))
        self.assertIsNone(parse_request(b"shell", b""))
        self.assertIsNone(parse_request(b"x11-req", b"garbage"))

    def test_truncated_and_trailing_bytes_are_malformed(self) -> None:
        """A short payload or bytes after it is the peer's error, naming the request."""
        cases = [
            (PTY[:-3], "malformed pty-req request: truncated"),
            (PTY + b"x", "malformed pty-req request: unexpected bytes"),
        ]
        for data, text in cases:
            error = self.assertRaises(MalformedPacket, PtyRequest.parse, data)
            self.assertTrue(str(error).startswith(text), str(error))
        self.assertRaises(MalformedPacket, WindowChange.parse, b"\x00" * 15)
        self.assertRaises(MalformedPacket, EnvRequest.parse, wire.pack_string(b"LANG"))
        self.assertRaises(MalformedPacket, ExecRequest.parse, b"\x00\x00\x00\x09ls")
        self.assertRaises(MalformedPacket, SubsystemRequest.parse, b"")


class PackTests(SynchronousTestCase):
    def test_exit_status_and_channel_request(self) -> None:
        """exit-status is a uint32 in a CHANNEL_REQUEST that wants no reply."""
        self.assertEqual(pack_exit_status(1), b"\x00\x00\x00\x01")
        payload = pack_channel_request(7, b"exit-status", False, pack_exit_status(0))
        self.assertEqual(
            wire.ChannelRequest.parse(payload),
            wire.ChannelRequest(7, b"exit-status", False, b"\x00\x00\x00\x00"),
        )

    def test_extended_data(self) -> None:
        """CHANNEL_EXTENDED_DATA: recipient, data type (1 for stderr), data."""
        self.assertEqual(wire.parse_extended_data(pack_extended_data(3, 1, b"no")), (3, 1, b"no"))


class RuleTests(SynchronousTestCase):
    def test_setup_accepts_terminal_and_programs(self) -> None:
        """Before a program: pty-req, env, window-change accepted; shell holds; exec refused."""
        setup = SessionPhase.SETUP
        self.assertEqual(decide(setup, b"pty-req", False), Verdict.ACCEPT)
        self.assertEqual(decide(setup, b"env", False), Verdict.ACCEPT)
        self.assertEqual(decide(setup, b"window-change", True), Verdict.ACCEPT)
        self.assertEqual(decide(setup, b"shell", True), Verdict.HOLD)
        self.assertEqual(decide(setup, b"exec", False), Verdict.NO_PROGRAM)
        self.assertEqual(decide(setup, b"subsystem", False), Verdict.NO_PROGRAM)

    def test_refusals(self) -> None:
        """A second pty, agent and X11 forwarding, unknown names, anything after the program."""
        setup, held, ended = SessionPhase.SETUP, SessionPhase.HELD, SessionPhase.ENDED
        self.assertEqual(decide(setup, b"pty-req", True), Verdict.REFUSE)
        self.assertEqual(decide(setup, b"x11-req", False), Verdict.REFUSE)
        self.assertEqual(decide(setup, b"auth-agent-req@openssh.com", False), Verdict.REFUSE)
        self.assertEqual(decide(setup, b"keepalive@openssh.com", False), Verdict.REFUSE)
        for name in (b"shell", b"exec", b"subsystem", b"pty-req", b"env"):
            self.assertEqual(decide(held, name, False), Verdict.REFUSE, name)
            self.assertEqual(decide(ended, name, False), Verdict.REFUSE, name)
        self.assertEqual(decide(held, b"window-change", True), Verdict.ACCEPT)

    def test_keys_that_end_a_session(self) -> None:
        """Ctrl-C or Ctrl-D anywhere in the input end it, through a pty only."""
        self.assertTrue(ends_session(b"\x03", True))
        self.assertTrue(ends_session(b"abc\x04", True))
        self.assertFalse(ends_session(b"abc\r", True))
        self.assertFalse(ends_session(b"\x03\x04", False))


class TextTests(SynchronousTestCase):
    def test_held_text_lists_forwards_and_how_to_leave(self) -> None:
        """What it is, one line per forward as bound, how to leave; CRLF through a pty."""
        text = held_text("1.2", "alice", ["127.0.0.1:40001, [::1]:40001"], True).decode()
        self.assertTrue(text.startswith("rfwd-server 1.2: port forwarding for alice"), text)
        self.assertIn("\r\n  127.0.0.1:40001, [::1]:40001\r\n", text)
        self.assertIn("Ctrl-D, Ctrl-C", text)
        self.assertNotIn("\n", text.replace("\r\n", ""))

    def test_held_text_without_pty_or_forwards(self) -> None:
        """Without a pty: LF, and leaving is ending the input; no forwards is said."""
        text = held_text("1.2", "bob", [], False).decode()
        self.assertNotIn("\r", text)
        self.assertIn("No forwards yet", text)
        self.assertIn("end its input (Ctrl-D)", text)

    def test_forward_added_text(self) -> None:
        """A later forward: one line."""
        self.assertEqual(
            forward_added_text("127.0.0.1:8080", False), b"Now also forwarding 127.0.0.1:8080\n"
        )


class OptionTests(SynchronousTestCase):
    def test_defaults(self) -> None:
        """Sessions are on, MaxSessions 10, as sshd's default."""
        options = server_tap.Options()
        options.parseOptions([])
        self.assertTrue(options["limits"]["sessions"])
        self.assertEqual(options["limits"]["max_sessions"], 10)

    def test_given(self) -> None:
        """--sessions no and --max-sessions 0 reach the settings."""
        options = server_tap.Options()
        options.parseOptions(["--sessions", "No", "--max-sessions", "0"])
        self.assertFalse(options["limits"]["sessions"])
        self.assertEqual(options["limits"]["max_sessions"], 0)

    def test_bad_values(self) -> None:
        """Anything but yes/no, or a count that is not a number, is a usage error saying so."""
        options = server_tap.Options()
        error = self.assertRaises(usage.UsageError, options.parseOptions, ["--sessions", "maybe"])
        self.assertIn("--sessions must be yes or no, not 'maybe'", str(error))
        options = server_tap.Options()
        error = self.assertRaises(usage.UsageError, options.parseOptions, ["--max-sessions", "-1"])
        self.assertIn("--max-sessions must be a number", str(error))
