"""
What both ends change in Conch's SSH transport: the packet layer, the algorithms, the banner,
socket options, and how a peer's garbage is handled.

Conch keeps doing key exchange, host-key signatures and key derivation.  The binary packet layer
is ours (L{twisted_rfwd.protocol.ciphers}), for three reasons: AEAD ciphers and encrypt-then-MAC,
which Conch lacks; strict key exchange (OpenSSH's Terrapin fix), which they require; and a receive
path that neither re-copies its buffer per packet nor concatenates what it sends.  Where the two
meet inside Conch, L{twisted_rfwd.ssh.conch} does the touching.

Whose fault: a peer that breaks the protocol (L{RemoteProtocolError}) gets a C{PROTOCOL_ERROR}
disconnect saying why, and one log line; any other exception while handling its bytes is a bug
of ours, logged with its traceback, and the peer gets a neutral C{BY_APPLICATION} disconnect.
"""

from __future__ import annotations

from typing import Any

from twisted.conch.ssh.transport import (
    DISCONNECT_BY_APPLICATION,
    DISCONNECT_KEY_EXCHANGE_FAILED,
    DISCONNECT_PROTOCOL_ERROR,
    DISCONNECT_PROTOCOL_VERSION_NOT_SUPPORTED,
    MSG_DISCONNECT,
    MSG_NEWKEYS,
    SSHTransportBase,
)
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from twisted_rfwd._version import __version__
from twisted_rfwd.errors import MalformedPacket, RemoteProtocolError
from twisted_rfwd.protocol.addresses import describe_address
from twisted_rfwd.protocol.algorithms import CIPHERS, KEY_EXCHANGES, PUBLIC_KEY_ALGORITHMS
from twisted_rfwd.protocol.algorithms import MACS as MACS_OFFERED
from twisted_rfwd.protocol.ciphers import AEAD_CIPHERS, Opener, PlainOpener, PlainSealer, Sealer
from twisted_rfwd.protocol.kex import HYBRID_KEY_EXCHANGES
from twisted_rfwd.protocol.messages import check_shape
from twisted_rfwd.protocol.phases import (
    MSG_KEX_ECDH_REPLY,
    MSG_USERAUTH_REQUEST,
    KexStage,
    Phase,
    Side,
    accepted_messages,
    refusal,
)
from twisted_rfwd.protocol.units import DEFAULT_REKEY_BYTES, DEFAULT_REKEY_SECONDS
from twisted_rfwd.protocol.wire import (
    CHANNEL_DATA_HEADER,
    MSG_CHANNEL_DATA,
    Reader,
    pack_channel_data,
    pack_channel_data_header,
    pack_string,
    pack_uint32,
)
from twisted_rfwd.ssh.interfaces import IChannelDataSink, IKeyExchangeObserver, ISSHTransport
from twisted_rfwd.ssh.kex import HybridKeyExchange, client_choice
from twisted_rfwd.ssh.metrics import NO_METRICS, Metrics
from twisted_rfwd.ssh.sockets import WriteBatch, ack_promptly, set_tcp_nodelay, write_now

__all__ = [
    "CIPHERS",
    "KEY_EXCHANGES",
    "MACS_OFFERED",
    "PUBLIC_KEY_ALGORITHMS",
    "VERSION_STRING",
    "TransportMixin",
]

# Every key exchange we offer is one Conch implements (curve25519 needs a recent cryptography).
_MISSING = set(KEY_EXCHANGES) - set(SSHTransportBase.supportedKeyExchanges)
if _MISSING:  # pragma: no cover - an installation problem, not a code path
    raise ImportError(f"Conch lacks key exchanges {sorted(_MISSING)}: upgrade cryptography")

# Not "OpenSSH_*": OpenSSH peers change their behaviour by the banner they see.
VERSION_STRING = f"SSH-2.0-rfwd_{__version__}".encode("ascii")

# Strict key exchange (OpenSSH PROTOCOL, "kex-strict-*-v00@openssh.com").
STRICT_KEX_CLIENT = b"kex-strict-c-v00@openssh.com"
STRICT_KEX_SERVER = b"kex-strict-s-v00@openssh.com"
# Lines a server may send before its identification line, in bytes (OpenSSH allows 1024 lines).
_MAX_VERSION_BYTES = 8192
# RFC 4253 section 4.2: the identification line, CR LF included.
_MAX_VERSION_LINE = 255
# What may wait for the end of a key exchange we started, while the peer does not answer it.
_MAX_BLOCKED_BYTES = 8 * 1024 * 1024


def _name(algorithm: bytes) -> str:
    return algorithm.decode("ascii", "replace")


def _mac_name(cipher: bytes, mac: bytes) -> str:
    return "(implicit MAC)" if cipher in AEAD_CIPHERS else _name(mac)


# What a CHANNEL_DATA packet adds to its data before sealing.
_DATA_OVERHEAD = CHANNEL_DATA_HEADER.size
# CHANNEL_DATA up to this size is sealed as a packet of its own (Sealer.seal), not in the
# reused buffer: cheaper for a request or a reply, where copying is nothing.
_SMALL_DATA = 1024


def _joined(pieces: list[bytes]) -> bytes:
    """A sealer's pieces of one packet (AEAD sealers make one) as one string."""
    return pieces[0] if len(pieces) == 1 else b"".join(pieces)


@implementer(ISSHTransport)
class TransportMixin(HybridKeyExchange):
    """Mixed in before Conch's client or server transport class."""

    _log = Logger()

    ourVersionString = VERSION_STRING
    supportedCiphers: list[bytes] = CIPHERS
    supportedMACs: list[bytes] = MACS_OFFERED
    supportedCompressions: list[bytes] = [b"none"]

    # Re-exchange keys after this many bytes in either direction, or this long (None: never).
    rekey_bytes: int | None = DEFAULT_REKEY_BYTES
    rekey_seconds: float | None = DEFAULT_REKEY_SECONDS
    clock: IReactorTime | None = None
    # Hears of re-keys (and, on the server, more: see twisted_rfwd.ssh.metrics).
    metrics: Metrics = NO_METRICS

    transport: Any
    isClient: bool
    gotVersion: bool
    buf: bytes
    otherVersionString: bytes
    supportedVersions: Any
    incomingPacketSequence: int
    outgoingPacketSequence: int
    service: Any
    packets_received: int
    # What the current service provides, looked up once per service (see setService).
    _channel_data_sink: IChannelDataSink | None = None
    _key_exchange_observer: IKeyExchangeObserver | None = None

    supportedKeyExchanges: list[bytes] = KEY_EXCHANGES

    @property
    def strict_kex(self) -> bool:
        """Whether both ends agreed on strict key exchange (OpenSSH's Terrapin fix)."""
        return self._strict

    # -- connection start --------------------------------------------------------------------

    def connectionMade(self) -> None:
        set_tcp_nodelay(self.transport)
        self._sealer: Sealer = PlainSealer()
        self._opener: Opener = PlainOpener()
        self._received = bytearray()
        # Where CHANNEL_DATA packets are sealed before they are written; kept and reused.
        self._output = memoryview(bytearray())
        # Holds what is sent while a batch is open (see batch()); writes it when it ends.
        self._batch = WriteBatch(self._write_out)
        self._strict = False
        self._initial_kex = True
        self._awaiting_keys = False
        self._closing = False
        self.packets_received = 0
        self._bytes_out = 0
        self._bytes_in = 0
        self._rekey_timer: IDelayedCall | None = None
        self._side = Side.CLIENT if self.isClient else Side.SERVER
        self._peer_kex = KexStage.IDLE
        self._info_pending = False
        self._accepting = accepted_messages(self._side, Phase.FIRST_KEX, KexStage.IDLE, False)
        self._blocked_bytes = 0
        self._unimplemented_seen = 0
        # Announce strict KEX after the real methods (which a factory may have narrowed).
        marker = STRICT_KEX_CLIENT if self.isClient else STRICT_KEX_SERVER
        methods = [k for k in self.supportedKeyExchanges if not k.startswith(b"kex-strict-")]
        self.supportedKeyExchanges = [*methods, marker]
        super().connectionMade()  # type: ignore[misc]
        self.use_plain_ciphers()

    # -- sending -----------------------------------------------------------------------------

    def sendPacket(self, messageType: int, payload: bytes) -> None:
        if self.key_exchange_running and self.hold_for_key_exchange(messageType, payload):
            self._blocked_bytes += len(payload)
            if self._blocked_bytes > _MAX_BLOCKED_BYTES:
                self.protocol_error("the key exchange we started was not answered")
            return
        seq = self.outgoingPacketSequence
        sealed = self._sealer.seal(seq, bytes((messageType,)) + payload)
        self.outgoingPacketSequence = (seq + 1) & 0xFFFFFFFF
        self._write(_joined(sealed))
        if messageType == MSG_NEWKEYS:
            # Everything after our NEWKEYS goes out under the new keys.
            self._sealer = self.next_ciphers.sealer
            if self._strict:
                self.outgoingPacketSequence = 0
            if not self.isClient and self._peer_kex is KexStage.STARTED:
                # The server's NEWKEYS follows its reply: the client's NEWKEYS may come now.
                self._set_peer_kex(KexStage.KEYED)

    def send_channel_data(self, recipient: int, data: bytes | memoryview, max_packet: int) -> None:
        """
        C{data} as C{CHANNEL_DATA} packets of at most C{max_packet} bytes each, sealed into one
        buffer and handed to the socket in one write, the data never copied into a payload.
        """
        size = len(data)
        if self.key_exchange_running:
            for offset in range(0, size, max_packet):
                chunk = data[offset : offset + max_packet]
                self.sendPacket(MSG_CHANNEL_DATA, pack_channel_data(recipient, chunk))
            return
        if not size:
            return
        sealer = self._sealer
        if size <= _SMALL_DATA and size <= max_packet:
            # One small packet (a request, a reply): sealed by itself, without the buffer.
            seq = self.outgoingPacketSequence
            self.outgoingPacketSequence = (seq + 1) & 0xFFFFFFFF
            self._write(_joined(sealer.seal(seq, pack_channel_data_header(recipient, size), data)))
            return
        packets, last = divmod(size, max_packet)
        full_size = sealer.sealed_size(_DATA_OVERHEAD + max_packet)
        if last:
            total = packets * full_size + sealer.sealed_size(_DATA_OVERHEAD + last)
        else:
            total = packets * full_size
        if len(self._output) < total:
            self._output = memoryview(bytearray(total))
        out = self._output
        seal_into = sealer.seal_into
        seq = self.outgoingPacketSequence
        full = pack_channel_data_header(recipient, max_packet)
        view = memoryview(data)
        written = 0
        for offset in range(0, size, max_packet):
            chunk = view[offset : offset + max_packet]
            n = len(chunk)
            header = full if n == max_packet else pack_channel_data_header(recipient, n)
            written += seal_into(out[written:], seq, header, chunk)
            seq = (seq + 1) & 0xFFFFFFFF
        self.outgoingPacketSequence = seq
        # Every packet in one write, from the reused buffer (copied only if it has to wait).
        self._write(out[:written])

    def batch(self) -> WriteBatch:
        """
        A context in which the packets sent are held, then written with one send() when the
        outermost batch ends.  Every read of the SSH socket is one batch, so what answers it
        (a confirmation, window credit, an EOF and a CLOSE) leaves together.
        """
        return self._batch

    def _write(self, data: bytes | memoryview) -> None:
        """
        Write sealed packets, or hold them in the open batch.  A view (of the reused seal
        buffer, which the next call overwrites) is copied only if it has to wait.
        """
        self._bytes_out += len(data)
        if not self._batch.hold(data):
            write_now(self.transport, data)
        limit = self.rekey_bytes
        if limit is not None and self._bytes_out > limit:
            self._rekey("sent")

    def _write_out(self, data: bytes) -> None:
        if self.transport is not None:
            write_now(self.transport, data)

    def sendUnimplemented(self) -> None:
        """Conch's, named here because the connection service relies on it (L{ISSHTransport})."""
        super().sendUnimplemented()  # type: ignore[misc]

    def sendDisconnect(self, reason: int, desc: bytes) -> None:
        """Conch's, without its log line (which would repeat a reason built from peer bytes)."""
        if self._closing:
            return
        self._closing = True
        # Reason code, description, and an empty language tag.
        self.sendPacket(MSG_DISCONNECT, pack_uint32(reason) + pack_string(desc) + pack_string(b""))
        # Whoever decided to disconnect has logged why: no second line with the same reason.
        self._log.debug("Disconnecting {peer} (code {code})", peer=self._peer(), code=reason)
        if self.transport is not None:
            self._batch.flush()
            self.transport.loseConnection()

    # -- receiving ---------------------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        with self._batch:
            try:
                self._data_received(data)
            finally:
                sink = self._channel_data_sink
                if sink is not None:
                    sink.read_done()

    def _data_received(self, data: bytes) -> None:
        if self.key_exchange_running:
            self._ack_promptly()
        try:
            if not self.gotVersion:
                data = self._read_version(data)
                if not self.gotVersion or self._closing:
                    return
            if self._awaiting_keys:
                # What follows the peer's NEWKEYS needs our new keys: keep it as it came.
                self._received += data
                return
            rest: bytes | memoryview = data
            if self._received:
                used = self._complete_pending(data)
                if used is None:
                    return
                rest = memoryview(data)[used:]
            self._read_packets(rest)
        except RemoteProtocolError as e:
            self.protocol_error(str(e))
        except Exception:
            # Not the peer's fault: every way a peer can break the protocol raises
            # RemoteProtocolError (the hostile suite checks so).  Ours to fix: the traceback for
            # whoever debugs it, and a disconnect that does not blame the peer.
            self._internal_error()

    def _read_version(self, data: bytes) -> bytes:
        """Collect the peer's identification line; return what follows it."""
        self.buf = self.buf + data
        buffered = self.buf
        if not self.isClient and buffered[:4] != b"SSH-"[: len(buffered)]:
            # RFC 4253 section 4.2: only a server may send lines before its identification.
            self.protocol_error("the client sent something before its identification line")
            return b""
        start = buffered.find(b"SSH-")
        end = buffered.find(b"\n", start) if start >= 0 else -1
        if end < 0:
            if len(buffered) > _MAX_VERSION_BYTES or (
                start >= 0 and len(buffered) - start > _MAX_VERSION_LINE
            ):
                self.protocol_error("no SSH identification line")
            return b""
        if end + 1 - start > _MAX_VERSION_LINE:
            self.protocol_error("identification line longer than 255 bytes")
            return b""
        self.otherVersionString = buffered[start:end].rstrip(b"\r")
        self.gotVersion = True
        self.buf = b""
        version = self.otherVersionString.split(b"-")[1]
        if version not in self.supportedVersions:
            self.sendDisconnect(
                DISCONNECT_PROTOCOL_VERSION_NOT_SUPPORTED, b"bad version " + version
            )
            return b""
        return buffered[end + 1 :]

    def _complete_pending(self, data: bytes) -> int | None:
        """
        Finish the packet an earlier read began, taking only the bytes it lacks from C{data}
        (appending all of C{data} would copy every byte twice), and handle it.  Returns how
        many bytes of C{data} it used, or C{None} if the packet is still incomplete.
        """
        pending = self._received
        opener = self._opener
        view = memoryview(data)
        used = 0
        try:
            if len(pending) < opener.first_block:
                used = min(opener.first_block - len(pending), len(data))
                pending += view[:used]
                if len(pending) < opener.first_block:
                    return None
            size = opener.packet_size(
                self.incomingPacketSequence, bytes(pending[: opener.first_block])
            )
            more = min(size - len(pending), len(data) - used)
            pending += view[used : used + more]
            used += more
        finally:
            view.release()
        if len(pending) < size:
            return None
        self._received = bytearray()
        self._read_packets(pending)
        return used

    def _read_packets(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        offset, available = 0, len(data)
        try:
            while not self._closing and not self._awaiting_keys:
                opener = self._opener
                if available - offset < opener.first_block:
                    break
                seq = self.incomingPacketSequence
                size = opener.packet_size(seq, view[offset : offset + opener.first_block])
                if available - offset < size:
                    break
                plaintext, start, end = opener.open(seq, view[offset : offset + size])
                offset += size
                self.incomingPacketSequence = (seq + 1) & 0xFFFFFFFF
                self.packets_received += 1
                self._bytes_in += size
                self._dispatch(plaintext, start, end)
        finally:
            if offset < available:
                self._received = bytearray(view[offset:])
            view.release()
        limit = self.rekey_bytes
        if limit is not None and self._bytes_in > limit:
            self._rekey("received")

    def _dispatch(self, plaintext: bytes, start: int, end: int) -> None:
        message = plaintext[start]
        if message not in self._accepting:
            raise RemoteProtocolError(
                refusal(self._side, self._phase(), self._peer_kex, message, end - start)
            )
        if message == MSG_CHANNEL_DATA:
            sink = self._channel_data_sink
            if sink is not None:
                sink.channel_data(plaintext, start + 1, end)
                return
        payload = plaintext[start + 1 : end]
        if message == MSG_USERAUTH_REQUEST and self._phase() is Phase.CONNECTION:
            return  # RFC 4252 section 5.1: silently ignored once logged in, as sshd does.
        if message < 80:
            check_shape(self._side, message, payload)
            if message == MSG_KEX_ECDH_REPLY:
                # The client has the server's reply: the server's NEWKEYS may come now.
                self._set_peer_kex(KexStage.KEYED)
        self.dispatchMessage(message, payload)  # type: ignore[attr-defined]

    # -- phases (see twisted_rfwd.protocol.phases) -------------------------------------------

    def _phase(self) -> Phase:
        if self._initial_kex:
            return Phase.FIRST_KEX
        service = self.service
        if service is None:
            return Phase.NO_SERVICE
        if service.name == b"ssh-userauth":
            return Phase.USERAUTH_INFO if self._info_pending else Phase.USERAUTH
        return Phase.CONNECTION

    def await_info_response(self, pending: bool) -> None:
        """
        The userauth service sent a keyboard-interactive question (C{True}), or no longer waits
        for its answer (C{False}): only in between may the peer send C{USERAUTH_INFO_RESPONSE}.
        """
        self._info_pending = pending
        self._update_accepting()

    def _update_accepting(self) -> None:
        self._accepting = accepted_messages(
            self._side, self._phase(), self._peer_kex, self._strict and self._initial_kex
        )

    def _set_peer_kex(self, stage: KexStage) -> None:
        self._peer_kex = stage
        self._update_accepting()

    def setService(self, service: Any) -> None:
        # Which declared interfaces the new service provides, decided here once, not per packet.
        self._channel_data_sink = service if IChannelDataSink.providedBy(service) else None
        self._key_exchange_observer = service if IKeyExchangeObserver.providedBy(service) else None
        self._info_pending = False
        super().setService(service)  # type: ignore[misc]
        self._update_accepting()

    # -- what Conch would log with the peer's bytes in it -------------------------------------

    def ssh_DISCONNECT(self, packet: bytes) -> None:
        reader = Reader(packet, "SSH_MSG_DISCONNECT")
        code = reader.uint32()
        description = reader.string()
        self._closing = True
        self.receiveError(code, description)  # type: ignore[attr-defined]
        self.transport.loseConnection()

    def receiveUnimplemented(self, seqnum: int) -> None:
        # Said once: a peer repeating it must not fill the log.
        self._unimplemented_seen += 1
        if self._unimplemented_seen == 1:
            self._log.info(
                "{peer} did not understand our packet {seqnum}", peer=self._peer(), seqnum=seqnum
            )

    def receiveDebug(self, alwaysDisplay: bool, message: bytes, lang: bytes) -> None:
        """The peer's debug messages are not logged: they are the peer's text, unbounded."""

    def ssh_KEX_DH_GEX_REQUEST_OLD(self, packet: bytes) -> None:
        if self.hybrid_kex:
            if not self.skip_guessed_packet():
                self.hybrid_init_received(packet)
            return
        try:
            super().ssh_KEX_DH_GEX_REQUEST_OLD(packet)  # type: ignore[misc]
        except ValueError:
            # cryptography refuses a public value that is not a point of the curve.
            raise MalformedPacket("SSH_MSG_KEX_ECDH_INIT", "invalid public key") from None

    def ssh_KEX_DH_GEX_GROUP(self, packet: bytes) -> Any:
        if self.hybrid_kex:
            return self.hybrid_reply_received(packet)
        try:
            return super().ssh_KEX_DH_GEX_GROUP(packet)  # type: ignore[misc]
        except ValueError:
            raise MalformedPacket("SSH_MSG_KEX_ECDH_REPLY", "invalid public key") from None

    def _resume_reading(self) -> None:
        """Keys arrived for a NEWKEYS we had to hold: read what waited behind it."""
        if self._awaiting_keys:
            self._awaiting_keys = False
            waiting, self._received = bytes(self._received), bytearray()
            if waiting:
                self.dataReceived(waiting)

    # -- key exchange ------------------------------------------------------------------------

    def ssh_KEXINIT(self, packet: bytes) -> Any:
        first = self._initial_kex and self.incomingPacketSequence <= 1
        self._set_peer_kex(KexStage.STARTED)
        peer_kex = Reader(packet[16:], "SSH_MSG_KEXINIT").string().split(b",")
        # A client sends the first message of the methods that are ours (Conch's would not).
        ours = self.isClient and client_choice(self.supportedKeyExchanges, peer_kex) in (
            HYBRID_KEY_EXCHANGES
        )
        if self._initial_kex:
            wanted = STRICT_KEX_SERVER if self.isClient else STRICT_KEX_CLIENT
            self._strict = wanted in peer_kex
            if self._strict and not first:
                raise RemoteProtocolError("strict KEX: KEXINIT was not the first message")
            self._update_accepting()
        result = self.run_conch_kexinit(packet, ours)
        suite = None if self._closing else self.take_negotiated_ciphers()
        if suite is not None:
            self._log.info(
                "Key exchange with {peer}: {kex}, host key {host_key}, "
                "out {out_cipher} {out_mac}, in {in_cipher} {in_mac}{strict}",
                peer=self._peer(),
                kex=_name(self.kexAlg),
                host_key=_name(self.keyAlg),
                out_cipher=_name(suite.outCipType),
                out_mac=_mac_name(suite.outCipType, suite.outMACType),
                in_cipher=_name(suite.inCipType),
                in_mac=_mac_name(suite.inCipType, suite.inMACType),
                strict=", strict KEX" if self._strict else "",
            )
            if ours:
                self.start_hybrid_kex()
        return result

    def sendKexInit(self) -> None:
        super().sendKexInit()  # type: ignore[misc]
        self._ack_promptly()
        if self._key_exchange_observer is not None:
            self._key_exchange_observer.key_exchange_started()

    def _ack_promptly(self) -> None:
        """
        Acknowledge what arrives at once while keys are re-exchanged.  A peer that leaves Nagle's
        algorithm on (OpenSSH's C{ssh -N}, and C{sshd} without a terminal) holds back its small
        key exchange messages until its data in flight is acknowledged, and Linux delays that
        acknowledgement by up to 40 ms: each re-key stalled the tunnel that long.  The kernel
        leaves quick-ack mode by itself, so this is repeated on each read until the exchange ends.
        """
        ack_promptly(self.transport)

    def ssh_NEWKEYS(self, packet: bytes) -> None:
        self._set_peer_kex(KexStage.IDLE)
        if not self.next_ciphers.keyed:
            # Our own NEWKEYS is not out yet (Conch's client waits on the host-key check):
            # everything behind the peer's NEWKEYS needs the new keys, so stop reading.
            self._awaiting_keys = True
        super().ssh_NEWKEYS(packet)  # type: ignore[misc]

    def before_new_keys(self) -> None:
        """Read with the new keys from now on, and start counting towards the next re-key."""
        self._opener = self.next_ciphers.opener
        if self._strict:
            self.incomingPacketSequence = 0
        if not self._initial_kex:
            self.metrics.rekeyed()
        self._initial_kex = False
        self._blocked_bytes = 0
        self._update_accepting()
        self._bytes_out = self._bytes_in = 0
        self._schedule_rekey()

    def after_new_keys(self) -> None:
        """The held packets are out: let the service send again, and read what waited."""
        if self._key_exchange_observer is not None:
            self._key_exchange_observer.key_exchange_finished()
        self._resume_reading()

    def _schedule_rekey(self) -> None:
        if self._rekey_timer is not None and self._rekey_timer.active():
            self._rekey_timer.cancel()
        self._rekey_timer = None
        if self.clock is not None and self.rekey_seconds is not None:
            self._rekey_timer = self.clock.callLater(
                self.rekey_seconds, self._rekey, "time limit reached"
            )

    def _rekey(self, why: str) -> None:
        """Start a key re-exchange (RFC 4253 section 9), unless one is already under way."""
        if self._closing or self._initial_kex or self.key_exchange_running:
            return
        self._log.debug("Re-exchanging keys with {peer}: {why}", peer=self._peer(), why=why)
        # Reset first: sending KEXINIT counts bytes, and Conch marks the exchange as started
        # only after sending it.
        self._bytes_out = self._bytes_in = 0
        self.sendKexInit()

    def connectionLost(self, reason: Any = None) -> None:
        if self._rekey_timer is not None and self._rekey_timer.active():
            self._rekey_timer.cancel()
        self._rekey_timer = None
        super().connectionLost(reason)  # type: ignore[misc]

    # -- errors ------------------------------------------------------------------------------

    def protocol_error(self, message: str) -> None:
        """The peer broke the protocol: one log line, and a disconnect that says why."""
        if self._closing:
            return
        self._log.error(
            "Protocol error from {peer}: {reason}; disconnecting",
            peer=self._peer(),
            reason=message,
        )
        self.sendDisconnect(DISCONNECT_PROTOCOL_ERROR, message.encode("utf-8"))

    def key_exchange_failed(self, why: str) -> None:
        """The peer's key exchange does not hold: one log line, and a disconnect that says why."""
        if self._closing:
            return
        self._log.error("Key exchange with {peer} failed: {why}", peer=self._peer(), why=why)
        self.sendDisconnect(DISCONNECT_KEY_EXCHANGE_FAILED, why.encode("utf-8"))

    def _internal_error(self) -> None:
        """
        Handling the peer's bytes raised something the peer did not cause: a bug of ours.  Log
        it with its traceback (call this from the C{except} block), and disconnect the peer
        without claiming it erred.
        """
        self._log.failure(
            "Bug in rfwd while handling a message from {peer}; disconnecting", peer=self._peer()
        )
        if not self._closing:
            self.sendDisconnect(DISCONNECT_BY_APPLICATION, b"internal error")

    def _peer(self) -> str:
        return describe_address(self.transport.getPeer())
