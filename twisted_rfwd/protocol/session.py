"""
Session channels (RFC 4254 section 6) as rfwd-server holds them: the requests' payloads, which
request is accepted when, what ends a session, and the text the user sees.  Pure: no Twisted.

rfwd-server runs no program.  It accepts a C{session} channel so that C{ssh -R ... host}
without C{-N} (and PuTTY's plink) works: the session holds the forwards open until the user
leaves.  The rules, which L{twisted_rfwd.server.session} follows and L{RULES} encodes:

  - A session is in SETUP until the client asks for a program.  There C{pty-req} is accepted
    once (a second is refused, as sshd does), C{env} and C{window-change} are accepted and
    their values ignored; anything else (C{x11-req}, C{auth-agent-req@openssh.com}, C{signal},
    unknown names) is refused.
  - C{shell} moves it to HELD: the text of L{held_text} goes out, and the session stays open,
    running nothing.  C{window-change} is still accepted there (a terminal resized).
  - C{exec} (a command) and C{subsystem} (sftp) are accepted as requests, so that the client
    waits for what follows, but run nothing: one line on stderr, exit-status 1, and the channel
    closes.
  - Once a program was asked for, a second C{shell}, C{exec}, C{subsystem} or C{pty-req} is
    refused.
  - A held session ends, with exit-status 0, on the client's EOF or, with a pty, on Ctrl-C or
    Ctrl-D in its input (L{ends_session}).  If the channel closes or the connection drops first,
    there is nobody left to tell.
  - A malformed request payload is the peer's protocol error (L{MalformedPacket}), as in sshd.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from twisted_rfwd.errors import MalformedPacket
from twisted_rfwd.protocol.wire import Reader, pack_string, pack_uint32

__all__ = [
    "EXTENDED_DATA_STDERR",
    "LEAVE_KEYS",
    "RULES",
    "EnvRequest",
    "ExecRequest",
    "PtyRequest",
    "SessionPhase",
    "SessionRequest",
    "SubsystemRequest",
    "Verdict",
    "WindowChange",
    "decide",
    "ends_session",
    "exec_refusal",
    "forward_added_text",
    "held_text",
    "idle_hint_text",
    "pack_channel_request",
    "pack_exit_status",
    "pack_extended_data",
    "parse_request",
    "shutdown_text",
    "subsystem_refusal",
]

EXTENDED_DATA_STDERR = 1
"""C{SSH_EXTENDED_DATA_STDERR} (RFC 4254 section 5.2)."""

LEAVE_KEYS = b"\x03\x04"
"""Ctrl-C and Ctrl-D: with a pty, the client sends them as bytes, and either ends the session."""


class SessionPhase(enum.Enum):
    """Where a session is: before a program was asked for, holding, or over."""

    SETUP = "setting up"
    HELD = "held open"
    ENDED = "ended"


class Verdict(enum.Enum):
    """What to do with one channel request."""

    ACCEPT = "accept"
    REFUSE = "refuse"
    HOLD = "hold the session open"
    NO_PROGRAM = "accept, then say on stderr that nothing runs, with exit-status 1"


_PROGRAMS = {b"shell": Verdict.HOLD, b"exec": Verdict.NO_PROGRAM, b"subsystem": Verdict.NO_PROGRAM}

RULES: Mapping[SessionPhase, Mapping[bytes, Verdict]] = {
    SessionPhase.SETUP: {
        b"pty-req": Verdict.ACCEPT,
        b"env": Verdict.ACCEPT,
        b"window-change": Verdict.ACCEPT,
        **_PROGRAMS,
    },
    SessionPhase.HELD: {b"window-change": Verdict.ACCEPT},
    SessionPhase.ENDED: {},
}
"""Request name to verdict, by phase; a name not listed is refused."""


def decide(phase: SessionPhase, request_type: bytes, has_pty: bool) -> Verdict:
    """The verdict on C{request_type} in C{phase}; a second C{pty-req} is refused."""
    if request_type == b"pty-req" and has_pty:
        return Verdict.REFUSE
    return RULES[phase].get(request_type, Verdict.REFUSE)


def ends_session(data: bytes, has_pty: bool) -> bool:
    """Whether input C{data} ends a held session: Ctrl-C or Ctrl-D, but only through a pty."""
    return has_pty and any(key in data for key in LEAVE_KEYS)


def _end(reader: Reader, what: str) -> None:
    if reader.rest():
        raise MalformedPacket(what, "unexpected bytes after the request")


@dataclass(frozen=True)
class PtyRequest:
    """C{pty-req}: the terminal's type and size; its modes are kept as sent."""

    term: bytes
    columns: int
    rows: int
    width_pixels: int
    height_pixels: int
    modes: bytes

    @classmethod
    def parse(cls, data: bytes) -> PtyRequest:
        what = "pty-req request"
        r = Reader(data, what)
        request = cls(r.string(), r.uint32(), r.uint32(), r.uint32(), r.uint32(), r.string())
        _end(r, what)
        return request


@dataclass(frozen=True)
class WindowChange:
    """C{window-change}: the terminal's new size."""

    columns: int
    rows: int
    width_pixels: int
    height_pixels: int

    @classmethod
    def parse(cls, data: bytes) -> WindowChange:
        what = "window-change request"
        r = Reader(data, what)
        change = cls(r.uint32(), r.uint32(), r.uint32(), r.uint32())
        _end(r, what)
        return change


@dataclass(frozen=True)
class EnvRequest:
    """C{env}: one environment variable the client would like set (there is no program)."""

    name: bytes
    value: bytes

    @classmethod
    def parse(cls, data: bytes) -> EnvRequest:
        what = "env request"
        r = Reader(data, what)
        request = cls(r.string(), r.string())
        _end(r, what)
        return request


@dataclass(frozen=True)
class ExecRequest:
    """C{exec}: the command the client wants run."""

    command: bytes

    @classmethod
    def parse(cls, data: bytes) -> ExecRequest:
        what = "exec request"
        r = Reader(data, what)
        request = cls(r.string())
        _end(r, what)
        return request


@dataclass(frozen=True)
class SubsystemRequest:
    """C{subsystem}: the subsystem the client wants, such as C{sftp}."""

    name: bytes

    @classmethod
    def parse(cls, data: bytes) -> SubsystemRequest:
        what = "subsystem request"
        r = Reader(data, what)
        request = cls(r.string())
        _end(r, what)
        return request


SessionRequest = PtyRequest | WindowChange | EnvRequest | ExecRequest | SubsystemRequest

_PARSERS: Mapping[bytes, Callable[[bytes], SessionRequest]] = {
    b"pty-req": PtyRequest.parse,
    b"window-change": WindowChange.parse,
    b"env": EnvRequest.parse,
    b"exec": ExecRequest.parse,
    b"subsystem": SubsystemRequest.parse,
}


def parse_request(request_type: bytes, data: bytes) -> SessionRequest | None:
    """The payload of a session request we read (C{None} for those without one, or unknown)."""
    parser = _PARSERS.get(request_type)
    return parser(data) if parser is not None else None


def pack_exit_status(status: int) -> bytes:
    """The data of an C{exit-status} request: the status as a uint32."""
    return pack_uint32(status)


def pack_channel_request(recipient: int, name: bytes, want_reply: bool, data: bytes) -> bytes:
    """The payload of C{SSH_MSG_CHANNEL_REQUEST} (after its message number)."""
    return pack_uint32(recipient) + pack_string(name) + (b"\x01" if want_reply else b"\x00") + data


def pack_extended_data(recipient: int, data_type: int, data: bytes) -> bytes:
    """The payload of C{SSH_MSG_CHANNEL_EXTENDED_DATA} (after its message number)."""
    return pack_uint32(recipient) + pack_uint32(data_type) + pack_string(data)


# -- what the user reads --------------------------------------------------------------------


def _lines(lines: Sequence[str], pty: bool) -> bytes:
    # Through a pty the client's terminal is raw: nothing turns "\n" into "\r\n" for us.
    newline = "\r\n" if pty else "\n"
    return "".join(line + newline for line in lines).encode("utf-8")


def held_text(version: str, user: str, forwards: Sequence[str], pty: bool) -> bytes:
    """
    What a held session shows: what this server is, each forward of the connection as the
    addresses it listens on (port 0 already resolved), and how to leave.
    """
    lines = [f"rfwd-server {version}: port forwarding for {user}; no shell, no commands."]
    if forwards:
        lines.append("Forwarding (connections to these reach your side of the tunnel):")
        lines.extend(f"  {where}" for where in forwards)
    else:
        lines.append("No forwards yet: ask for them with ssh -R [address:]port:host:hostport.")
    if pty:
        lines.append("This session keeps them open. To leave: Ctrl-D, Ctrl-C, or Enter then ~.")
    else:
        # Without a pty ssh knows no escapes (~.), and Ctrl-C ends ssh itself.
        lines.append("This session keeps them open. To leave: end its input (Ctrl-D).")
    return _lines(lines, pty)


def forward_added_text(where: str, pty: bool) -> bytes:
    """A forward the client asked for after the session began."""
    return _lines([f"Now also forwarding {where}"], pty)


def idle_hint_text() -> bytes:
    """Said once, through a pty, when the user types anything but a key that leaves."""
    line = "Nothing runs here. To leave: Ctrl-D or Ctrl-C (the forwards close then)."
    return _lines([line], True)


def shutdown_text(pty: bool) -> bytes:
    """Said to a held session when the server stops."""
    return _lines(["rfwd-server is shutting down: the forwards are closed."], pty)


def exec_refusal() -> str:
    """The stderr line for C{exec}."""
    return "rfwd-server runs no commands: it only forwards ports (leave out the command, or ssh -N)"


def subsystem_refusal(name: str) -> str:
    """The stderr line for C{subsystem}; C{name} is already made printable."""
    return f"rfwd-server runs no subsystem ({name}): it only forwards ports"
