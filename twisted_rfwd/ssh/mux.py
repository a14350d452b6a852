"""
The C{ssh-connection} service (RFC 4254) for both ends: the table of channels, and the dispatch
of the peer's messages to them.

Conch's own L{twisted.conch.ssh.connection.SSHConnection} grants window before data is consumed,
confirms channel opens before the far side is connected, and crashes on unknown channel numbers;
this service replaces it, on Conch's public L{SSHService} base.  Subclasses decide policy by
overriding L{ChannelMux.global_request_received}, L{ChannelMux.channel_open_requested} and
L{ChannelMux.channel_request_received}.

Its other roles live beside it: global requests in L{twisted_rfwd.ssh.global_requests},
back-pressure from the SSH socket in L{twisted_rfwd.ssh.backpressure}, and what it needs of the
transport (and the transport of it) in L{twisted_rfwd.ssh.interfaces}.

Rules kept here, as OpenSSH peers expect them:
  - an incoming channel is confirmed only when the subclass's Deferred fires;
  - a malformed message, or one that breaks window rules, ends the connection with a
    C{PROTOCOL_ERROR} disconnect that says what was wrong.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from twisted.conch.ssh.service import SSHService
from twisted.conch.ssh.transport import DISCONNECT_CONNECTION_LOST, DISCONNECT_PROTOCOL_ERROR
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from twisted_rfwd.errors import (
    ChannelOpenFailed,
    ConnectionClosed,
    GlobalRequestFailed,
    PeerMaxPacketTooSmall,
    RemoteProtocolError,
)
from twisted_rfwd.protocol import wire
from twisted_rfwd.protocol.addresses import describe_address
from twisted_rfwd.protocol.session import pack_channel_request, pack_extended_data
from twisted_rfwd.protocol.settings import DEFAULT_MAX_PACKET, DEFAULT_WINDOW
from twisted_rfwd.protocol.window import ReceiveWindow
from twisted_rfwd.ssh.backpressure import SenderBackPressure
from twisted_rfwd.ssh.channel import Channel, IChannelOwner
from twisted_rfwd.ssh.global_requests import GlobalRequests
from twisted_rfwd.ssh.interfaces import IChannelDataSink, ISSHTransport
from twisted_rfwd.ssh.keepalive import KeepAlive
from twisted_rfwd.ssh.outcome import Outcome

__all__ = [
    "DEFAULT_MAX_PACKET",
    "DEFAULT_WINDOW",
    "MIN_PEER_MAX_PACKET",
    "RFWD_PEER_MAX_PACKET",
    "ChannelMux",
    "GlobalRequestFailed",
    "PeerMaxPacketTooSmall",
]

# What we accept from a peer that is rfwd too (its banner says so): fewer, larger packets.
# OpenSSH peers get OpenSSH's own 32 KiB, as they expect.
RFWD_PEER_MAX_PACKET = 128 * 1024

# Fairness: the smallest maximum packet a peer may announce when it confirms a channel we opened
# (the server's forwarded-tcpip channels); below it the channel is closed at once, unused.
#
# Every connection shares one reactor, and what sending costs grows with the number of packets,
# not of bytes: each 512 KiB read from a forwarded socket is sealed as packets in one go, so a
# peer announcing a 1-byte maximum turned one read into 512 Ki packets (~25 MB of ciphertext)
# and stalled every other user's tunnel for seconds.  RFC 4254 forbids sending more than the
# peer's maximum, so the remedy that costs nothing per packet is a floor, which bounds the work
# of one read at 512 packets and needs no scheduler.  (OpenSSH has no floor: it sends one
# packet per channel per turn of its loop, in a process of its own per connection.)
# 1000 bytes stays far below what real clients announce: 32 KiB from OpenSSH, Dropbear, libssh,
# Go, AsyncSSH and Paramiko, 16 KiB from PuTTY, 2 KiB from the smallest embedded builds.
#
# The window needs no floor: a peer granting a few bytes at a time gets one packet per
# WINDOW_ADJUST it sends, work it pays for as much as we do.
MIN_PEER_MAX_PACKET = 1000

# The one CHANNEL_DATA parser, bound once: it runs for every packet.
_parse_channel_data_in = wire.parse_channel_data_in


@implementer(IChannelDataSink, IChannelOwner)
class ChannelMux(GlobalRequests, SenderBackPressure, SSHService):
    """Multiplexes channels and global requests over one SSH transport."""

    name = b"ssh-connection"
    _log = Logger()
    # Conch types it as its own transport class; what this service uses of it is declared.
    transport: ISSHTransport  # type: ignore[assignment]

    def __init__(
        self,
        clock: IReactorTime,
        *,
        window_size: int = DEFAULT_WINDOW,
        max_packet: int = DEFAULT_MAX_PACKET,
    ) -> None:
        super().__init__()
        self.clock = clock
        self.window_size = window_size
        self._configured_max_packet = max_packet
        self._max_packet: int | None = None
        self.channels: dict[int, Channel] = {}
        self._next_local_id = 0
        self._opening: dict[int, Deferred[Any]] = {}
        self.stopped = False
        self._keepalive: KeepAlive | None = None
        self.end_reason: str | None = None
        self._idle_waiters: list[Deferred[None]] = []
        # Channels whose local socket is still open (it may outlive the channel to flush).
        self._streams: set[Channel] = set()
        # CHANNEL_DATA of the read in progress, per channel, until read_done.
        self._arrived: dict[Channel, list[memoryview]] = {}
        self._ended: Outcome[None] = Outcome()
        self._handlers: dict[int, Callable[[bytes], None]] = {
            **self.global_request_handlers(),
            wire.MSG_CHANNEL_OPEN: self._on_channel_open,
            wire.MSG_CHANNEL_OPEN_CONFIRMATION: self._on_open_confirmation,
            wire.MSG_CHANNEL_OPEN_FAILURE: self._on_open_failure,
            wire.MSG_CHANNEL_WINDOW_ADJUST: self._on_window_adjust,
            wire.MSG_CHANNEL_DATA: self._on_data,
            wire.MSG_CHANNEL_EXTENDED_DATA: self._on_extended_data,
            wire.MSG_CHANNEL_EOF: self._on_eof,
            wire.MSG_CHANNEL_CLOSE: self._on_close,
            wire.MSG_CHANNEL_REQUEST: self._on_channel_request,
            wire.MSG_CHANNEL_SUCCESS: self._ignore,
            wire.MSG_CHANNEL_FAILURE: self._ignore,
        }

    @property
    def max_packet(self) -> int:
        """The largest CHANNEL_DATA we accept: larger when the peer is rfwd."""
        if self._max_packet is None:
            banner = self.transport.otherVersionString
            peer_is_rfwd = banner.startswith(b"SSH-2.0-rfwd_")
            configured = self._configured_max_packet
            self._max_packet = max(configured, RFWD_PEER_MAX_PACKET) if peer_is_rfwd else configured
        return self._max_packet

    # -- policy hook for subclasses (global requests: see GlobalRequests) ----------------------

    def channel_open_requested(
        self, channel_type: bytes, data: bytes, channel: Channel
    ) -> Deferred[Any] | None:
        """
        Decide an incoming channel: attach a local stream to C{channel} and return (or fire a
        Deferred) to confirm; raise or fail with L{ChannelOpenFailed} to refuse.
        """
        raise ChannelOpenFailed(wire.OPEN_UNKNOWN_CHANNEL_TYPE, "unknown channel type")

    def channel_request_received(
        self, channel: Channel, request_type: bytes, want_reply: bool, data: bytes
    ) -> bool:
        """
        Decide a C{CHANNEL_REQUEST} on an open channel: C{True} accepts it (C{CHANNEL_SUCCESS}
        if the peer wants a reply), C{False} refuses it.  What follows an accepted request is
        best sent on a later turn, so that the reply goes first.  Refuses everything.
        """
        return False

    # -- outgoing -----------------------------------------------------------------------------

    def open_channel(self, channel_type: bytes, data: bytes) -> Channel:
        """Ask the peer for a channel; see L{Channel.when_opened} for the answer."""
        channel = self._new_channel()
        if self.stopped:
            channel.open_failed(Failure(ConnectionClosed("the SSH connection is closed")))
            return channel
        self.transport.sendPacket(
            wire.MSG_CHANNEL_OPEN,
            wire.ChannelOpen(
                channel_type, channel.local_id, self.window_size, self.max_packet, data
            ).pack(),
        )
        return channel

    def send_data(self, recipient: int, data: bytes | memoryview, max_packet: int) -> None:
        """C{data} as C{CHANNEL_DATA}, cut into packets of at most C{max_packet} bytes."""
        self.transport.send_channel_data(recipient, data, max_packet)

    def channel_data(self, plaintext: bytes, start: int, end: int) -> None:
        """
        C{CHANNEL_DATA} straight from the packet layer: the message body is
        C{plaintext[start:end]}, and the data is sliced out of it once.
        """
        try:
            recipient, data = _parse_channel_data_in(plaintext, start, end)
            channel = self._open_channel(recipient, "CHANNEL_DATA")
            if channel.data_arrived(data):
                # Written when the read is done, with whatever else it brings this channel.
                parts = self._arrived.get(channel)
                if parts is None:
                    self._arrived[channel] = [data]
                else:
                    parts.append(data)
        except RemoteProtocolError as e:
            self.protocol_error(str(e))

    def read_done(self) -> None:
        if self._arrived:
            self._deliver_arrived()

    def _deliver_arrived(self) -> None:
        """Each channel's data of this read to its stream, in one write."""
        arrived, self._arrived = self._arrived, {}
        for channel, parts in arrived.items():
            channel.deliver(parts[0] if len(parts) == 1 else b"".join(parts))

    def send_channel_request(
        self, recipient: int, name: bytes, want_reply: bool, data: bytes
    ) -> None:
        """A C{CHANNEL_REQUEST}, such as C{exit-status}; the caller checks our CLOSE is not sent."""
        self.transport.sendPacket(
            wire.MSG_CHANNEL_REQUEST, pack_channel_request(recipient, name, want_reply, data)
        )

    def send_extended_data(self, channel: Channel, data_type: int, data: bytes) -> bool:
        """
        C{data} as one C{CHANNEL_EXTENDED_DATA} (such as stderr), only if the peer's window and
        maximum packet take all of it, which are charged: C{False} if it was not sent.
        """
        # The channel's own credit, shared with its CHANNEL_DATA (RFC 4254 section 5.2).
        window = channel._send_window
        size = len(data)
        if channel.close_sent or size > window.max_packet or size > window.available:
            return False
        window.take(size, 1)
        self.transport.sendPacket(
            wire.MSG_CHANNEL_EXTENDED_DATA,
            pack_extended_data(channel.remote_id, data_type, data),
        )
        return True

    def send_window_adjust(self, recipient: int, increment: int) -> None:
        self.transport.sendPacket(
            wire.MSG_CHANNEL_WINDOW_ADJUST, wire.pack_window_adjust(recipient, increment)
        )

    def send_eof(self, recipient: int) -> None:
        self.transport.sendPacket(wire.MSG_CHANNEL_EOF, wire.pack_uint32(recipient))

    def batch(self) -> AbstractContextManager[None]:
        return self.transport.batch()

    def send_close(self, recipient: int) -> None:
        self.transport.sendPacket(wire.MSG_CHANNEL_CLOSE, wire.pack_uint32(recipient))

    def release_channel(self, channel: Channel) -> None:
        """Forget a channel whose CLOSE went both ways; its number may be reused."""
        if self.channels.get(channel.local_id) is channel:
            del self.channels[channel.local_id]
        self.forget_sender(channel)
        if self.idle:
            self._fire_idle()

    def stream_attached(self, channel: Channel) -> None:
        self._streams.add(channel)

    def stream_detached(self, channel: Channel) -> None:
        self._streams.discard(channel)
        if self.idle:
            self._fire_idle()

    @property
    def idle(self) -> bool:
        """No channel open, and every forwarded socket finished closing."""
        return not self.channels and not self._streams

    def when_idle(self) -> Deferred[None]:
        """
        Fires once no channel is open and every forwarded socket has closed (having flushed
        what it had to send), at once if that is already so, or when the connection ended.
        """
        d: Deferred[None] = Deferred()
        if self.idle:
            d.callback(None)
        else:
            self._idle_waiters.append(d)
        return d

    def when_stopped(self) -> Deferred[None]:
        """Fires once the SSH connection under this service has ended."""
        return self._ended.wait()

    def _fire_idle(self) -> None:
        waiters, self._idle_waiters = self._idle_waiters, []
        for d in waiters:
            d.callback(None)

    def start_keepalive(self, interval: float, count_max: int) -> None:
        """Probe the peer after C{interval} idle seconds; give up after C{count_max} probes."""
        if interval <= 0:
            return
        self._keepalive = KeepAlive(
            self.clock,
            interval,
            count_max,
            traffic=lambda: self.transport.packets_received,
            probe=lambda: self.send_global_request(b"keepalive@openssh.com", b""),
            dead=self.peer_not_responding,
        )
        self._keepalive.start()

    def peer_not_responding(self, silent_for: float) -> None:
        """The peer answered none of our keepalives: drop the connection now."""
        assert self._keepalive is not None
        self.end_reason = (
            f"no answer to {self._keepalive.count_max} keepalives (silent for {silent_for:.0f} s)"
        )
        self._log.warn(
            "{peer} is not responding: {reason}; disconnecting",
            peer=self.peer_description(),
            reason=self.end_reason,
        )
        self.transport.sendDisconnect(DISCONNECT_CONNECTION_LOST, b"keepalive timeout")
        tcp: Any = self.transport.transport
        if tcp is not None:
            # Not a graceful close: a dead link would never drain what we still have to send.
            tcp.abortConnection()

    def protocol_error(self, message: str) -> None:
        """The peer broke the protocol: say what, and disconnect (nothing is sent after)."""
        if self.stopped:
            return
        self.stopped = True
        self._log.error(
            "Protocol error from {peer}: {reason}; disconnecting",
            peer=self.peer_description(),
            reason=message,
        )
        self.transport.sendDisconnect(DISCONNECT_PROTOCOL_ERROR, message.encode("utf-8"))

    def peer_description(self) -> str:
        """C{host:port} of the SSH peer, for log lines."""
        tcp = self.transport.transport
        return describe_address(tcp.getPeer()) if tcp is not None else "(no peer)"

    # -- SSHService ---------------------------------------------------------------------------

    def packetReceived(self, messageNum: int, packet: bytes) -> None:
        if self._arrived:
            # Data that came before this message goes to the streams before it acts (an EOF).
            self._deliver_arrived()
        handler = self._handlers.get(messageNum)
        if handler is None:
            self.transport.sendUnimplemented()
            return
        try:
            handler(packet)
        except RemoteProtocolError as e:
            self.protocol_error(str(e))

    def serviceStopped(self) -> None:
        """The transport is gone: fail everything that still waits on the peer."""
        self.stopped = True
        if self._keepalive is not None:
            self._keepalive.stop()
        reason = Failure(ConnectionClosed("the SSH connection closed"))
        opening, self._opening = self._opening, {}
        for d in opening.values():
            d.cancel()
        for channel in list(self.channels.values()):
            channel.connection_lost(reason)
        self.channels.clear()
        self.fail_global_requests(reason)
        self.reset_back_pressure()
        self._fire_idle()
        self._ended.settle(None)

    # -- incoming -----------------------------------------------------------------------------

    def _new_channel(self) -> Channel:
        local_id = self._next_local_id
        while local_id in self.channels:
            local_id = (local_id + 1) & 0xFFFFFFFF
        self._next_local_id = (local_id + 1) & 0xFFFFFFFF
        channel = Channel(self, local_id, ReceiveWindow(self.window_size, self.max_packet))
        self.channels[local_id] = channel
        return channel

    def _open_channel(self, recipient: int, what: str) -> Channel:
        channel = self.channels.get(recipient)
        if channel is None or not channel.is_open:
            raise RemoteProtocolError(f"{what} for channel {recipient}, which is not open")
        return channel

    def _ignore(self, packet: bytes) -> None:
        """Replies to channel requests we never send: nothing to do."""

    def _on_channel_open(self, payload: bytes) -> None:
        request = wire.ChannelOpen.parse(payload)
        channel = self._new_channel()
        d = maybeDeferred(self.channel_open_requested, request.channel_type, request.extra, channel)
        self._opening[channel.local_id] = d
        d.addCallbacks(
            self._accept_channel,
            self._refuse_channel,
            callbackArgs=(channel, request),
            errbackArgs=(channel, request),
        )

    def _accept_channel(self, _: object, channel: Channel, request: wire.ChannelOpen) -> None:
        self._opening.pop(channel.local_id, None)
        if self.stopped:
            return
        self.transport.sendPacket(
            wire.MSG_CHANNEL_OPEN_CONFIRMATION,
            wire.ChannelOpenConfirmation(
                request.sender_channel, channel.local_id, self.window_size, self.max_packet
            ).pack(),
        )
        channel.opened(request.sender_channel, request.initial_window, request.max_packet)

    def _refuse_channel(
        self, failure: Failure, channel: Channel, request: wire.ChannelOpen
    ) -> None:
        self._opening.pop(channel.local_id, None)
        channel.open_failed(failure)
        if self.stopped:
            return
        error = failure.value
        if isinstance(error, RemoteProtocolError):
            self.protocol_error(str(error))
            return
        if isinstance(error, ChannelOpenFailed):
            code, text = error.code, error.description
        else:
            self._log.failure("Error opening channel", failure=failure)
            code, text = wire.OPEN_CONNECT_FAILED, "internal error"
        self.transport.sendPacket(
            wire.MSG_CHANNEL_OPEN_FAILURE,
            wire.ChannelOpenFailure(request.sender_channel, code, text).pack(),
        )

    def _on_open_confirmation(self, payload: bytes) -> None:
        message = wire.ChannelOpenConfirmation.parse(payload)
        channel = self.channels.get(message.recipient_channel)
        if channel is None or channel.is_open or channel.local_id in self._opening:
            raise RemoteProtocolError(
                f"open confirmation for channel {message.recipient_channel}, "
                "which was not being opened"
            )
        if message.max_packet < MIN_PEER_MAX_PACKET:
            # Whoever opened the channel logs the reason when its open fails: one line.
            too_small = PeerMaxPacketTooSmall(message.max_packet, MIN_PEER_MAX_PACKET)
            channel.close_unused(message.sender_channel, Failure(too_small))
            return
        channel.opened(message.sender_channel, message.initial_window, message.max_packet)

    def _on_open_failure(self, payload: bytes) -> None:
        message = wire.ChannelOpenFailure.parse(payload)
        channel = self.channels.get(message.recipient_channel)
        if channel is None or channel.is_open or channel.local_id in self._opening:
            raise RemoteProtocolError(
                f"open failure for channel {message.recipient_channel}, which was not being opened"
            )
        channel.open_failed(Failure(ChannelOpenFailed(message.reason_code, message.description)))

    def _on_window_adjust(self, payload: bytes) -> None:
        recipient, increment = wire.parse_window_adjust(payload)
        self._open_channel(recipient, "WINDOW_ADJUST").window_adjusted(increment)

    def _on_data(self, payload: bytes) -> None:
        recipient, data = wire.parse_channel_data(payload)
        self._open_channel(recipient, "CHANNEL_DATA").data_received(data)

    def _on_extended_data(self, payload: bytes) -> None:
        recipient, _, data = wire.parse_extended_data(payload)
        channel = self._open_channel(recipient, "CHANNEL_EXTENDED_DATA")
        # TCP channels carry no stderr: drop it, but give the window back so the peer is not
        # stalled.
        channel.window.data_received(len(data))
        channel.window.consumed(len(data))
        credit = channel.window.credit_due()
        if credit and not channel.close_sent:
            self.send_window_adjust(channel.remote_id, credit)

    def _on_eof(self, payload: bytes) -> None:
        recipient = wire.parse_channel_number(payload, "SSH_MSG_CHANNEL_EOF")
        self._open_channel(recipient, "CHANNEL_EOF").eof_received_from_peer()

    def _on_close(self, payload: bytes) -> None:
        recipient = wire.parse_channel_number(payload, "SSH_MSG_CHANNEL_CLOSE")
        # A channel is forgotten once CLOSE went both ways, so a second CLOSE finds none.
        self._open_channel(recipient, "CHANNEL_CLOSE").close_received_from_peer()

    def _on_channel_request(self, payload: bytes) -> None:
        request = wire.ChannelRequest.parse(payload)
        channel = self._open_channel(request.recipient_channel, "CHANNEL_REQUEST")
        accepted = self.channel_request_received(
            channel, request.name, request.want_reply, request.data
        )
        if request.want_reply and not channel.close_sent:
            answer = wire.MSG_CHANNEL_SUCCESS if accepted else wire.MSG_CHANNEL_FAILURE
            self.transport.sendPacket(answer, wire.pack_uint32(channel.remote_id))
