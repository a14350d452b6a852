"""
Tests for L{twisted_rfwd.ssh.mux.ChannelMux}, driven message by message through C{packetReceived}.

The SSH transport is a recorder (L{FakeSSHTransport}); payloads are built with
L{twisted_rfwd.protocol.wire}.  End-to-end behaviour over real SSH is in
L{tests.memory.test_memory_forwarding}.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IConsumer
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from tests.support.streams import FakeStream
from twisted_rfwd.errors import ChannelOpenFailed, ConnectionClosed
from twisted_rfwd.protocol import wire
from twisted_rfwd.ssh.channel import Channel
from twisted_rfwd.ssh.interfaces import ISSHTransport
from twisted_rfwd.ssh.mux import DEFAULT_MAX_PACKET, DEFAULT_WINDOW, ChannelMux, GlobalRequestFailed

DISCONNECT_PROTOCOL_ERROR = 2
MSG_UNKNOWN = 200


class FakeTCP:
    """The TCP connection under the SSH transport: only its peer address is asked for."""

    def getPeer(self) -> IPv4Address:
        return IPv4Address("TCP", "127.0.0.1", 2222)


@implementer(ISSHTransport)
class FakeSSHTransport:
    """Records the packets, disconnects and UNIMPLEMENTED replies the multiplexer sends."""

    def __init__(self) -> None:
        self.transport: Any = FakeTCP()
        self.otherVersionString = b""
        self.packets_received = 0
        self.packets: list[tuple[int, bytes]] = []
        self.disconnects: list[tuple[int, bytes]] = []
        self.unimplemented = 0

    def sendPacket(self, messageType: int, payload: bytes) -> None:
        self.packets.append((messageType, payload))

    def send_channel_data(self, recipient: int, data: bytes | memoryview, max_packet: int) -> None:
        """Recorded as one C{CHANNEL_DATA} packet per C{max_packet} bytes, as sent."""
        for offset in range(0, len(data), max_packet):
            chunk = data[offset : offset + max_packet]
            self.sendPacket(wire.MSG_CHANNEL_DATA, wire.pack_channel_data(recipient, chunk))

    def sendDisconnect(self, reason: int, desc: bytes) -> None:
        self.disconnects.append((reason, desc))

    def sendUnimplemented(self) -> None:
        self.unimplemented += 1

    def batch(self) -> AbstractContextManager[None]:
        return nullcontext()

    def types(self) -> list[int]:
        return [t for t, _ in self.packets]


class DeferringMux(ChannelMux):
    """Answers global requests and channel opens only when the test fires their Deferreds."""

    def __init__(self, **options: Any) -> None:
        super().__init__(Clock(), **options)
        self.requests: list[tuple[bytes, bytes, Deferred[Any]]] = []
        self.opens: list[tuple[bytes, bytes, Channel, Deferred[Any]]] = []
        self.cancelled: list[bytes] = []

    def global_request_received(self, name: bytes, data: bytes) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.requests.append((name, data, d))
        return d

    def channel_open_requested(
        self, channel_type: bytes, data: bytes, channel: Channel
    ) -> Deferred[Any]:
        d: Deferred[Any] = Deferred(lambda _: self.cancelled.append(channel_type))
        self.opens.append((channel_type, data, channel, d))
        return d


class ParsingOpenMux(ChannelMux):
    """Parses the type-specific data of a C{forwarded-tcpip} open, as the client does."""

    def channel_open_requested(
        self, channel_type: bytes, data: bytes, channel: Channel
    ) -> Deferred[Any] | None:
        wire.ForwardedTcpip.parse(data)
        return None


class MuxTestCase(SynchronousTestCase):
    """Connects a multiplexer to a recording transport, and helps with open channels."""

    def connect(self, mux: ChannelMux) -> FakeSSHTransport:
        transport = FakeSSHTransport()
        mux.transport = transport
        return transport

    def base_mux(self, **options: Any) -> tuple[ChannelMux, FakeSSHTransport]:
        mux = ChannelMux(Clock(), **options)
        return mux, self.connect(mux)

    def deferring_mux(self, **options: Any) -> tuple[DeferringMux, FakeSSHTransport]:
        mux = DeferringMux(**options)
        return mux, self.connect(mux)

    def global_request(self, mux: ChannelMux, name: bytes, want_reply: bool = True) -> None:
        mux.packetReceived(
            wire.MSG_GLOBAL_REQUEST, wire.GlobalRequest(name, want_reply, b"body").pack()
        )

    def open_ours(
        self,
        mux: ChannelMux,
        remote_id: int = 300,
        window: int = 10_000,
        max_packet: int = 1000,
    ) -> tuple[Channel, FakeStream]:
        """A channel we opened, with a stream attached, confirmed by the peer."""
        channel = mux.open_channel(b"forwarded-tcpip", b"")
        stream = FakeStream().connect(Protocol())
        channel.attach(stream)
        mux.packetReceived(
            wire.MSG_CHANNEL_OPEN_CONFIRMATION,
            wire.ChannelOpenConfirmation(channel.local_id, remote_id, window, max_packet).pack(),
        )
        return channel, stream

    def assertDisconnected(self, transport: FakeSSHTransport, text: bytes) -> None:
        """Exactly one PROTOCOL_ERROR disconnect was sent, with exactly C{text}."""
        self.assertEqual(transport.disconnects, [(DISCONNECT_PROTOCOL_ERROR, text)])


class GlobalRequestTests(MuxTestCase):
    """Global requests from the peer, and replies to ours."""

    def test_replies_keep_request_order(self) -> None:
        """Replies go out in request order even when a later request is answered first."""
        mux, transport = self.deferring_mux()
        for name in (b"first", b"second", b"third"):
            self.global_request(mux, name)
        self.assertEqual([r[0] for r in mux.requests], [b"first", b"second", b"third"])
        first, second, third = (r[2] for r in mux.requests)
        third.callback(b"3")
        self.assertEqual(transport.packets, [])
        first.callback(None)
        self.assertEqual(transport.packets, [(wire.MSG_REQUEST_FAILURE, b"")])
        second.callback(b"\x00\x00\x1f\x90")
        self.assertEqual(
            transport.packets,
            [
                (wire.MSG_REQUEST_FAILURE, b""),
                (wire.MSG_REQUEST_SUCCESS, b"\x00\x00\x1f\x90"),
                (wire.MSG_REQUEST_SUCCESS, b"3"),
            ],
        )

    def test_unknown_request_fails(self) -> None:
        """By default a global request is answered with REQUEST_FAILURE."""
        mux, transport = self.base_mux()
        self.global_request(mux, b"no-such-request@example.com")
        self.assertEqual(transport.packets, [(wire.MSG_REQUEST_FAILURE, b"")])
        self.assertEqual(transport.disconnects, [])

    def test_no_reply_when_not_wanted(self) -> None:
        """want_reply=0 gets no reply, and does not hold back the reply to a later request."""
        mux, transport = self.deferring_mux()
        self.global_request(mux, b"hostkeys-00@openssh.com", want_reply=False)
        self.global_request(mux, b"keepalive@openssh.com")
        notice, request = (r[2] for r in mux.requests)
        request.callback(b"")
        self.assertEqual(transport.packets, [(wire.MSG_REQUEST_SUCCESS, b"")])
        notice.callback(b"")
        self.assertEqual(transport.packets, [(wire.MSG_REQUEST_SUCCESS, b"")])

    def test_unknown_notice_not_answered(self) -> None:
        """An unknown request with want_reply=0 is not answered at all."""
        mux, transport = self.base_mux()
        self.global_request(mux, b"no-such-request@example.com", want_reply=False)
        self.assertEqual(transport.packets, [])

    def test_success_without_request_disconnects(self) -> None:
        """REQUEST_SUCCESS when we asked nothing is a protocol error that says so."""
        mux, transport = self.base_mux()
        mux.packetReceived(wire.MSG_REQUEST_SUCCESS, b"")
        self.assertDisconnected(transport, b"REQUEST_SUCCESS without a pending global request")

    def test_failure_without_request_disconnects(self) -> None:
        """REQUEST_FAILURE when we asked nothing is a protocol error that says so."""
        mux, transport = self.base_mux()
        mux.packetReceived(wire.MSG_REQUEST_FAILURE, b"")
        self.assertDisconnected(transport, b"REQUEST_FAILURE without a pending global request")

    def test_our_requests_answered_in_order(self) -> None:
        """Replies from the peer settle our requests first to last, failures as such."""
        mux, transport = self.base_mux()
        first = mux.send_global_request(b"tcpip-forward", b"a")
        second = mux.send_global_request(b"cancel-tcpip-forward", b"b")
        self.assertEqual(
            transport.packets,
            [
                (wire.MSG_GLOBAL_REQUEST, wire.GlobalRequest(b"tcpip-forward", True, b"a").pack()),
                (
                    wire.MSG_GLOBAL_REQUEST,
                    wire.GlobalRequest(b"cancel-tcpip-forward", True, b"b").pack(),
                ),
            ],
        )
        mux.packetReceived(wire.MSG_REQUEST_SUCCESS, b"\x00\x00\x1f\x90")
        self.assertEqual(self.successResultOf(first), b"\x00\x00\x1f\x90")
        self.assertNoResult(second)
        mux.packetReceived(wire.MSG_REQUEST_FAILURE, b"")
        error = self.failureResultOf(second, GlobalRequestFailed).value
        self.assertEqual(error.name, b"cancel-tcpip-forward")
        self.assertEqual(transport.disconnects, [])


class ChannelMessageTests(MuxTestCase):
    """Per-channel messages must name a channel that is open, and keep to its window."""

    def test_data_for_unknown_channel_disconnects(self) -> None:
        """CHANNEL_DATA for a channel number never used ends the connection, naming it."""
        mux, transport = self.base_mux()
        mux.packetReceived(wire.MSG_CHANNEL_DATA, wire.pack_channel_data(5, b"x"))
        self.assertDisconnected(transport, b"CHANNEL_DATA for channel 5, which is not open")

    def test_data_for_unconfirmed_channel_disconnects(self) -> None:
        """CHANNEL_DATA for our channel that the peer has not confirmed ends the connection."""
        mux, transport = self.base_mux()
        channel = mux.open_channel(b"forwarded-tcpip", b"")
        mux.packetReceived(wire.MSG_CHANNEL_DATA, wire.pack_channel_data(channel.local_id, b"x"))
        self.assertDisconnected(transport, b"CHANNEL_DATA for channel 0, which is not open")

    def test_data_for_channel_we_have_not_confirmed_disconnects(self) -> None:
        """CHANNEL_DATA for the peer's channel that we have not confirmed ends the connection."""
        mux, transport = self.deferring_mux()
        mux.packetReceived(
            wire.MSG_CHANNEL_OPEN, wire.ChannelOpen(b"session", 9, 1000, 100, b"").pack()
        )
        mux.packetReceived(wire.MSG_CHANNEL_DATA, wire.pack_channel_data(0, b"x"))
        self.assertDisconnected(transport, b"CHANNEL_DATA for channel 0, which is not open")
        self.assertEqual(transport.packets, [])

    def test_other_messages_for_unknown_channel_disconnect(self) -> None:
        """WINDOW_ADJUST, EOF, CLOSE and CHANNEL_REQUEST for an unknown channel disconnect."""
        cases = [
            (wire.MSG_CHANNEL_WINDOW_ADJUST, wire.pack_window_adjust(5, 100), "WINDOW_ADJUST"),
            (wire.MSG_CHANNEL_EOF, wire.pack_uint32(5), "CHANNEL_EOF"),
            (wire.MSG_CHANNEL_CLOSE, wire.pack_uint32(5), "CHANNEL_CLOSE"),
            (
                wire.MSG_CHANNEL_REQUEST,
                wire.pack_uint32(5) + wire.pack_string(b"exit-status") + b"\x00",
                "CHANNEL_REQUEST",
            ),
        ]
        for message, payload, what in cases:
            mux, transport = self.base_mux()
            mux.packetReceived(message, payload)
            self.assertDisconnected(transport, f"{what} for channel 5, which is not open".encode())

    def test_data_reaches_the_stream(self) -> None:
        """CHANNEL_DATA for an open channel is written to its stream."""
        mux, transport = self.base_mux()
        channel, stream = self.open_ours(mux)
        mux.packetReceived(
            wire.MSG_CHANNEL_DATA, wire.pack_channel_data(channel.local_id, b"payload")
        )
        self.assertEqual(stream.drain(), b"payload")
        self.assertEqual(transport.disconnects, [])

    def test_data_of_one_read_is_one_write(self) -> None:
        """
        CHANNEL_DATA from the packet layer waits for the end of the read: what one read
        brought a channel reaches its stream in one write.
        """
        mux, _ = self.base_mux()
        channel, stream = self.open_ours(mux)
        writes = self.record_writes(stream)
        for part in (b"one ", b"two"):
            body = wire.pack_channel_data(channel.local_id, part)
            mux.channel_data(body, 0, len(body))
        self.assertEqual(writes, [])
        mux.read_done()
        self.assertEqual(writes, [b"one two"])

    def test_data_of_a_read_goes_before_a_later_message_acts(self) -> None:
        """An EOF in the same read as data half-closes the stream only after the data."""
        mux, _ = self.base_mux()
        channel, stream = self.open_ours(mux)
        writes = self.record_writes(stream)
        body = wire.pack_channel_data(channel.local_id, b"last words")
        mux.channel_data(body, 0, len(body))
        mux.packetReceived(wire.MSG_CHANNEL_EOF, wire.pack_uint32(channel.local_id))
        self.assertEqual(writes, [b"last words"])
        self.assertTrue(stream.write_closing)
        mux.read_done()
        self.assertEqual(writes, [b"last words"])

    def test_window_checked_packet_by_packet_within_a_read(self) -> None:
        """Data beyond the window is refused when its packet arrives, not at the read's end."""
        mux, transport = self.base_mux()
        channel, stream = self.open_ours(mux)
        writes = self.record_writes(stream)
        body = wire.pack_channel_data(channel.local_id, b"a" * 1000)
        for _ in range(mux.window_size // 1000 + 1):
            mux.channel_data(body, 0, len(body))
        self.assertEqual(len(transport.disconnects), 1)
        self.assertIn(b"window", transport.disconnects[0][1])
        self.assertEqual(writes, [], "written before the read was done")

    def record_writes(self, stream: FakeStream) -> list[bytes]:
        """The stream's writes, each as one item."""
        writes: list[bytes] = []
        original = stream.write

        def write(data: bytes) -> None:
            writes.append(bytes(data))
            original(data)

        stream.write = write  # type: ignore[method-assign]
        return writes

    def test_data_sent_in_packets_of_at_most_max_packet(self) -> None:
        """Data to send is cut into CHANNEL_DATA packets no larger than the peer's maximum."""
        mux, transport = self.base_mux()
        mux.send_data(9, memoryview(b"abcdefghij"), 4)
        self.assertEqual(
            transport.packets,
            [
                (wire.MSG_CHANNEL_DATA, wire.pack_channel_data(9, b"abcd")),
                (wire.MSG_CHANNEL_DATA, wire.pack_channel_data(9, b"efgh")),
                (wire.MSG_CHANNEL_DATA, wire.pack_channel_data(9, b"ij")),
            ],
        )

    def test_data_beyond_window_disconnects(self) -> None:
        """Data beyond the window we granted ends the connection with the numbers."""
        mux, transport = self.base_mux(window_size=100, max_packet=100)
        _, stream = self.open_ours(mux)
        stream.high_water = 10  # the stream is full: no credit goes back
        mux.packetReceived(wire.MSG_CHANNEL_DATA, wire.pack_channel_data(0, b"a" * 60))
        self.assertEqual(transport.disconnects, [])
        mux.packetReceived(wire.MSG_CHANNEL_DATA, wire.pack_channel_data(0, b"b" * 60))
        self.assertDisconnected(transport, b"peer sent 60 bytes with only 40 left in the window")
        self.assertEqual(stream.drain(), b"a" * 60)

    def test_data_beyond_max_packet_disconnects(self) -> None:
        """A data packet larger than the maximum we announced ends the connection."""
        mux, transport = self.base_mux(window_size=1000, max_packet=100)
        self.open_ours(mux)
        mux.packetReceived(wire.MSG_CHANNEL_DATA, wire.pack_channel_data(0, b"a" * 101))
        self.assertDisconnected(transport, b"peer sent a 101-byte packet; the maximum is 100")

    def test_malformed_payloads_disconnect(self) -> None:
        """Truncated payloads end the connection with a 'malformed ...' reason; nothing raises."""
        cases = [
            (wire.MSG_CHANNEL_DATA, b"\x00\x00", b"malformed SSH_MSG_CHANNEL_DATA: shorter than"),
            (wire.MSG_CHANNEL_EOF, b"\x00", b"malformed SSH_MSG_CHANNEL_EOF: truncated at byte 0"),
            (
                wire.MSG_GLOBAL_REQUEST,
                wire.pack_uint32(20) + b"tcpip",
                b"malformed SSH_MSG_GLOBAL_REQUEST: truncated at byte 4",
            ),
            (
                wire.MSG_CHANNEL_OPEN,
                wire.pack_string(b"session") + b"\x00\x00",
                b"malformed SSH_MSG_CHANNEL_OPEN: truncated at byte 11",
            ),
            (
                wire.MSG_CHANNEL_WINDOW_ADJUST,
                wire.pack_uint32(0),
                b"malformed SSH_MSG_CHANNEL_WINDOW_ADJUST: truncated at byte 4",
            ),
        ]
        for message, payload, text in cases:
            mux, transport = self.base_mux()
            mux.packetReceived(message, payload)  # must not raise
            self.assertEqual(len(transport.disconnects), 1, text)
            code, description = transport.disconnects[0]
            self.assertEqual(code, DISCONNECT_PROTOCOL_ERROR)
            self.assertTrue(description.startswith(text), description)
            self.assertEqual(transport.packets, [])
            self.assertEqual(mux.channels, {})

    def test_unknown_message_is_unimplemented(self) -> None:
        """A message number the service does not know gets UNIMPLEMENTED, nothing else."""
        mux, transport = self.base_mux()
        mux.packetReceived(MSG_UNKNOWN, b"whatever")
        self.assertEqual(transport.unimplemented, 1)
        self.assertEqual((transport.packets, transport.disconnects), ([], []))

    def test_second_close_disconnects(self) -> None:
        """CLOSE is answered once; a second CLOSE for the same channel ends the connection."""
        mux, transport = self.base_mux()
        channel, _ = self.open_ours(mux, remote_id=300)
        mux.packetReceived(wire.MSG_CHANNEL_CLOSE, wire.pack_uint32(channel.local_id))
        self.assertEqual(transport.packets[-1], (wire.MSG_CHANNEL_CLOSE, wire.pack_uint32(300)))
        self.assertEqual(transport.disconnects, [])
        self.assertEqual(mux.channels, {})
        mux.packetReceived(wire.MSG_CHANNEL_CLOSE, wire.pack_uint32(channel.local_id))
        self.assertEqual(len(transport.disconnects), 1)
        code, text = transport.disconnects[0]
        self.assertEqual(code, DISCONNECT_PROTOCOL_ERROR)
        self.assertIn(b"CHANNEL_CLOSE for channel 0", text)
        self.assertEqual(transport.types().count(wire.MSG_CHANNEL_CLOSE), 1)

    def test_extended_data_earns_credit(self) -> None:
        """Extended data, accounted and discarded, is credited back once half the window is used."""
        mux, transport = self.base_mux(window_size=1000, max_packet=100)
        channel, _ = self.open_ours(mux, remote_id=300)
        extended = wire.pack_uint32(channel.local_id) + wire.pack_uint32(1)
        for _ in range(5):
            mux.packetReceived(
                wire.MSG_CHANNEL_EXTENDED_DATA, extended + wire.pack_string(b"e" * 100)
            )
        self.assertEqual(transport.disconnects, [])
        self.assertIn(
            (wire.MSG_CHANNEL_WINDOW_ADJUST, wire.pack_window_adjust(300, 500)), transport.packets
        )


class IncomingOpenTests(MuxTestCase):
    """Channels the peer opens: refused by default, confirmed only when the subclass says so."""

    def open_request(self, sender: int = 9, window: int = 150, max_packet: int = 70) -> bytes:
        return wire.ChannelOpen(b"forwarded-tcpip", sender, window, max_packet, b"xyz").pack()

    def test_refused_by_default(self) -> None:
        """The base service refuses every channel type with UNKNOWN_CHANNEL_TYPE."""
        mux, transport = self.base_mux()
        mux.packetReceived(wire.MSG_CHANNEL_OPEN, self.open_request(sender=9))
        self.assertEqual(
            transport.packets,
            [
                (
                    wire.MSG_CHANNEL_OPEN_FAILURE,
                    wire.ChannelOpenFailure(
                        9, wire.OPEN_UNKNOWN_CHANNEL_TYPE, "unknown channel type"
                    ).pack(),
                )
            ],
        )
        self.assertEqual(mux.channels, {})

    def test_confirmed_only_when_deferred_fires(self) -> None:
        """CONFIRMATION waits for the subclass; it has our id, a 2 MiB window, 32 KiB packets."""
        mux, transport = self.deferring_mux()
        mux.packetReceived(wire.MSG_CHANNEL_OPEN, self.open_request(sender=9))
        [(channel_type, data, channel, d)] = mux.opens
        self.assertEqual((channel_type, data), (b"forwarded-tcpip", b"xyz"))
        self.assertEqual(transport.packets, [])
        self.assertFalse(channel.is_open)
        d.callback(None)
        [(message, payload)] = transport.packets
        self.assertEqual(message, wire.MSG_CHANNEL_OPEN_CONFIRMATION)
        confirmation = wire.ChannelOpenConfirmation.parse(payload)
        self.assertEqual(
            confirmation,
            wire.ChannelOpenConfirmation(9, channel.local_id, 2 * 1024 * 1024, 32 * 1024),
        )
        self.assertEqual((DEFAULT_WINDOW, DEFAULT_MAX_PACKET), (2 * 1024 * 1024, 32 * 1024))
        self.assertTrue(channel.is_open)
        self.assertEqual(channel.remote_id, 9)
        self.assertIs(mux.channels[channel.local_id], channel)

    def test_channel_uses_peers_window_and_packet_size(self) -> None:
        """The confirmed channel sends within the window and packet size the peer announced."""
        mux, transport = self.deferring_mux()
        mux.packetReceived(wire.MSG_CHANNEL_OPEN, self.open_request(window=150, max_packet=70))
        [(_, _, channel, d)] = mux.opens
        stream = FakeStream().connect(Protocol())
        channel.attach(stream)
        d.callback(None)
        del transport.packets[:]
        channel.write(b"z" * 200)
        self.assertEqual(
            transport.packets,
            [
                (wire.MSG_CHANNEL_DATA, wire.pack_channel_data(9, b"z" * 70)),
                (wire.MSG_CHANNEL_DATA, wire.pack_channel_data(9, b"z" * 70)),
                (wire.MSG_CHANNEL_DATA, wire.pack_channel_data(9, b"z" * 10)),
            ],
        )
        self.assertTrue(stream.reading_paused)

    def test_refused_with_channel_open_failed(self) -> None:
        """ChannelOpenFailed(code, text) from the subclass becomes OPEN_FAILURE with both."""
        mux, transport = self.deferring_mux()
        mux.packetReceived(wire.MSG_CHANNEL_OPEN, self.open_request(sender=9))
        [(_, _, channel, d)] = mux.opens
        d.errback(ChannelOpenFailed(wire.OPEN_CONNECT_FAILED, "Connection refused"))
        self.assertEqual(
            transport.packets,
            [
                (
                    wire.MSG_CHANNEL_OPEN_FAILURE,
                    wire.ChannelOpenFailure(
                        9, wire.OPEN_CONNECT_FAILED, "Connection refused"
                    ).pack(),
                )
            ],
        )
        self.assertEqual(mux.channels, {})
        self.failureResultOf(channel.when_opened(), ChannelOpenFailed)

    def test_unexpected_error_is_internal_error(self) -> None:
        """Any other failure is OPEN_FAILURE CONNECT_FAILED "internal error", and is logged."""
        mux, transport = self.deferring_mux()
        mux.packetReceived(wire.MSG_CHANNEL_OPEN, self.open_request(sender=9))
        [(_, _, _, d)] = mux.opens
        d.errback(ZeroDivisionError("oops"))
        self.assertEqual(
            transport.packets,
            [
                (
                    wire.MSG_CHANNEL_OPEN_FAILURE,
                    wire.ChannelOpenFailure(9, wire.OPEN_CONNECT_FAILED, "internal error").pack(),
                )
            ],
        )
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertEqual(mux.channels, {})

    def test_malformed_open_data_is_a_protocol_error(self) -> None:
        """Malformed type-specific open data is the peer's protocol error, as for global ones."""
        mux = ParsingOpenMux(Clock())
        transport = self.connect(mux)
        truncated = wire.ChannelOpen(b"forwarded-tcpip", 9, 1000, 100, b"\x00\x00\x00\x09loc")
        mux.packetReceived(wire.MSG_CHANNEL_OPEN, truncated.pack())
        logged = self.flushLoggedErrors()
        self.assertEqual(
            transport.disconnects,
            [
                (
                    DISCONNECT_PROTOCOL_ERROR,
                    b"malformed forwarded-tcpip channel open: truncated at byte 4",
                )
            ],
        )
        self.assertEqual(logged, [], "a peer's malformed packet is not our bug")

    def test_confirmation_from_peer_for_its_own_open_disconnects(self) -> None:
        """OPEN_CONFIRMATION for a channel the peer itself asked for is a protocol error."""
        mux, transport = self.deferring_mux()
        mux.packetReceived(wire.MSG_CHANNEL_OPEN, self.open_request(sender=9))
        [(_, _, channel, _)] = mux.opens
        mux.packetReceived(
            wire.MSG_CHANNEL_OPEN_CONFIRMATION,
            wire.ChannelOpenConfirmation(channel.local_id, 9, 1000, 100).pack(),
        )
        self.assertFalse(channel.is_open)
        self.assertDisconnected(
            transport, b"open confirmation for channel 0, which was not being opened"
        )


class LocalIdTests(MuxTestCase):
    """Local channel numbers."""

    def test_ids_not_reused_after_release(self) -> None:
        """Ids count up; a released id is not handed out again straight away."""
        mux, _ = self.base_mux()
        ids = [mux.open_channel(b"forwarded-tcpip", b"").local_id for _ in range(3)]
        self.assertEqual(ids, [0, 1, 2])
        mux.packetReceived(
            wire.MSG_CHANNEL_OPEN_FAILURE,
            wire.ChannelOpenFailure(1, wire.OPEN_CONNECT_FAILED, "no").pack(),
        )
        self.assertEqual(sorted(mux.channels), [0, 2])
        self.assertEqual(mux.open_channel(b"forwarded-tcpip", b"").local_id, 3)

    def test_ids_skip_open_channels_after_wrapping(self) -> None:
        """When the counter wraps, ids of channels still open are skipped; released ones reused."""
        mux, _ = self.base_mux()
        for _ in range(4):
            mux.open_channel(b"forwarded-tcpip", b"")
        mux.packetReceived(
            wire.MSG_CHANNEL_OPEN_FAILURE,
            wire.ChannelOpenFailure(1, wire.OPEN_CONNECT_FAILED, "no").pack(),
        )
        mux._next_local_id = 0xFFFFFFFF  # as after 2**32 - 1 channels
        ids = [mux.open_channel(b"forwarded-tcpip", b"").local_id for _ in range(3)]
        self.assertEqual(ids, [0xFFFFFFFF, 1, 4])


class ServiceStoppedTests(MuxTestCase):
    """The SSH transport going away fails everything still waiting on the peer."""

    def test_pending_open_cancelled(self) -> None:
        """A channel open the subclass is still deciding is cancelled; nothing is sent."""
        mux, transport = self.deferring_mux()
        mux.packetReceived(
            wire.MSG_CHANNEL_OPEN, wire.ChannelOpen(b"forwarded-tcpip", 9, 1000, 100, b"").pack()
        )
        [(_, _, channel, _)] = mux.opens
        mux.serviceStopped()
        self.assertEqual(mux.cancelled, [b"forwarded-tcpip"])
        self.failureResultOf(channel.when_opened(), CancelledError)
        self.assertEqual(transport.packets, [])
        self.assertEqual(mux.channels, {})

    def test_our_global_requests_fail(self) -> None:
        """Our unanswered global requests fail with ConnectionClosed, and so do later ones."""
        mux, transport = self.base_mux()
        first = mux.send_global_request(b"tcpip-forward", b"")
        second = mux.send_global_request(b"tcpip-forward", b"")
        mux.serviceStopped()
        for d in (first, second):
            error = self.failureResultOf(d, ConnectionClosed).value
            self.assertEqual(str(error), "the SSH connection closed")
        sent = len(transport.packets)
        self.failureResultOf(mux.send_global_request(b"tcpip-forward", b""), ConnectionClosed)
        self.assertEqual(len(transport.packets), sent)

    def test_channels_lose_their_connection(self) -> None:
        """Open channels close their streams; unconfirmed ones fail when_opened()."""
        mux, transport = self.base_mux()
        channel, stream = self.open_ours(mux)
        pending = mux.open_channel(b"forwarded-tcpip", b"")
        sent = len(transport.packets)
        mux.serviceStopped()
        self.assertTrue(stream.closed)
        self.assertIsNone(self.successResultOf(channel.when_closed()))
        self.failureResultOf(pending.when_opened(), ConnectionClosed)
        self.assertIsNone(self.successResultOf(pending.when_closed()))
        self.assertEqual(mux.channels, {})
        self.assertEqual(len(transport.packets), sent)

    def test_late_reply_not_sent(self) -> None:
        """A global request answered after the connection ended gets no reply."""
        mux, transport = self.deferring_mux()
        self.global_request(mux, b"tcpip-forward")
        mux.serviceStopped()
        mux.requests[0][2].callback(b"")
        self.assertEqual(transport.packets, [])


@implementer(IConsumer)
class ProducerTCP(FakeTCP):
    """A TCP connection that takes a streaming producer, as Twisted's does."""

    def __init__(self) -> None:
        self.producer: Any = None
        self.disconnecting = False

    def write(self, data: bytes) -> None:
        """Bytes written are not looked at."""

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        assert streaming and self.producer is None
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.producer = None


class SocketBackPressureTests(MuxTestCase):
    """The SSH socket's send buffer pauses the channels that are sending, and only those."""

    def setUp(self) -> None:
        self.mux, self.transport = self.base_mux()
        self.tcp = ProducerTCP()
        self.transport.transport = self.tcp
        self.busy, self.busy_stream = self.open_ours(self.mux, remote_id=300)
        self.idle, self.idle_stream = self.open_ours(self.mux, remote_id=301)
        self.busy.write(b"data")

    def test_registers_as_producer_of_the_ssh_socket(self) -> None:
        """The first channel data makes the multiplexer the SSH socket's producer."""
        self.assertIs(self.tcp.producer, self.mux)

    def test_full_socket_holds_only_senders(self) -> None:
        """Pausing holds the channels that sent; an idle channel keeps reading."""
        self.mux.pauseProducing()
        self.assertTrue(self.busy_stream.reading_paused)
        self.assertFalse(self.idle_stream.reading_paused)

    def test_a_channel_sending_while_full_is_held_at_once(self) -> None:
        """A channel that sends while the socket is full is stopped at once, not later."""
        self.mux.pauseProducing()
        self.idle.write(b"late")
        self.assertTrue(self.idle_stream.reading_paused)
        self.assertEqual(self.transport.types().count(wire.MSG_CHANNEL_DATA), 2)

    def test_drained_socket_releases_them(self) -> None:
        """Resuming lets every held channel read again."""
        self.mux.pauseProducing()
        self.idle.write(b"late")
        self.mux.resumeProducing()
        self.assertFalse(self.busy_stream.reading_paused)
        self.assertFalse(self.idle_stream.reading_paused)

    def test_window_still_decides_after_release(self) -> None:
        """A channel out of window stays paused when the socket drains."""
        self.busy.write(b"x" * 20_000)  # beyond the 10,000-byte window
        self.mux.pauseProducing()
        self.mux.resumeProducing()
        self.assertTrue(self.busy_stream.reading_paused)

    def test_closing_socket_is_not_kept_open(self) -> None:
        """If the socket is closing when it drains, the producer lets go so it can close."""
        self.mux.pauseProducing()
        self.tcp.disconnecting = True
        self.mux.resumeProducing()
        self.assertIsNone(self.tcp.producer)

    def test_key_exchange_holds_senders_too(self) -> None:
        """A key re-exchange holds the senders; they read again only when no reason is left."""
        self.mux.key_exchange_started()
        self.assertTrue(self.busy_stream.reading_paused)
        self.mux.pauseProducing()
        self.mux.resumeProducing()
        self.assertTrue(self.busy_stream.reading_paused)
        self.mux.key_exchange_finished()
        self.assertFalse(self.busy_stream.reading_paused)


class PacketSizeTests(MuxTestCase):
    def test_openssh_peer_gets_openssh_packet_size(self) -> None:
        """With an OpenSSH peer we accept 32 KiB channel packets, as OpenSSH does."""
        mux, transport = self.base_mux()
        transport.otherVersionString = b"SSH-2.0-OpenSSH_9.2p1 Debian-2"
        self.assertEqual(mux.max_packet, 32 * 1024)

    def test_rfwd_peer_gets_larger_packets(self) -> None:
        """When both ends are rfwd, we accept 128 KiB packets (fewer, cheaper packets)."""
        mux, transport = self.base_mux()
        transport.otherVersionString = b"SSH-2.0-rfwd_0.1.0"
        self.assertEqual(mux.max_packet, 128 * 1024)
