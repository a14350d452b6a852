"""
The floor on the peer's maximum packet (L{twisted_rfwd.ssh.mux.MIN_PEER_MAX_PACKET}): a channel we
opened and the peer confirmed with tinier packets is closed unused, so that it cannot turn one
read into a flood of packets.
"""

from __future__ import annotations

from twisted.internet.protocol import Protocol

from tests.support.streams import FakeStream
from tests.unit.test_mux import FakeSSHTransport, MuxTestCase
from twisted_rfwd.protocol import wire
from twisted_rfwd.ssh.channel import Channel
from twisted_rfwd.ssh.mux import MIN_PEER_MAX_PACKET, ChannelMux, PeerMaxPacketTooSmall


class FloorTests(MuxTestCase):
    """Confirmations below, at and above the floor."""

    def confirm(
        self, max_packet: int, data: bytes = b""
    ) -> tuple[ChannelMux, FakeSSHTransport, Channel, FakeStream]:
        """Open a channel with a stream that already sent C{data}; the peer confirms it."""
        mux, transport = self.base_mux()
        channel = mux.open_channel(b"forwarded-tcpip", b"")
        stream = FakeStream().connect(Protocol())
        channel.attach(stream)
        if data:
            channel.write(data)
        del transport.packets[:]
        mux.packetReceived(
            wire.MSG_CHANNEL_OPEN_CONFIRMATION,
            wire.ChannelOpenConfirmation(channel.local_id, 77, 1 << 20, max_packet).pack(),
        )
        return mux, transport, channel, stream

    def test_tiny_max_packet_closes_channel_unused(self) -> None:
        """A 1-byte maximum: CLOSE goes out, none of the waiting data, and the stream closes."""
        _, transport, channel, stream = self.confirm(1, b"x" * 4096)
        self.assertEqual(transport.packets, [(wire.MSG_CHANNEL_CLOSE, wire.pack_uint32(77))])
        self.assertEqual(transport.disconnects, [])
        self.assertTrue(stream.closing)
        error = self.failureResultOf(channel.when_opened(), PeerMaxPacketTooSmall).value
        self.assertEqual((error.max_packet, error.minimum), (1, MIN_PEER_MAX_PACKET))
        self.assertEqual(
            str(error),
            f"the peer's maximum packet size (1) is below the {MIN_PEER_MAX_PACKET} bytes "
            "required; channel closed",
        )

    def test_peer_close_then_releases_the_channel(self) -> None:
        """The peer's answering CLOSE is accepted and the channel is forgotten."""
        mux, transport, channel, _ = self.confirm(MIN_PEER_MAX_PACKET - 1)
        mux.packetReceived(wire.MSG_CHANNEL_CLOSE, wire.pack_uint32(channel.local_id))
        self.assertEqual(transport.disconnects, [])
        self.assertEqual(mux.channels, {})
        self.assertEqual(transport.types().count(wire.MSG_CHANNEL_CLOSE), 1)

    def test_floor_itself_is_accepted(self) -> None:
        """At exactly the floor, the channel opens and data goes out in packets of that size."""
        _, transport, channel, _ = self.confirm(MIN_PEER_MAX_PACKET, b"y" * 2500)
        self.assertTrue(channel.is_open)
        sizes = [
            len(wire.parse_channel_data(p)[1])
            for t, p in transport.packets
            if t == wire.MSG_CHANNEL_DATA
        ]
        self.assertEqual(sizes, [MIN_PEER_MAX_PACKET, MIN_PEER_MAX_PACKET, 500])
        self.assertNotIn(wire.MSG_CHANNEL_CLOSE, transport.types())

    def test_floor_is_below_every_mainstream_client(self) -> None:
        """PuTTY's 16 KiB, the smallest mainstream maximum, is far above the floor."""
        self.assertLessEqual(MIN_PEER_MAX_PACKET, 1024)
        _, transport, channel, _ = self.confirm(16 * 1024, b"z" * 40000)
        self.assertTrue(channel.is_open)
        self.assertEqual(transport.types().count(wire.MSG_CHANNEL_DATA), 3)
