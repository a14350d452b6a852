"""
A C{session} channel that runs nothing and holds the connection's forwards open.

C{ssh -R 2222:localhost:222 user@host}, without C{-N}, asks for a shell; so does PuTTY's plink.
rfwd-server accepts the session, writes what it is and what is forwarded, and keeps the channel
open until the user leaves (see the rules in L{twisted_rfwd.protocol.session}).

A L{HeldSession} is the local end of its channel, in place of the TCP socket a forwarded
connection has (L{twisted_rfwd.ssh.channel.LocalStream}): the channel writes the client's input
to it, and its own text goes out through the channel, within the window.  The peer's EOF reaches
it as C{loseWriteConnection}, the channel's end as C{loseConnection}; when the session ends by
itself it tells the channel as a closing socket would (C{local_connection_lost}), after sending
C{exit-status} and EOF.

What follows an accepted request (the text, or the refusal of a command) is sent on the next
reactor turn, so that the request's reply goes out first.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from twisted.internet.interfaces import IPushProducer, IReactorTime

from twisted_rfwd.protocol.messages import loggable
from twisted_rfwd.protocol.session import (
    EXTENDED_DATA_STDERR,
    ExecRequest,
    PtyRequest,
    SessionPhase,
    SubsystemRequest,
    Verdict,
    decide,
    ends_session,
    exec_refusal,
    forward_added_text,
    held_text,
    idle_hint_text,
    pack_exit_status,
    parse_request,
    shutdown_text,
    subsystem_refusal,
)
from twisted_rfwd.ssh.channel import Channel

__all__ = ["HeldSession", "SessionHost"]


class SessionHost(Protocol):
    """What a session needs of the connection that carries it."""

    clock: IReactorTime
    stopped: bool

    def send_channel_request(
        self, recipient: int, name: bytes, want_reply: bool, data: bytes
    ) -> None: ...

    def send_extended_data(self, channel: Channel, data_type: int, data: bytes) -> bool: ...


class HeldSession:
    """
    One session channel's local end: answers the client's requests and reads its keystrokes,
    running nothing.

    @ivar pty: the client's C{pty-req}, if it asked for a terminal.
    """

    def __init__(
        self,
        channel: Channel,
        host: SessionHost,
        *,
        user: str,
        version: str,
        forwards: Callable[[], Sequence[str]],
        event: Callable[[str], None],
        ended: Callable[[HeldSession], None],
    ) -> None:
        self.channel = channel
        self._host = host
        self._user = user
        self._version = version
        self._forwards = forwards
        self._event = event
        self._ended = ended
        self.phase = SessionPhase.SETUP
        self.pty: PtyRequest | None = None
        self._peer_eof = False
        self._ending = False
        self._hinted = False
        self._lost = False
        self.producer: IPushProducer | None = None

    # -- the client's requests, from the connection ----------------------------------------

    def request(self, request_type: bytes, data: bytes) -> bool:
        """
        Answer one channel request: C{True} to accept it.  A malformed payload raises
        L{twisted_rfwd.errors.MalformedPacket}, the peer's protocol error.
        """
        verdict = decide(self.phase, request_type, self.pty is not None)
        if verdict is Verdict.REFUSE:
            return False
        parsed = parse_request(request_type, data)
        if isinstance(parsed, PtyRequest):
            self.pty = parsed
        elif verdict is Verdict.HOLD:
            self.phase = SessionPhase.HELD
            self._later(self._hold)
        elif verdict is Verdict.NO_PROGRAM:
            self.phase = SessionPhase.ENDED
            if isinstance(parsed, SubsystemRequest):
                name = loggable(parsed.name)
                line, what = subsystem_refusal(name), f"subsystem {name}"
            else:
                assert isinstance(parsed, ExecRequest)
                # The command itself is not logged: it is the client's, and may hold secrets.
                line, what = exec_refusal(), "a command"
            self._event(f"asked for {what}, which rfwd-server does not run (exit-status 1)")
            self._later(self._finish, 1, f"{what} refused", line)
        return True

    # -- the connection's own news ------------------------------------------------------------

    def forward_added(self, where: str) -> None:
        """The client got one more forward: say so, if the text was already shown."""
        if self.phase is SessionPhase.HELD and not self._ending:
            self.channel.write(forward_added_text(where, self.pty is not None))

    def server_stopping(self) -> None:
        """
        The server is shutting down and its forwards are closed: say so and close the channel,
        with no exit-status, as when the connection is lost (ssh then exits 255).
        """
        if self._lost:
            return
        if self.phase is SessionPhase.HELD and not self._ending:
            self.channel.write(shutdown_text(self.pty is not None))
        self.channel.write_eof()
        self._lose("the server is shutting down")

    # -- LocalStream: what the channel does to its local end ---------------------------------

    def write(self, data: bytes) -> None:
        """The client's input: Ctrl-C or Ctrl-D through a pty ends a held session."""
        if self.phase is not SessionPhase.HELD or self._ending:
            return
        has_pty = self.pty is not None
        if ends_session(data, has_pty):
            self._ending = True
            self._later(self._finish, 0, "the user pressed Ctrl-C or Ctrl-D")
        elif has_pty and not self._hinted:
            self._hinted = True
            self._later(self._hint)

    def loseWriteConnection(self) -> None:
        """The client's EOF: a held session ends; one still being set up ends once held."""
        self._peer_eof = True
        if self.phase is SessionPhase.HELD and not self._ending:
            self._ending = True
            self._finish(0, "the client's input ended")

    def loseConnection(self) -> None:
        """The channel is closed (by the client, or with the connection): nothing to send."""
        why = "the SSH connection ended" if self._host.stopped else "the client closed it"
        self._lose(why)

    def abortConnection(self) -> None:
        self.loseConnection()

    def pauseProducing(self) -> None:
        """The channel's window is full: what little we write waits in the channel."""

    def resumeProducing(self) -> None:
        """The channel takes data again."""

    def registerProducer(self, producer: IPushProducer, streaming: bool) -> None:
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.producer = None

    # -- internals ---------------------------------------------------------------------------

    def _later(self, f: Callable[..., object], *args: object) -> None:
        self._host.clock.callLater(0, f, *args)

    def _hold(self) -> None:
        if self._lost:
            return
        has_pty = self.pty is not None
        text = held_text(self._version, self._user, list(self._forwards()), has_pty)
        self.channel.write(text)
        term = f"a pty ({loggable(self.pty.term)})" if self.pty is not None else "no pty"
        self._event(f"held open with {term}")
        if self._peer_eof and not self._ending:
            self._ending = True
            self._finish(0, "the client's input ended")

    def _hint(self) -> None:
        if not self._lost and not self._ending:
            self.channel.write(idle_hint_text())

    def _finish(self, status: int, why: str, stderr: str | None = None) -> None:
        """End the session ourselves: a stderr line, exit-status, EOF, then CLOSE."""
        if self._lost:
            return
        channel = self.channel
        if stderr is not None:
            newline = "\r\n" if self.pty is not None else "\n"
            line = (stderr + newline).encode("utf-8")
            self._host.send_extended_data(channel, EXTENDED_DATA_STDERR, line)
        if not channel.close_sent:
            self._host.send_channel_request(
                channel.remote_id, b"exit-status", False, pack_exit_status(status)
            )
        channel.write_eof()
        self._lose(why)

    def _lose(self, why: str) -> None:
        """The session is over: the channel sends what it must (EOF, CLOSE) and forgets us."""
        if self._lost:
            return
        self._lost = True
        self.phase = SessionPhase.ENDED
        self._event(f"ended: {why}")
        self._ended(self)
        self.channel.local_connection_lost(None)
