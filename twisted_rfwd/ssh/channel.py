"""
One SSH channel carrying one TCP connection: flow control both ways and half-close.

A L{Channel} sits between the multiplexer (L{twisted_rfwd.ssh.mux.ChannelMux}), which feeds it
messages from the peer, and a local stream transport (the forwarded TCP socket), attached with
L{Channel.attach}.  The two are each other's producers, as in Twisted's C{portforward}:

  - Bytes the local socket reads go out as C{CHANNEL_DATA}, never beyond the peer's window or
    maximum packet; when the window runs out, the socket stops reading until C{WINDOW_ADJUST}.
  - Bytes from the peer are written to the socket, and window credit goes back only for bytes
    the socket took: while its write buffer is full it pauses us, and the peer stops sending.

Half-close follows OpenSSH: local EOF becomes C{CHANNEL_EOF} once buffered data is sent; the
peer's EOF shuts down the socket's write side; C{CHANNEL_CLOSE} goes out once both directions are
done, and a received CLOSE is answered with CLOSE.  The rules, and the states they move
through, are written out in L{twisted_rfwd.protocol.channel_state}; this module does the I/O.

What a channel needs from the multiplexer that owns it is declared as L{IChannelOwner}.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.python.failure import Failure
from zope.interface import Interface, implementer

from twisted_rfwd.protocol.channel_state import (
    CONFIRMED_STATES,
    ChannelState,
    Event,
    ReceiveState,
    SendState,
    next_channel_state,
    next_receive_state,
    next_send_state,
)
from twisted_rfwd.protocol.window import ReceiveWindow, SendWindow
from twisted_rfwd.ssh.outcome import Outcome
from twisted_rfwd.ssh.sockets import write_now

__all__ = ["PACKETS_PER_TURN", "Channel", "IChannelOwner", "LocalStream"]

# Fairness between the connections of one reactor: a channel sends at most this many packets per
# reactor turn, and what is left waits for the next turn (its stream paused meanwhile).  Sixteen
# packets of a 32 KiB peer are a whole 512 KiB read, so ordinary peers never wait; a peer that
# announces a small maximum packet gets as many packets per turn, not more, so the packets it
# makes us seal cannot crowd out the other connections' turns.
PACKETS_PER_TURN = 16

# The states the per-packet paths compare against, by identity.
_OPENING = ChannelState.OPENING
_OPEN = ChannelState.OPEN
_SENDING = SendState.OPEN
_EOF_PENDING = SendState.EOF_PENDING
_EOF_SENT = SendState.EOF_SENT
_DISCARDED = SendState.DISCARDED
_RECEIVING = ReceiveState.OPEN

# Our CLOSE went out, or the channel ended without one: nothing more is sent.
_NOTHING_MORE_TO_SEND = frozenset(
    {ChannelState.CLOSE_SENT, ChannelState.CLOSED, ChannelState.FAILED}
)
# The peer's EOF arrived.
_PEER_EOF_STATES = frozenset({ReceiveState.EOF_RECEIVED, ReceiveState.FINISHED})
# The local stream will write nothing more: its write side closed, or it is gone.
_STREAM_WRITE_DONE_STATES = frozenset({ReceiveState.STREAM_CLOSED, ReceiveState.FINISHED})


class IChannelOwner(Interface):
    """
    What a L{Channel} needs from the multiplexer that owns it: a way to send its messages, to
    be held while the SSH connection cannot take more, and to be forgotten once closed.
    """

    clock: IReactorTime
    """Schedules a channel's next turn to send, when it used up this turn's packets."""

    def send_data(recipient: int, data: bytes | memoryview, max_packet: int) -> None:
        """Send C{data} as C{CHANNEL_DATA} packets of at most C{max_packet} bytes each."""

    def send_window_adjust(recipient: int, increment: int) -> None:
        """Grant the peer C{increment} more bytes with C{WINDOW_ADJUST}."""

    def send_eof(recipient: int) -> None:
        """Send C{CHANNEL_EOF}."""

    def send_close(recipient: int) -> None:
        """Send C{CHANNEL_CLOSE}."""

    def batch() -> AbstractContextManager[None]:
        """A context whose messages leave together (an EOF and the CLOSE after it)."""

    def sending(channel: Channel) -> None:
        """C{channel} is about to send data: hold it at once if the SSH connection is full."""

    def stream_attached(channel: Channel) -> None:
        """C{channel} has a local stream, which the owner waits for when draining."""

    def stream_detached(channel: Channel) -> None:
        """C{channel}'s local stream is gone."""

    def release_channel(channel: Channel) -> None:
        """C{channel} is done both ways: forget it; its number may be reused."""


class LocalStream(Protocol):
    """What a channel needs of its local transport: a half-closeable, pausable TCP transport."""

    def write(self, data: bytes) -> None: ...
    def loseConnection(self) -> None: ...
    def loseWriteConnection(self) -> None: ...
    def abortConnection(self) -> None: ...
    def pauseProducing(self) -> None: ...
    def resumeProducing(self) -> None: ...
    def registerProducer(self, producer: IPushProducer, streaming: bool) -> None: ...
    def unregisterProducer(self) -> None: ...


@implementer(IPushProducer)
class Channel:
    """
    The state of one channel; created by the multiplexer, driven by the peer's messages and by
    the local stream.

    Its lifecycle is three states (see L{twisted_rfwd.protocol.channel_state}); flow control is
    three flags: the local stream paused our credit (its write buffer is full), we paused the
    local stream (no window, or data waiting), and the owner holds us (the SSH connection is
    full).
    """

    def __init__(self, mux: IChannelOwner, local_id: int, window: ReceiveWindow) -> None:
        self._mux = mux
        self.local_id = local_id
        self.remote_id = -1
        self.window = window
        self._send_window = SendWindow(0, 1)
        self._stream: LocalStream | None = None
        self._pending: list[bytes] = []
        self._state = ChannelState.OPENING
        self._send = SendState.OPEN
        self._receive = ReceiveState.OPEN
        # Kept in step with _state by _advance: the multiplexer reads it for every packet.
        self.is_open = False
        self._released = False
        self._credit_paused = False
        self._source_paused = False
        self._held = False
        self._next_turn: IDelayedCall | None = None
        self._opened: Outcome[Channel] = Outcome()
        self._closed: Outcome[None] = Outcome()
        self.bytes_sent = 0
        self.bytes_received = 0

    # -- what the owner of the channel sees -------------------------------------------------

    @property
    def state(self) -> ChannelState:
        """The open and CLOSE handshakes: where the channel as a whole is."""
        return self._state

    @property
    def send_state(self) -> SendState:
        """Our direction, from the local stream to the peer."""
        return self._send

    @property
    def receive_state(self) -> ReceiveState:
        """The peer's direction, from the peer to the local stream."""
        return self._receive

    @property
    def eof_sent(self) -> bool:
        """We sent C{CHANNEL_EOF}."""
        return self._send is _EOF_SENT

    @property
    def eof_received(self) -> bool:
        """The peer sent C{CHANNEL_EOF}."""
        return self._receive in _PEER_EOF_STATES

    @property
    def close_sent(self) -> bool:
        """We sent C{CHANNEL_CLOSE}, or the connection ended: nothing more is sent."""
        return self._state in _NOTHING_MORE_TO_SEND

    @property
    def close_received(self) -> bool:
        """The peer sent C{CHANNEL_CLOSE}, or the connection ended."""
        state = self._state
        return state is ChannelState.CLOSE_RECEIVED or state is ChannelState.CLOSED

    def when_opened(self) -> Deferred[Channel]:
        """Fires with this channel once the peer confirmed it, or fails with the reason."""
        return self._opened.wait()

    def when_closed(self) -> Deferred[None]:
        """Fires once CLOSE was both sent and received (or the connection went away)."""
        return self._closed.wait()

    def attach(self, stream: LocalStream) -> None:
        """
        Connect the local stream.  It is read at once, even before the channel is open: the
        first bytes (a request, typically) are then ready to go with the confirmation instead
        of a reactor turn after it.  What it reads before the confirmation is held, and the
        stream paused, so one read is the most an unconfirmed channel keeps, as for a channel
        whose window is used up.
        """
        self._stream = stream
        self._mux.stream_attached(self)
        stream.registerProducer(self, True)

    # -- called by the local stream ------------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Send bytes read from the local stream, as far as the peer's window allows."""
        state = self._state
        if self._send is not _SENDING or (state is not _OPEN and state is not _OPENING):
            return
        self._mux.sending(self)
        if self._pending or state is _OPENING:
            self._pending.append(data)
            self._pause_source()
            return
        self._send_chunks(data)

    def write_eof(self) -> None:
        """The local stream will send nothing more: send EOF once buffered data has gone."""
        send = self._send
        if send is _EOF_SENT or send is _DISCARDED or self._state in _NOTHING_MORE_TO_SEND:
            return
        if self._pending or not self.is_open:
            self._send = next_send_state(self._send, Event.STREAM_EOF)
            return
        with self._mux.batch():
            self._send_eof()

    def local_write_closed(self) -> None:
        """The local stream finished sending the peer's data and shut down its write side."""
        self._receive = next_receive_state(self._receive, Event.STREAM_WRITE_DONE)
        self._maybe_close()

    def local_connection_lost(self, reason: Failure | None = None) -> None:
        """The local stream is gone: nothing more will flow either way."""
        self._stream = None
        self._mux.stream_detached(self)
        self._receive = next_receive_state(self._receive, Event.STREAM_WRITE_DONE)
        if not self.is_open:
            self._send = next_send_state(self._send, Event.STREAM_EOF)
            return
        self._pending.clear()
        with self._mux.batch():
            self._send_close()

    # -- IPushProducer, driven by the local stream's write buffer -------------------------------

    def pauseProducing(self) -> None:
        """The stream's write buffer is full: stop granting the peer window credit."""
        self._credit_paused = True

    def resumeProducing(self) -> None:
        """The stream's write buffer drained: grant credit for what it took."""
        self._credit_paused = False
        self._grant_credit()

    def stopProducing(self) -> None:
        """The stream went away; L{local_connection_lost} does the work."""

    # -- called by the multiplexer ----------------------------------------------------------------

    def opened(self, remote_id: int, window: int, max_packet: int) -> None:
        """The channel is confirmed (either way round): start moving data."""
        self.remote_id = remote_id
        self._send_window = SendWindow(window, max_packet)
        self._advance(Event.CONFIRMED)
        self._opened.settle(self)
        if self._state is not _OPEN:
            # Closed by whoever was waiting for the confirmation.
            return
        if self._stream is None and self._receive in _STREAM_WRITE_DONE_STATES:
            # The local side vanished while we waited for the confirmation: what it had sent
            # has nowhere to go back to, so only EOF and CLOSE are sent.
            self._pending.clear()
            self._send_close()
            return
        self._flush_pending()
        self._after_flush()

    def close_unused(self, remote_id: int, reason: Failure) -> None:
        """
        The peer confirmed the channel on terms we refuse: close it without sending any data,
        and fail L{when_opened} with C{reason}.
        """
        self.remote_id = remote_id
        # Open as far as the peer knows, so that its answering CLOSE is accepted.
        self._advance(Event.CONFIRMED)
        self._pending.clear()
        self._send = next_send_state(self._send, Event.REFUSED)
        stream = self._stream
        self._stream = None
        if stream is not None:
            stream.unregisterProducer()
            stream.loseConnection()
        self._opened.settle(reason)
        self._send_close()

    def open_failed(self, reason: Failure) -> None:
        """The peer refused the channel, or the connection ended before it answered."""
        stream = self._stream
        self._stream = None
        self._pending.clear()
        if stream is not None:
            stream.unregisterProducer()
            stream.loseConnection()
        self._advance(Event.OPEN_FAILED)
        self._release()
        self._opened.settle(reason)

    def data_received(self, data: bytes | memoryview) -> None:
        """C{CHANNEL_DATA} from the peer: account the window, and write it to the stream."""
        if self.data_arrived(data):
            self.deliver(data)

    def data_arrived(self, data: bytes | memoryview) -> bool:
        """
        C{CHANNEL_DATA} from the peer, counted against the window at once (a peer beyond it is
        refused here): whether the stream is to get it, with L{deliver}.  After the peer's EOF,
        or our CLOSE, or with the stream gone, it is dropped.
        """
        self.window.data_received(len(data))
        return self._receive is _RECEIVING and self._state is _OPEN and self._stream is not None

    def deliver(self, data: bytes | memoryview) -> None:
        """
        Write data that L{data_arrived} accepted to the stream, and grant window for it.  The
        multiplexer delivers what one read of the SSH socket brought a channel in one call;
        C{data} may be a view into a packet, so it is not kept beyond the write.
        """
        stream = self._stream
        if stream is None or self._receive is not _RECEIVING or self._state is not _OPEN:
            return
        size = len(data)
        self.bytes_received += size
        write_now(stream, data)
        self.window.consumed(size)
        if not self._credit_paused:
            credit = self.window.credit_due()
            if credit:
                self._mux.send_window_adjust(self.remote_id, credit)

    def window_adjusted(self, increment: int) -> None:
        """C{WINDOW_ADJUST}: the peer can take more; send what waits, then read again."""
        self._send_window.adjust(increment)
        if self._send is _EOF_SENT or self._state in _NOTHING_MORE_TO_SEND:
            return
        if self._pending:
            self._flush_pending()
        self._after_flush()

    def eof_received_from_peer(self) -> None:
        """C{CHANNEL_EOF}: shut down the stream's write side once its buffer is flushed."""
        before = self._receive
        self._receive = next_receive_state(before, Event.PEER_EOF)
        if self._receive is before:
            return
        stream = self._stream
        if stream is None:
            self._maybe_close()
            return
        # A paused producer would keep Twisted from ever finishing the half-close.
        stream.unregisterProducer()
        stream.loseWriteConnection()

    def close_received_from_peer(self) -> None:
        """C{CHANNEL_CLOSE}: answer it, and close the stream after flushing what it holds."""
        self._advance(Event.PEER_CLOSE)
        self._pending.clear()
        stream = self._stream
        self._stream = None
        if stream is not None:
            stream.unregisterProducer()
            stream.loseConnection()
        self._send_close()
        self._maybe_release()

    def connection_lost(self, reason: Failure) -> None:
        """The SSH connection ended: drop the stream and fail anything still waiting."""
        stream = self._stream
        self._stream = None
        self._advance(Event.CONNECTION_LOST)
        if stream is not None:
            stream.unregisterProducer()
            stream.loseConnection()
        if not self.is_open and not self._opened.settled:
            self._opened.settle(reason)
        self._release()

    def hold(self) -> None:
        """The SSH connection's own send buffer is full: stop reading the local stream."""
        self._held = True
        self._pause_source()

    def release(self) -> None:
        """The SSH connection drained: read again, unless the window still says no."""
        self._held = False
        if self.is_open and not self._pending and self._send is not _EOF_PENDING:
            self._resume_source()

    # -- internals ---------------------------------------------------------------------------

    def _advance(self, event: Event) -> None:
        """Move the channel's own state on C{event}, and C{is_open} with it."""
        self._state = state = next_channel_state(self._state, event)
        self.is_open = state in CONFIRMED_STATES

    def _send_chunks(self, data: bytes) -> None:
        """
        Send as much of C{data} as the window and this turn allow; keep the rest until the
        window grows or the next turn.
        """
        size = len(data)
        window = self._send_window
        n = window.take(size, PACKETS_PER_TURN)
        if n < size and window.available:
            # Cut short by this turn's packets, not by the window: go on next turn.
            self._continue_next_turn()
        if n == size:
            self._mux.send_data(self.remote_id, data, window.max_packet)
        elif n > 0:
            self._mux.send_data(self.remote_id, memoryview(data)[:n], window.max_packet)
        self.bytes_sent += n
        if n < size:
            self._pending.append(data[n:])
            self._pause_source()

    def _continue_next_turn(self) -> None:
        if self._next_turn is None:
            self._next_turn = self._mux.clock.callLater(0, self._turn)

    def _turn(self) -> None:
        self._next_turn = None
        if self._state is not _OPEN or self._send is _EOF_SENT or not self._pending:
            return
        self._flush_pending()
        self._after_flush()

    def _flush_pending(self) -> None:
        pending, self._pending = self._pending, []
        for i, chunk in enumerate(pending):
            self._send_chunks(chunk)
            if self._pending:
                self._pending.extend(pending[i + 1 :])
                return

    def _after_flush(self) -> None:
        """Once nothing waits for window: send a deferred EOF, or read from the stream again."""
        if self._pending:
            return
        if self._send is _EOF_PENDING:
            self._send_eof()
        else:
            self._resume_source()

    def _grant_credit(self) -> None:
        if self._state in _NOTHING_MORE_TO_SEND or self._receive in _PEER_EOF_STATES:
            return
        credit = self.window.credit_due()
        if credit:
            self._mux.send_window_adjust(self.remote_id, credit)

    def _pause_source(self) -> None:
        if not self._source_paused and self._stream is not None:
            self._source_paused = True
            self._stream.pauseProducing()

    def _resume_source(self) -> None:
        if self._source_paused and self._stream is not None and not self._held:
            self._source_paused = False
            self._stream.resumeProducing()

    def _send_eof(self) -> None:
        self._send = next_send_state(self._send, Event.OUR_EOF)
        self._mux.send_eof(self.remote_id)
        self._maybe_close()

    def _maybe_close(self) -> None:
        """CLOSE once we sent EOF and the peer's EOF reached the local stream."""
        if self._state in _NOTHING_MORE_TO_SEND:
            return
        if (
            self._send is _EOF_SENT
            and self._receive in _PEER_EOF_STATES
            and (self._receive in _STREAM_WRITE_DONE_STATES or not self._stream)
        ):
            stream = self._stream
            self._stream = None
            if stream is not None:
                stream.unregisterProducer()
                stream.loseConnection()
            self._send_close()

    def _send_close(self) -> None:
        if self._state in _NOTHING_MORE_TO_SEND:
            return
        if self._send is _EOF_PENDING and self.is_open:
            self._send = next_send_state(self._send, Event.OUR_EOF)
            self._mux.send_eof(self.remote_id)
        self._advance(Event.OUR_CLOSE)
        self._mux.send_close(self.remote_id)
        self._maybe_release()

    def _maybe_release(self) -> None:
        if self._state is ChannelState.CLOSED:
            self._release()

    def _release(self) -> None:
        if self._released:
            return
        self._released = True
        if self._next_turn is not None and self._next_turn.active():
            self._next_turn.cancel()
        self._next_turn = None
        self._mux.release_channel(self)
        self._closed.settle(None)
