"""
Tests for L{twisted_rfwd.ssh.channel.Channel} on its own: flow control both ways and half-close.

The multiplexer is a recorder (L{FakeMux}) and the local socket a L{FakeStream}, attached with
L{Channel.attach} as the relay would; a tiny protocol passes the stream's events to the channel
as L{twisted_rfwd.ssh.relay.ChannelRelay} does.  The end-to-end behaviour over real SSH is in
L{tests.memory.test_memory_forwarding}.
"""

from __future__ import annotations

from contextlib import AbstractContextManager

from twisted.internet.interfaces import IHalfCloseableProtocol, IPushProducer
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from tests.support.streams import FakeStream
from twisted_rfwd.errors import ChannelOpenFailed, ConnectionClosed, RemoteProtocolError
from twisted_rfwd.protocol.channel_state import ChannelState, ReceiveState, SendState
from twisted_rfwd.protocol.window import ReceiveWindow
from twisted_rfwd.ssh.channel import PACKETS_PER_TURN, Channel, IChannelOwner

LOCAL_ID = 7
REMOTE_ID = 42

Event = tuple[object, ...]


class _RecordedBatch:
    def __init__(self, mux: FakeMux) -> None:
        self._mux = mux
        self._start = 0

    def __enter__(self) -> None:
        mux = self._mux
        if not mux.batch_depth:
            self._start = len(mux.events)
        mux.batch_depth += 1

    def __exit__(self, *exc_info: object) -> None:
        mux = self._mux
        mux.batch_depth -= 1
        if not mux.batch_depth:
            mux.batches.append(mux.events[self._start :])


@implementer(IChannelOwner)
class FakeMux:
    """Records what the channel asks the multiplexer to send, in order, in C{events}."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.senders: list[Channel] = []
        self.clock = Clock()
        self.packets_per_call: list[int] = []
        self.batches: list[list[Event]] = []
        self.batch_depth = 0

    def send_data(self, recipient: int, data: bytes | memoryview, max_packet: int) -> None:
        # The multiplexer sends one packet per max_packet bytes; record each, as bytes (the
        # channel may pass a view into the chunk it read).
        self.packets_per_call.append(-(-len(data) // max_packet))
        for offset in range(0, len(data), max_packet):
            self.events.append(("data", recipient, bytes(data[offset : offset + max_packet])))

    def sending(self, channel: Channel) -> None:
        self.senders.append(channel)

    def stream_attached(self, channel: Channel) -> None:
        pass

    def batch(self) -> AbstractContextManager[None]:
        """The events of each outermost batch are also recorded together, in C{batches}."""
        return _RecordedBatch(self)

    def stream_detached(self, channel: Channel) -> None:
        pass

    def send_window_adjust(self, recipient: int, increment: int) -> None:
        self.events.append(("adjust", recipient, increment))

    def send_eof(self, recipient: int) -> None:
        self.events.append(("eof", recipient))

    def send_close(self, recipient: int) -> None:
        self.events.append(("close", recipient))

    def release_channel(self, channel: Channel) -> None:
        self.events.append(("release", channel.local_id))

    def data(self) -> list[bytes]:
        """The payloads of the C{CHANNEL_DATA} sent so far."""
        return [e[2] for e in self.events if e[0] == "data" and isinstance(e[2], bytes)]

    def adjusts(self) -> list[int]:
        """The increments of the C{WINDOW_ADJUST} sent so far."""
        return [e[2] for e in self.events if e[0] == "adjust" and isinstance(e[2], int)]

    def kinds(self, *kinds: str) -> list[object]:
        """The kinds of the events recorded, keeping only C{kinds} if given."""
        return [e[0] for e in self.events if not kinds or e[0] in kinds]


@implementer(IHalfCloseableProtocol)
class Forwarder(Protocol):
    """Passes the stream's events to the channel, like the relay; attaching is left to tests."""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self.lost: list[Failure] = []

    def dataReceived(self, data: bytes) -> None:
        self.channel.write(data)

    def readConnectionLost(self) -> None:
        self.channel.write_eof()

    def writeConnectionLost(self) -> None:
        self.channel.local_write_closed()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lost.append(reason)
        self.channel.local_connection_lost(reason)


class RecordingStream(FakeStream):
    """A L{FakeStream} that also records the order of the producer and close calls it gets."""

    def __init__(self, high_water: int = 64 * 1024) -> None:
        super().__init__(high_water)
        self.calls: list[str] = []

    def registerProducer(self, producer: IPushProducer, streaming: bool) -> None:
        self.calls.append("registerProducer")
        super().registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        self.calls.append("unregisterProducer")
        super().unregisterProducer()

    def loseWriteConnection(self) -> None:
        self.calls.append("loseWriteConnection")
        super().loseWriteConnection()

    def loseConnection(self) -> None:
        self.calls.append("loseConnection")
        super().loseConnection()


class ChannelTestCase(SynchronousTestCase):
    """Builds a channel with a recording mux, and a stream attached to it."""

    def make(self, window: int = 1000, max_packet: int = 100) -> tuple[Channel, FakeMux]:
        mux = FakeMux()
        channel = Channel(mux, LOCAL_ID, ReceiveWindow(window, max_packet))
        return channel, mux

    def attach(self, channel: Channel, high_water: int = 64 * 1024) -> RecordingStream:
        stream = RecordingStream(high_water)
        stream.connect(Forwarder(channel))
        channel.attach(stream)
        return stream

    def open_attached(
        self, send_window: int = 10_000, send_max_packet: int = 100, high_water: int = 64 * 1024
    ) -> tuple[Channel, FakeMux, RecordingStream]:
        """An open channel (our receive window 1000, packets 100) with a stream attached."""
        channel, mux = self.make()
        stream = self.attach(channel, high_water)
        channel.opened(REMOTE_ID, send_window, send_max_packet)
        return channel, mux, stream


class OpeningTests(ChannelTestCase):
    """Nothing is read or sent before the peer confirms the channel."""

    def test_one_read_held_before_opened(self) -> None:
        """
        Before the peer confirms, the stream's first read is held and the stream paused: later
        bytes stay in the socket, and nothing is sent.
        """
        channel, mux = self.make()
        stream = self.attach(channel)
        self.assertFalse(stream.reading_paused)
        self.assertIs(stream.producer, channel)
        stream.receive(b"early")
        self.assertTrue(stream.reading_paused)
        stream.receive(b"later")
        self.assertEqual(stream.inbound, [b"later"])
        self.assertEqual(mux.events, [])
        channel.opened(REMOTE_ID, 10_000, 100)
        self.assertEqual(mux.events, [("data", REMOTE_ID, b"early"), ("data", REMOTE_ID, b"later")])

    def test_held_data_sent_when_opened(self) -> None:
        """Data written before opened() is held, then sent first, before the stream is read."""
        channel, mux = self.make()
        stream = self.attach(channel)
        channel.write(b"held")
        stream.receive(b"queued")
        self.assertEqual(mux.events, [])
        channel.opened(REMOTE_ID, 10_000, 100)
        self.assertEqual(mux.events, [("data", REMOTE_ID, b"held"), ("data", REMOTE_ID, b"queued")])
        self.assertFalse(stream.reading_paused)
        self.assertEqual(stream.inbound, [])
        self.assertEqual(channel.bytes_sent, 10)

    def test_when_opened_fires_with_the_channel(self) -> None:
        """when_opened() fires on opened(), and at once for callers who ask afterwards."""
        channel, _ = self.make()
        early = channel.when_opened()
        self.assertNoResult(early)
        channel.opened(REMOTE_ID, 10_000, 100)
        self.assertIs(self.successResultOf(early), channel)
        self.assertIs(self.successResultOf(channel.when_opened()), channel)
        self.assertEqual((channel.remote_id, channel.is_open), (REMOTE_ID, True))

    def test_attach_to_open_channel_reads_at_once(self) -> None:
        """A stream attached after opened() is not paused, and what it reads is sent."""
        channel, mux = self.make()
        channel.opened(REMOTE_ID, 10_000, 100)
        stream = self.attach(channel)
        self.assertFalse(stream.reading_paused)
        stream.receive(b"now")
        self.assertEqual(mux.events, [("data", REMOTE_ID, b"now")])


class SendTests(ChannelTestCase):
    """Bytes from the stream go out within the peer's maximum packet and window."""

    def test_split_to_max_packet(self) -> None:
        """A write larger than the peer's maximum packet goes out in packets of at most that."""
        _, mux, stream = self.open_attached(send_window=10_000, send_max_packet=100)
        data = bytes(range(250))
        stream.receive(data)
        self.assertEqual([len(d) for d in mux.data()], [100, 100, 50])
        self.assertEqual(b"".join(mux.data()), data)
        self.assertFalse(stream.reading_paused)

    def test_never_beyond_window(self) -> None:
        """Only the peer's window is sent; the rest is held and the stream stops being read."""
        channel, mux, stream = self.open_attached(send_window=150, send_max_packet=100)
        stream.receive(b"a" * 300)
        self.assertEqual(mux.data(), [b"a" * 100, b"a" * 50])
        self.assertEqual(channel.bytes_sent, 150)
        self.assertTrue(stream.reading_paused)
        stream.receive(b"b" * 10)
        self.assertEqual(stream.inbound, [b"b" * 10])
        self.assertEqual(len(mux.data()), 2)

    def test_packets_per_turn_are_bounded(self) -> None:
        """
        A peer with a small maximum packet gets PACKETS_PER_TURN packets per reactor turn; the
        rest follows on later turns, in order, and the stream is read again once all is sent.
        """
        channel, mux, stream = self.open_attached(send_window=1_000_000, send_max_packet=1000)
        data = bytes(range(256)) * 200  # 51,200 bytes: 52 packets
        stream.receive(data)
        self.assertEqual(len(mux.data()), PACKETS_PER_TURN)
        self.assertTrue(stream.reading_paused)
        self.assertEqual(len(mux.clock.getDelayedCalls()), 1)
        mux.clock.advance(0)
        self.assertEqual(max(mux.packets_per_call), PACKETS_PER_TURN)
        self.assertEqual(len(mux.packets_per_call), 4)
        self.assertEqual(b"".join(mux.data()), data)
        self.assertEqual(channel.bytes_sent, len(data))
        self.assertFalse(stream.reading_paused)

    def test_closing_cancels_the_next_turn(self) -> None:
        """A channel closed while data waits for its next turn sends nothing more."""
        channel, mux, stream = self.open_attached(send_window=1_000_000, send_max_packet=1000)
        stream.receive(b"z" * 40_000)
        channel.close_received_from_peer()
        sent = len(mux.data())
        mux.clock.advance(0)
        self.assertEqual(len(mux.data()), sent)

    def test_window_exactly_used(self) -> None:
        """A write that exactly fills the window is sent whole and does not pause the stream."""
        _, mux, stream = self.open_attached(send_window=100, send_max_packet=100)
        stream.receive(b"x" * 100)
        self.assertEqual(mux.data(), [b"x" * 100])
        self.assertFalse(stream.reading_paused)

    def test_window_adjust_sends_held_data_in_order(self) -> None:
        """WINDOW_ADJUST sends held bytes in order; reading resumes only once none are held."""
        channel, mux, stream = self.open_attached(send_window=150, send_max_packet=100)
        stream.receive(b"a" * 300)
        stream.receive(b"b" * 50)
        channel.window_adjusted(100)
        self.assertEqual(mux.data(), [b"a" * 100, b"a" * 50, b"a" * 100])
        self.assertTrue(stream.reading_paused, "resumed while 50 bytes were still held")
        self.assertEqual(stream.inbound, [b"b" * 50])
        channel.window_adjusted(1000)
        self.assertEqual(b"".join(mux.data()), b"a" * 300 + b"b" * 50)
        self.assertEqual(mux.data()[3:], [b"a" * 50, b"b" * 50])
        self.assertFalse(stream.reading_paused)
        self.assertEqual(channel.bytes_sent, 350)

    def test_several_held_writes_keep_their_order(self) -> None:
        """Writes held behind an exhausted window go out in order as the window reopens."""
        channel, mux = self.make()
        self.attach(channel)
        channel.opened(REMOTE_ID, 10, 100)
        channel.write(b"0123456789ab")
        channel.write(b"cd")
        channel.write(b"ef")
        self.assertEqual(mux.data(), [b"0123456789"])
        channel.window_adjusted(3)
        self.assertEqual(mux.data(), [b"0123456789", b"ab", b"c"])
        channel.window_adjusted(100)
        self.assertEqual(mux.data(), [b"0123456789", b"ab", b"c", b"d", b"ef"])

    def test_zero_window_holds_everything(self) -> None:
        """With an initial window of zero nothing is sent until WINDOW_ADJUST."""
        channel, mux, stream = self.open_attached(send_window=0, send_max_packet=100)
        stream.receive(b"wait")
        self.assertEqual(mux.events, [])
        self.assertTrue(stream.reading_paused)
        channel.window_adjusted(4)
        self.assertEqual(mux.data(), [b"wait"])
        self.assertFalse(stream.reading_paused)


class LocalEofTests(ChannelTestCase):
    """The stream's EOF becomes CHANNEL_EOF, after all the data it read."""

    def test_eof_sent_at_once_when_nothing_held(self) -> None:
        """With nothing held, the stream's EOF goes out straight after its data."""
        channel, mux, stream = self.open_attached()
        stream.receive(b"last")
        stream.receive_eof()
        self.assertEqual(mux.events, [("data", REMOTE_ID, b"last"), ("eof", REMOTE_ID)])
        self.assertTrue(channel.eof_sent)

    def test_eof_waits_for_held_data(self) -> None:
        """EOF read while data waits for window is sent only after all of that data."""
        channel, mux = self.make()
        self.attach(channel)
        channel.opened(REMOTE_ID, 5, 100)
        channel.write(b"0123456789")
        channel.write_eof()
        self.assertEqual(mux.kinds(), ["data"])
        channel.window_adjusted(3)
        self.assertEqual(mux.kinds(), ["data", "data"])
        channel.window_adjusted(2)
        self.assertEqual(
            mux.events,
            [
                ("data", REMOTE_ID, b"01234"),
                ("data", REMOTE_ID, b"567"),
                ("data", REMOTE_ID, b"89"),
                ("eof", REMOTE_ID),
            ],
        )

    def test_eof_before_open_follows_held_data(self) -> None:
        """Data and EOF arriving before the channel opened are sent, in that order, on open."""
        channel, mux = self.make()
        self.attach(channel)
        channel.write(b"request")
        channel.write_eof()
        self.assertEqual(mux.events, [])
        channel.opened(REMOTE_ID, 10_000, 100)
        self.assertEqual(mux.events, [("data", REMOTE_ID, b"request"), ("eof", REMOTE_ID)])

    def test_eof_sent_once(self) -> None:
        """A second write_eof() sends nothing more."""
        channel, mux, _ = self.open_attached()
        channel.write_eof()
        channel.write_eof()
        self.assertEqual(mux.events, [("eof", REMOTE_ID)])


class ReceiveTests(ChannelTestCase):
    """Bytes from the peer are written to the stream and checked against our window."""

    def test_data_written_to_stream(self) -> None:
        """CHANNEL_DATA reaches the stream unchanged and is counted."""
        channel, _, stream = self.open_attached()
        channel.data_received(b"hello ")
        channel.data_received(b"world")
        self.assertEqual(stream.drain(), b"hello world")
        self.assertEqual(channel.bytes_received, 11)

    def test_beyond_window_raises(self) -> None:
        """Data beyond the remaining receive window raises and is not written."""
        channel, mux = self.make(window=150, max_packet=100)
        stream = self.attach(channel, high_water=50)
        channel.opened(REMOTE_ID, 10_000, 100)
        channel.data_received(b"a" * 100)
        self.assertEqual(mux.adjusts(), [], "the full stream should have held back credit")
        error = self.assertRaises(RemoteProtocolError, channel.data_received, b"b" * 60)
        self.assertEqual(str(error), "peer sent 60 bytes with only 50 left in the window")
        self.assertEqual(stream.drain(), b"a" * 100)

    def test_beyond_max_packet_raises(self) -> None:
        """A packet larger than our maximum raises even with window to spare."""
        channel, _, stream = self.open_attached()
        error = self.assertRaises(RemoteProtocolError, channel.data_received, b"x" * 101)
        self.assertEqual(str(error), "peer sent a 101-byte packet; the maximum is 100")
        self.assertEqual(stream.drain(), b"")
        self.assertEqual(channel.window.available, 1000)


class CreditTests(ChannelTestCase):
    """Window credit goes back only for bytes the stream took, in batches, and not while paused."""

    def test_no_credit_before_half_the_window(self) -> None:
        """Nothing is granted until half the window is used; then all consumed bytes at once."""
        channel, mux, _ = self.open_attached()
        for _ in range(4):
            channel.data_received(b"x" * 100)
        self.assertEqual(mux.adjusts(), [])
        channel.data_received(b"x" * 100)
        self.assertEqual(mux.events, [("adjust", REMOTE_ID, 500)])
        self.assertEqual(channel.window.available, 1000)

    def test_credit_in_batches(self) -> None:
        """After a grant the next one waits for half the window again."""
        channel, mux, _ = self.open_attached()
        for _ in range(9):
            channel.data_received(b"x" * 100)
        self.assertEqual(mux.adjusts(), [500])
        channel.data_received(b"x" * 100)
        self.assertEqual(mux.adjusts(), [500, 500])

    def test_no_credit_while_stream_paused_us(self) -> None:
        """While the stream's buffer is full no credit is sent; once it drains, what is owed is."""
        channel, mux, stream = self.open_attached(high_water=150)
        channel.data_received(b"x" * 100)
        self.assertIs(stream.producer_paused, False)
        channel.data_received(b"x" * 100)
        self.assertIs(stream.producer_paused, True)
        for _ in range(5):
            channel.data_received(b"x" * 100)
        self.assertEqual(mux.adjusts(), [], "credit granted while the stream was full")
        self.assertEqual(channel.window.available, 300)
        self.assertEqual(len(stream.drain()), 700)
        self.assertEqual(mux.events, [("adjust", REMOTE_ID, 700)])
        self.assertEqual(channel.window.available, 1000)

    def test_resume_before_half_window_waits(self) -> None:
        """A drain before half the window is used grants nothing; the batch rule still holds."""
        channel, mux, stream = self.open_attached(high_water=150)
        channel.data_received(b"x" * 100)
        channel.data_received(b"x" * 100)
        stream.drain()
        self.assertEqual(mux.adjusts(), [])
        stream.high_water = 10_000
        for _ in range(3):
            channel.data_received(b"x" * 100)
        self.assertEqual(mux.adjusts(), [500])

    def test_no_credit_for_dropped_data(self) -> None:
        """Bytes dropped after our CLOSE use up the window and earn no credit."""
        channel, mux, stream = self.open_attached()
        stream.reset()
        self.assertEqual(mux.events, [("close", REMOTE_ID)])
        for _ in range(10):
            channel.data_received(b"x" * 100)
        self.assertEqual(mux.adjusts(), [])
        self.assertEqual(channel.window.available, 0)


class PeerEofAndCloseTests(ChannelTestCase):
    """The peer's EOF half-closes the stream; CLOSE goes out once, when both sides are done."""

    def test_peer_eof_unregisters_before_half_close(self) -> None:
        """Peer EOF: the channel stops being the stream's producer, then its write side closes."""
        channel, _, stream = self.open_attached(high_water=50)
        channel.data_received(b"tail" * 20)
        self.assertTrue(stream.producer_paused)
        del stream.calls[:]
        channel.eof_received_from_peer()
        self.assertEqual(stream.calls, ["unregisterProducer", "loseWriteConnection"])
        self.assertIsNone(stream.producer)
        self.assertTrue(stream.write_closing)
        self.assertFalse(stream.write_closed, "half-closed before the buffer drained")
        self.assertEqual(stream.drain(), b"tail" * 20)
        self.assertTrue(stream.write_closed)
        self.assertFalse(stream.closing)

    def test_peer_eof_then_local_eof_sends_one_close(self) -> None:
        """Peer EOF reaches the stream, then local EOF: EOF and CLOSE go out, CLOSE once."""
        channel, mux, stream = self.open_attached()
        channel.eof_received_from_peer()
        self.assertTrue(stream.write_closed)
        self.assertEqual(mux.events, [])
        stream.receive(b"reply")
        stream.receive_eof()
        self.assertEqual(
            mux.events, [("data", REMOTE_ID, b"reply"), ("eof", REMOTE_ID), ("close", REMOTE_ID)]
        )
        self.assertEqual(mux.batches, [[("eof", REMOTE_ID), ("close", REMOTE_ID)]])
        self.assertTrue(stream.closed)
        self.assertNoResult(channel.when_closed())
        channel.close_received_from_peer()
        self.assertEqual(mux.kinds("close"), ["close"])
        self.assertEqual(mux.events[-1], ("release", LOCAL_ID))
        self.assertIsNone(self.successResultOf(channel.when_closed()))

    def test_local_eof_then_peer_eof_closes_after_drain(self) -> None:
        """Local EOF first; CLOSE waits until the peer's EOF has been flushed to the stream."""
        channel, mux, stream = self.open_attached()
        stream.receive_eof()
        channel.data_received(b"answer")
        channel.eof_received_from_peer()
        self.assertEqual(mux.events, [("eof", REMOTE_ID)])
        self.assertFalse(stream.write_closed)
        self.assertEqual(stream.drain(), b"answer")
        self.assertEqual(mux.events, [("eof", REMOTE_ID), ("close", REMOTE_ID)])
        self.assertTrue(stream.closed)

    def test_peer_close_answered_once_and_stream_closed(self) -> None:
        """Peer CLOSE: one CLOSE back, the stream closes after flushing, the channel is released."""
        channel, mux, stream = self.open_attached()
        channel.data_received(b"last words")
        channel.close_received_from_peer()
        self.assertEqual(mux.events, [("close", REMOTE_ID), ("release", LOCAL_ID)])
        self.assertIsNone(stream.producer)
        self.assertTrue(stream.closing)
        self.assertEqual(stream.drain(), b"last words")
        self.assertTrue(stream.closed)
        self.assertEqual(mux.events, [("close", REMOTE_ID), ("release", LOCAL_ID)])
        self.assertIsNone(self.successResultOf(channel.when_closed()))

    def test_release_waits_for_both_closes(self) -> None:
        """After our CLOSE the channel is kept until the peer's CLOSE, then released once."""
        channel, mux, stream = self.open_attached()
        stream.reset()
        self.assertEqual(mux.events, [("close", REMOTE_ID)])
        closed = channel.when_closed()
        self.assertNoResult(closed)
        channel.close_received_from_peer()
        self.assertEqual(mux.events, [("close", REMOTE_ID), ("release", LOCAL_ID)])
        self.assertIsNone(self.successResultOf(closed))


class LocalLossTests(ChannelTestCase):
    """The local socket going away."""

    def test_lost_before_open_sends_only_close(self) -> None:
        """Lost before the channel opened: on open, CLOSE (perhaps after EOF) and nothing else."""
        channel, mux = self.make()
        stream = self.attach(channel)
        channel.write(b"never sent")
        stream.reset()
        self.assertEqual(mux.events, [])
        channel.opened(REMOTE_ID, 10_000, 100)
        self.assertIn(mux.kinds(), (["close"], ["eof", "close"]))
        self.assertEqual(mux.events[-1], ("close", REMOTE_ID))
        self.assertEqual(mux.data(), [])

    def test_window_adjust_after_close_sends_nothing(self) -> None:
        """Data held when the stream was lost before open is not sent after CLOSE on an adjust."""
        channel, mux = self.make()
        stream = self.attach(channel)
        channel.write(b"never sent")
        stream.reset()
        channel.opened(REMOTE_ID, 10_000, 100)
        sent = list(mux.events)
        self.assertEqual(sent[-1], ("close", REMOTE_ID))
        # The peer may well grant window before it has seen our CLOSE.
        channel.window_adjusted(1000)
        self.assertEqual(mux.events, sent)

    def test_lost_while_open_sends_close(self) -> None:
        """Lost while open: CLOSE at once, without waiting for the peer."""
        channel, mux, stream = self.open_attached()
        stream.reset()
        self.assertEqual(mux.events, [("close", REMOTE_ID)])
        self.assertEqual(mux.batches, [[("close", REMOTE_ID)]])
        self.assertTrue(channel.close_sent)


class FailureTests(ChannelTestCase):
    """The channel never opening, or the SSH connection ending."""

    def test_open_failed_closes_stream_and_fails_when_opened(self) -> None:
        """open_failed closes the attached stream and fails when_opened() with the reason."""
        channel, mux = self.make()
        stream = self.attach(channel)
        opened = channel.when_opened()
        channel.open_failed(Failure(ChannelOpenFailed(2, "Connection refused")))
        error = self.failureResultOf(opened, ChannelOpenFailed).value
        self.assertEqual((error.code, error.description), (2, "Connection refused"))
        self.assertTrue(stream.closed)
        self.assertIsNone(stream.producer)
        self.assertEqual(mux.events, [("release", LOCAL_ID)])
        self.failureResultOf(channel.when_opened(), ChannelOpenFailed)

    def test_connection_lost_fails_pending_open(self) -> None:
        """connection_lost before the answer fails when_opened() and closes the stream."""
        channel, mux = self.make()
        stream = self.attach(channel)
        opened = channel.when_opened()
        channel.connection_lost(Failure(ConnectionClosed("the SSH connection closed")))
        error = self.failureResultOf(opened, ConnectionClosed).value
        self.assertEqual(str(error), "the SSH connection closed")
        self.assertTrue(stream.closed)
        self.assertEqual(mux.events, [("release", LOCAL_ID)])
        self.assertIsNone(self.successResultOf(channel.when_closed()))

    def test_connection_lost_when_open_sends_nothing(self) -> None:
        """connection_lost on an open channel closes the stream and sends nothing."""
        channel, mux, stream = self.open_attached()
        channel.data_received(b"unflushed")
        channel.connection_lost(Failure(ConnectionClosed("gone")))
        self.assertEqual(mux.events, [("release", LOCAL_ID)])
        self.assertEqual(stream.drain(), b"unflushed")
        self.assertTrue(stream.closed)
        self.assertIs(self.successResultOf(channel.when_opened()), channel)


class DroppedDataTests(ChannelTestCase):
    """Data the peer sends after EOF or after our CLOSE is dropped, but still accounted."""

    def test_data_after_peer_eof_dropped_but_checked(self) -> None:
        """After the peer's EOF, data is not written, yet still counts against the window."""
        channel, mux = self.make(window=150, max_packet=100)
        stream = self.attach(channel)
        channel.opened(REMOTE_ID, 10_000, 100)
        channel.eof_received_from_peer()
        channel.data_received(b"late" * 25)
        self.assertEqual(stream.drain(), b"")
        self.assertEqual(channel.window.available, 50)
        self.assertRaises(RemoteProtocolError, channel.data_received, b"x" * 51)
        self.assertEqual(mux.adjusts(), [])

    def test_data_after_close_sent_dropped_but_checked(self) -> None:
        """After we sent CLOSE, data is not written, yet still counts against the window."""
        channel, mux = self.make(window=150, max_packet=100)
        stream = self.attach(channel)
        channel.opened(REMOTE_ID, 10_000, 100)
        channel.eof_received_from_peer()
        stream.receive_eof()
        self.assertEqual(mux.kinds(), ["eof", "close"])
        channel.data_received(b"y" * 100)
        self.assertEqual(stream.written, b"")
        self.assertEqual(channel.bytes_received, 0)
        self.assertRaises(RemoteProtocolError, channel.data_received, b"y" * 51)


class StateTests(ChannelTestCase):
    """The channel's states, as L{twisted_rfwd.protocol.channel_state} names them."""

    def states(self, channel: Channel) -> tuple[ChannelState, SendState, ReceiveState]:
        return channel.state, channel.send_state, channel.receive_state

    def test_states_through_a_half_close(self) -> None:
        """Open; EOF pending behind held data, then sent; the peer's EOF; CLOSE both ways."""
        channel, mux = self.make()
        self.assertEqual(
            self.states(channel), (ChannelState.OPENING, SendState.OPEN, ReceiveState.OPEN)
        )
        self.attach(channel)
        channel.opened(REMOTE_ID, 5, 100)
        channel.write(b"0123456789")
        channel.write_eof()
        self.assertEqual(channel.send_state, SendState.EOF_PENDING)
        channel.window_adjusted(5)
        self.assertEqual(channel.send_state, SendState.EOF_SENT)
        self.assertTrue(channel.eof_sent)
        channel.eof_received_from_peer()
        self.assertEqual(
            self.states(channel),
            (ChannelState.CLOSE_SENT, SendState.EOF_SENT, ReceiveState.FINISHED),
        )
        self.assertTrue(channel.eof_received)
        channel.close_received_from_peer()
        self.assertEqual(channel.state, ChannelState.CLOSED)
        self.assertEqual(mux.kinds("eof", "close", "release"), ["eof", "close", "release"])

    def test_second_close_from_peer_is_its_error(self) -> None:
        """A CLOSE from the peer on a channel already closed both ways raises, sending nothing."""
        channel, mux, _ = self.open_attached()
        channel.close_received_from_peer()
        sent = list(mux.events)
        error = self.assertRaises(RemoteProtocolError, channel.close_received_from_peer)
        self.assertEqual(
            str(error), "CHANNEL_CLOSE from the peer is not allowed when the channel is closed"
        )
        self.assertEqual(mux.events, sent)

    def test_connection_lost_before_open_fails_the_channel(self) -> None:
        """The connection ending before the confirmation: FAILED, never open, nothing sent."""
        channel, mux = self.make()
        self.attach(channel)
        channel.connection_lost(Failure(ConnectionClosed("gone")))
        self.assertEqual(channel.state, ChannelState.FAILED)
        self.assertFalse(channel.is_open)
        self.assertEqual(mux.events, [("release", LOCAL_ID)])

    def test_refused_confirmation_discards_pending_eof(self) -> None:
        """close_unused drops waiting data and a pending EOF: only CLOSE goes out."""
        channel, mux = self.make()
        stream = self.attach(channel)
        channel.write(b"waiting")
        channel.write_eof()
        self.assertEqual(channel.send_state, SendState.EOF_PENDING)
        channel.close_unused(REMOTE_ID, Failure(ConnectionClosed("refused")))
        self.assertEqual(channel.send_state, SendState.DISCARDED)
        self.assertEqual(mux.events, [("close", REMOTE_ID)])
        self.assertFalse(channel.eof_sent)
        self.assertTrue(stream.closed)
        self.failureResultOf(channel.when_opened(), ConnectionClosed)
