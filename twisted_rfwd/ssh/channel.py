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
done, and a received CLOSE is answered with CLOSE.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IPushProducer
from twisted.python.failure import Failure
from zope.interface import implementer

from twisted_rfwd.protocol.window import ReceiveWindow
from twisted_rfwd.ssh.outcome import Outcome

if TYPE_CHECKING:
    from twisted_rfwd.ssh.mux import ChannelMux

__all__ = ["PACKETS_PER_TURN", "Channel", "LocalStream"]

# Fairness between the connections of one reactor: a channel sends at most this many packets per
# reactor turn, and what is left waits for the next turn (its stream paused meanwhile).  Sixteen
# packets of a 32 KiB peer are a whole 512 KiB read, so ordinary peers never wait; a peer that
# announces a small maximum packet gets as many packets per turn, not more, so the packets it
# makes us seal cannot crowd out the other connections' turns.
PACKETS_PER_TURN = 16


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
    """

    remote_id: int = -1
    is_open: bool = False

    def __init__(self, mux: ChannelMux, local_id: int, window: ReceiveWindow) -> None:
        self._mux = mux
        self.local_id = local_id
        self.window = window
        self._send_window = 0
        self._send_max_packet = 0
        self._stream: LocalStream | None = None
        self._pending: list[bytes] = []
        self._credit_paused = False
        self._source_paused = False
        self._held = False
        self._eof_wanted = False
        self.eof_sent = False
        self.eof_received = False
        self.close_sent = False
        self.close_received = False
        self._local_write_done = False
        self._released = False
        self._next_turn: IDelayedCall | None = None
        self._opened: Outcome[Channel] = Outcome()
        self._closed: Outcome[None] = Outcome()
        self.bytes_sent = 0
        self.bytes_received = 0

    # -- what the owner of the channel sees -------------------------------------------------

    def when_opened(self) -> Deferred[Channel]:
        """Fires with this channel once the peer confirmed it, or fails with the reason."""
        return self._opened.wait()

    def when_closed(self) -> Deferred[None]:
        """Fires once CLOSE was both sent and received (or the connection went away)."""
        return self._closed.wait()

    def attach(self, stream: LocalStream) -> None:
        """Connect the local stream; until the channel is open, the stream is not read."""
        self._stream = stream
        self._mux.stream_attached(self)
        stream.registerProducer(self, True)
        if not self.is_open:
            self._pause_source()

    # -- called by the local stream ------------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Send bytes read from the local stream, as far as the peer's window allows."""
        if self.eof_sent or self._eof_wanted or self.close_sent or self.close_received:
            return
        self._mux.sending(self)
        if self._pending or not self.is_open:
            self._pending.append(data)
            self._pause_source()
            return
        self._send_chunks(data)

    def write_eof(self) -> None:
        """The local stream will send nothing more: send EOF once buffered data has gone."""
        if self.eof_sent or self.close_sent:
            return
        if self._pending or not self.is_open:
            self._eof_wanted = True
            return
        self._send_eof()

    def local_write_closed(self) -> None:
        """The local stream finished sending the peer's data and shut down its write side."""
        self._local_write_done = True
        self._maybe_close()

    def local_connection_lost(self, reason: Failure | None = None) -> None:
        """The local stream is gone: nothing more will flow either way."""
        self._stream = None
        self._mux.stream_detached(self)
        self._local_write_done = True
        if not self.is_open:
            self._eof_wanted = True
            return
        self._pending.clear()
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
        self._send_window = window
        self._send_max_packet = max(1, max_packet)
        self.is_open = True
        self._opened.settle(self)
        if self.close_sent or self._released:
            return
        if self._stream is None and self._local_write_done:
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
        self.is_open = True
        self._pending.clear()
        self._eof_wanted = False
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
        self._release()
        self._opened.settle(reason)

    def data_received(self, data: bytes) -> None:
        """C{CHANNEL_DATA} from the peer: hand it to the stream, account the window."""
        size = len(data)
        self.window.data_received(size)
        if self.eof_received or self.close_sent or self._stream is None:
            return
        self.bytes_received += size
        self._stream.write(data)
        self.window.consumed(size)
        if not self._credit_paused:
            credit = self.window.credit_due()
            if credit:
                self._mux.send_window_adjust(self.remote_id, credit)

    def window_adjusted(self, increment: int) -> None:
        """C{WINDOW_ADJUST}: the peer can take more; send what waits, then read again."""
        self._send_window = min(self._send_window + increment, 0xFFFFFFFF)
        if self.close_sent or self.eof_sent:
            return
        if self._pending:
            self._flush_pending()
        self._after_flush()

    def eof_received_from_peer(self) -> None:
        """C{CHANNEL_EOF}: shut down the stream's write side once its buffer is flushed."""
        if self.eof_received:
            return
        self.eof_received = True
        stream = self._stream
        if stream is None:
            self._maybe_close()
            return
        # A paused producer would keep Twisted from ever finishing the half-close.
        stream.unregisterProducer()
        stream.loseWriteConnection()

    def close_received_from_peer(self) -> None:
        """C{CHANNEL_CLOSE}: answer it, and close the stream after flushing what it holds."""
        self.close_received = True
        self._pending.clear()
        stream = self._stream
        self._stream = None
        if stream is not None:
            stream.unregisterProducer()
            stream.loseConnection()
        if not self.close_sent:
            self._send_close()
        self._maybe_release()

    def connection_lost(self, reason: Failure) -> None:
        """The SSH connection ended: drop the stream and fail anything still waiting."""
        stream = self._stream
        self._stream = None
        self.close_sent = self.close_received = True
        if stream is not None:
            stream.unregisterProducer()
            stream.loseConnection()
        if not self.is_open and not self._opened.settled:
            self._opened.settle(reason)
        self._release()

    # -- internals ---------------------------------------------------------------------------

    def _send_chunks(self, data: bytes) -> None:
        """
        Send as much of C{data} as the window and this turn allow; keep the rest until the
        window grows or the next turn.
        """
        size = len(data)
        turn = self._send_max_packet * PACKETS_PER_TURN
        n = min(size, self._send_window, turn)
        if n == turn and n < min(size, self._send_window):
            self._continue_next_turn()
        if n == size:
            self._mux.send_data(self.remote_id, data, self._send_max_packet)
        elif n > 0:
            self._mux.send_data(self.remote_id, memoryview(data)[:n], self._send_max_packet)
        self._send_window -= n
        self.bytes_sent += n
        if n < size:
            self._pending.append(data[n:])
            self._pause_source()

    def _continue_next_turn(self) -> None:
        if self._next_turn is None:
            self._next_turn = self._mux.clock.callLater(0, self._turn)

    def _turn(self) -> None:
        self._next_turn = None
        if self.close_sent or self.eof_sent or self._released or not self._pending:
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
        if self._eof_wanted:
            self._send_eof()
        else:
            self._resume_source()

    def _grant_credit(self) -> None:
        if self.close_sent or self.eof_received:
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

    def hold(self) -> None:
        """The SSH connection's own send buffer is full: stop reading the local stream."""
        self._held = True
        self._pause_source()

    def release(self) -> None:
        """The SSH connection drained: read again, unless the window still says no."""
        self._held = False
        if self.is_open and not self._pending and not self._eof_wanted:
            self._resume_source()

    def _send_eof(self) -> None:
        self._eof_wanted = False
        if self.eof_sent or self.close_sent:
            return
        self.eof_sent = True
        self._mux.send_eof(self.remote_id)
        self._maybe_close()

    def _maybe_close(self) -> None:
        """CLOSE once we sent EOF and the peer's EOF reached the local stream."""
        if self.close_sent:
            return
        if self.eof_sent and self.eof_received and (self._local_write_done or not self._stream):
            stream = self._stream
            self._stream = None
            if stream is not None:
                stream.unregisterProducer()
                stream.loseConnection()
            self._send_close()

    def _send_close(self) -> None:
        if self.close_sent:
            return
        if self._eof_wanted and not self.eof_sent and self.is_open:
            self.eof_sent = True
            self._mux.send_eof(self.remote_id)
        self.close_sent = True
        self._mux.send_close(self.remote_id)
        self._maybe_release()

    def _maybe_release(self) -> None:
        if self.close_sent and self.close_received:
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
