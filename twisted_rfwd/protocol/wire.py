"""
SSH connection-protocol payloads (RFC 4254) as pure functions over bytes.

Parsing never trusts a length: every read is bounds-checked and a short or garbled payload raises
L{MalformedPacket} naming the message, so the caller can disconnect with a precise reason.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from twisted_rfwd.errors import MalformedPacket

# Connection protocol message numbers (RFC 4254 section 9).
MSG_GLOBAL_REQUEST = 80
MSG_REQUEST_SUCCESS = 81
MSG_REQUEST_FAILURE = 82
MSG_CHANNEL_OPEN = 90
MSG_CHANNEL_OPEN_CONFIRMATION = 91
MSG_CHANNEL_OPEN_FAILURE = 92
MSG_CHANNEL_WINDOW_ADJUST = 93
MSG_CHANNEL_DATA = 94
MSG_CHANNEL_EXTENDED_DATA = 95
MSG_CHANNEL_EOF = 96
MSG_CHANNEL_CLOSE = 97
MSG_CHANNEL_REQUEST = 98
MSG_CHANNEL_SUCCESS = 99
MSG_CHANNEL_FAILURE = 100

# Channel open failure reason codes (RFC 4254 section 5.1).
OPEN_ADMINISTRATIVELY_PROHIBITED = 1
OPEN_CONNECT_FAILED = 2
OPEN_UNKNOWN_CHANNEL_TYPE = 3
OPEN_RESOURCE_SHORTAGE = 4

_UINT32 = struct.Struct(">L")
_UINT64 = struct.Struct(">Q")
_UINT32x2 = struct.Struct(">LL")
_UINT32x3 = struct.Struct(">LLL")
_UINT32x4 = struct.Struct(">LLLL")

# SSH_MSG_CHANNEL_DATA is framed here and nowhere else: its message number, recipient channel
# and data length, which the packet layer seals in front of the data without building a payload.
CHANNEL_DATA_HEADER = struct.Struct(">BLL")


def pack_string(data: bytes) -> bytes:
    """An SSH C{string}: uint32 length, then the bytes."""
    return _UINT32.pack(len(data)) + data


def pack_uint32(value: int) -> bytes:
    return _UINT32.pack(value)


class Reader:
    """Reads SSH wire types from one payload, raising L{MalformedPacket} on any shortfall."""

    __slots__ = ("_data", "_offset", "_what")

    def __init__(self, data: bytes, what: str) -> None:
        self._data = data
        self._offset = 0
        self._what = what

    def _take(self, n: int) -> bytes:
        start = self._offset
        end = start + n
        if end > len(self._data):
            raise MalformedPacket(self._what, f"truncated at byte {start}")
        self._offset = end
        return self._data[start:end]

    def uint32(self) -> int:
        start = self._offset
        if start + 4 > len(self._data):
            raise MalformedPacket(self._what, f"truncated at byte {start}")
        self._offset = start + 4
        value: int = _UINT32.unpack_from(self._data, start)[0]
        return value

    def boolean(self) -> bool:
        return self._take(1) != b"\x00"

    def string(self) -> bytes:
        return self._take(self.uint32())

    def text(self) -> str:
        raw = self.string()
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedPacket(self._what, f"string {raw[:40]!r} is not UTF-8") from None

    def rest(self) -> bytes:
        chunk = self._data[self._offset :]
        self._offset = len(self._data)
        return chunk

    def uint64(self) -> int:
        value: int = _UINT64.unpack(self._take(8))[0]
        return value

    @property
    def offset(self) -> int:
        """How many bytes have been read."""
        return self._offset

    @property
    def remaining(self) -> int:
        """How many bytes are left."""
        return len(self._data) - self._offset


@dataclass(frozen=True)
class GlobalRequest:
    name: bytes
    want_reply: bool
    data: bytes

    @classmethod
    def parse(cls, payload: bytes) -> GlobalRequest:
        r = Reader(payload, "SSH_MSG_GLOBAL_REQUEST")
        return cls(r.string(), r.boolean(), r.rest())

    def pack(self) -> bytes:
        return pack_string(self.name) + (b"\x01" if self.want_reply else b"\x00") + self.data


@dataclass(frozen=True)
class TcpipForward:
    """The body of C{tcpip-forward} and C{cancel-tcpip-forward}: bind address and port."""

    address: str
    port: int

    @classmethod
    def parse(cls, data: bytes, what: str = "tcpip-forward request") -> TcpipForward:
        r = Reader(data, what)
        address = r.text()
        port = r.uint32()
        if port > 65535:
            raise MalformedPacket(what, f"port {port} is out of range")
        return cls(address, port)

    def pack(self) -> bytes:
        return pack_string(self.address.encode("utf-8")) + pack_uint32(self.port)


def parse_allocated_port(data: bytes) -> int:
    """The uint32 port in the success reply to a C{tcpip-forward} for port 0."""
    port = Reader(data, "tcpip-forward reply").uint32()
    if not 1 <= port <= 65535:
        raise MalformedPacket("tcpip-forward reply", f"allocated port {port} is out of range")
    return port


@dataclass(frozen=True)
class ForwardedTcpip:
    """
    The type-specific part of a C{forwarded-tcpip} channel open: which forward (the address string
    the client asked for and the real port) and who connected (numeric address and port).
    """

    connected_address: str
    connected_port: int
    originator_address: str
    originator_port: int

    @classmethod
    def parse(cls, data: bytes) -> ForwardedTcpip:
        r = Reader(data, "forwarded-tcpip channel open")
        return cls(r.text(), r.uint32(), r.text(), r.uint32())

    def pack(self) -> bytes:
        return (
            pack_string(self.connected_address.encode("utf-8"))
            + pack_uint32(self.connected_port)
            + pack_string(self.originator_address.encode("utf-8"))
            + pack_uint32(self.originator_port)
        )


def _path(raw: bytes) -> str:
    """A Unix socket path off the wire: any bytes but NUL, kept exactly (surrogateescape)."""
    return raw.decode("utf-8", "surrogateescape")


def _pack_path(path: str) -> bytes:
    return pack_string(path.encode("utf-8", "surrogateescape"))


@dataclass(frozen=True)
class StreamlocalForward:
    """
    The body of C{streamlocal-forward@openssh.com} and C{cancel-streamlocal-forward@openssh.com}
    (OpenSSH's PROTOCOL 2.4): the Unix socket path the server is to listen on.
    """

    path: str

    @classmethod
    def parse(
        cls, data: bytes, what: str = "streamlocal-forward@openssh.com request"
    ) -> StreamlocalForward:
        return cls(_path(Reader(data, what).string()))

    def pack(self) -> bytes:
        return _pack_path(self.path)


@dataclass(frozen=True)
class ForwardedStreamlocal:
    """
    The type-specific part of a C{forwarded-streamlocal@openssh.com} channel open: the socket
    path of the forward, and a reserved string (sent empty, ignored when received).
    """

    path: str
    reserved: bytes = b""

    @classmethod
    def parse(cls, data: bytes) -> ForwardedStreamlocal:
        r = Reader(data, "forwarded-streamlocal@openssh.com channel open")
        path = _path(r.string())
        # OpenSSH reads the reserved string; older peers might leave it out.
        reserved = r.string() if r.remaining else b""
        return cls(path, reserved)

    def pack(self) -> bytes:
        return _pack_path(self.path) + pack_string(self.reserved)


@dataclass(frozen=True)
class ChannelOpen:
    channel_type: bytes
    sender_channel: int
    initial_window: int
    max_packet: int
    extra: bytes

    @classmethod
    def parse(cls, payload: bytes) -> ChannelOpen:
        r = Reader(payload, "SSH_MSG_CHANNEL_OPEN")
        return cls(r.string(), r.uint32(), r.uint32(), r.uint32(), r.rest())

    def pack(self) -> bytes:
        return (
            pack_string(self.channel_type)
            + _UINT32x3.pack(self.sender_channel, self.initial_window, self.max_packet)
            + self.extra
        )


@dataclass(frozen=True)
class ChannelOpenConfirmation:
    recipient_channel: int
    sender_channel: int
    initial_window: int
    max_packet: int

    @classmethod
    def parse(cls, payload: bytes) -> ChannelOpenConfirmation:
        r = Reader(payload, "SSH_MSG_CHANNEL_OPEN_CONFIRMATION")
        return cls(r.uint32(), r.uint32(), r.uint32(), r.uint32())

    def pack(self) -> bytes:
        return _UINT32x4.pack(
            self.recipient_channel, self.sender_channel, self.initial_window, self.max_packet
        )


@dataclass(frozen=True)
class ChannelOpenFailure:
    recipient_channel: int
    reason_code: int
    description: str

    @classmethod
    def parse(cls, payload: bytes) -> ChannelOpenFailure:
        r = Reader(payload, "SSH_MSG_CHANNEL_OPEN_FAILURE")
        recipient, code = r.uint32(), r.uint32()
        description = r.string().decode("utf-8", "replace")
        return cls(recipient, code, description)

    def pack(self) -> bytes:
        return (
            _UINT32x2.pack(self.recipient_channel, self.reason_code)
            + pack_string(self.description.encode("utf-8"))
            + pack_string(b"")
        )


@dataclass(frozen=True)
class ChannelRequest:
    recipient_channel: int
    name: bytes
    want_reply: bool
    data: bytes

    @classmethod
    def parse(cls, payload: bytes) -> ChannelRequest:
        r = Reader(payload, "SSH_MSG_CHANNEL_REQUEST")
        return cls(r.uint32(), r.string(), r.boolean(), r.rest())


def parse_channel_number(payload: bytes, what: str) -> int:
    """The recipient channel that starts every per-channel message."""
    return Reader(payload, what).uint32()


def parse_window_adjust(payload: bytes) -> tuple[int, int]:
    r = Reader(payload, "SSH_MSG_CHANNEL_WINDOW_ADJUST")
    return r.uint32(), r.uint32()


def pack_window_adjust(recipient: int, increment: int) -> bytes:
    return _UINT32x2.pack(recipient, increment)


def pack_channel_data(recipient: int, data: bytes | memoryview) -> bytes:
    """The payload of C{SSH_MSG_CHANNEL_DATA} (after its message number)."""
    return _UINT32x2.pack(recipient, len(data)) + data


def pack_channel_data_header(recipient: int, length: int) -> bytes:
    """
    Message number, recipient and length of a C{SSH_MSG_CHANNEL_DATA} carrying C{length} bytes:
    what precedes the data in the packet, for a sealer that takes the data separately.
    """
    return CHANNEL_DATA_HEADER.pack(MSG_CHANNEL_DATA, recipient, length)


def parse_channel_data(payload: bytes) -> tuple[int, memoryview]:
    """Channel number and data of C{SSH_MSG_CHANNEL_DATA}; the hot path, so no Reader."""
    return parse_channel_data_in(payload, 0, len(payload))


def parse_channel_data_in(buffer: bytes, start: int, end: int) -> tuple[int, memoryview]:
    """
    Channel number and data of the C{SSH_MSG_CHANNEL_DATA} body C{buffer[start:end]} (after the
    message number): the packet layer's plaintext.  The data is a view into it, not a copy: the
    socket write it goes to takes a view, and only what has to wait is copied.
    """
    if end - start < 8:
        raise MalformedPacket("SSH_MSG_CHANNEL_DATA", "shorter than its header")
    recipient, length = _UINT32x2.unpack_from(buffer, start)
    if length != end - start - 8:
        raise MalformedPacket(
            "SSH_MSG_CHANNEL_DATA", f"length field {length} but {end - start - 8} bytes follow"
        )
    return recipient, memoryview(buffer)[start + 8 : end]


def parse_extended_data(payload: bytes) -> tuple[int, int, bytes]:
    r = Reader(payload, "SSH_MSG_CHANNEL_EXTENDED_DATA")
    return r.uint32(), r.uint32(), r.string()
