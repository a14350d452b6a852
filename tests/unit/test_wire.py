"""
Tests for L{twisted_rfwd.protocol.wire}: RFC 4254 payloads as bytes.

Expected encodings are written out by hand from the RFC's field layout (C{string} is a
big-endian uint32 length then the bytes; C{boolean} is one byte; C{uint32} is big-endian), so a
wrong encoding cannot pass by round-tripping through an equally wrong parser.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.trial.unittest import SynchronousTestCase

from twisted_rfwd.errors import MalformedPacket, RemoteProtocolError
from twisted_rfwd.protocol.wire import (
    MSG_CHANNEL_DATA,
    MSG_CHANNEL_OPEN,
    MSG_CHANNEL_OPEN_FAILURE,
    MSG_GLOBAL_REQUEST,
    MSG_REQUEST_FAILURE,
    MSG_REQUEST_SUCCESS,
    OPEN_ADMINISTRATIVELY_PROHIBITED,
    OPEN_CONNECT_FAILED,
    OPEN_RESOURCE_SHORTAGE,
    OPEN_UNKNOWN_CHANNEL_TYPE,
    ChannelOpen,
    ChannelOpenConfirmation,
    ChannelOpenFailure,
    ChannelRequest,
    ForwardedTcpip,
    GlobalRequest,
    Reader,
    TcpipForward,
    pack_channel_data,
    pack_string,
    pack_uint32,
    pack_window_adjust,
    parse_allocated_port,
    parse_channel_data,
    parse_channel_number,
    parse_extended_data,
    parse_window_adjust,
)

# tcpip-forward for localhost:8080, by hand: string "localhost", uint32 8080 (0x1f90).
TCPIP_FORWARD_LOCALHOST_8080 = b"\x00\x00\x00\x09localhost" + b"\x00\x00\x1f\x90"

# forwarded-tcpip: connected "" port 8080, originator "192.0.2.9" port 50000 (0xc350).
FORWARDED_TCPIP = (
    b"\x00\x00\x00\x00" + b"\x00\x00\x1f\x90" + b"\x00\x00\x00\x09192.0.2.9" + b"\x00\x00\xc3\x50"
)


class ConstantsTests(SynchronousTestCase):
    """Message numbers and reason codes are RFC 4254's."""

    def test_message_numbers(self) -> None:
        """A sample of message numbers match RFC 4254 section 9."""
        self.assertEqual(
            (
                MSG_GLOBAL_REQUEST,
                MSG_REQUEST_SUCCESS,
                MSG_REQUEST_FAILURE,
                MSG_CHANNEL_OPEN,
                MSG_CHANNEL_OPEN_FAILURE,
                MSG_CHANNEL_DATA,
            ),
            (80, 81, 82, 90, 92, 94),
        )

    def test_reason_codes(self) -> None:
        """Channel open failure reason codes match RFC 4254 section 5.1."""
        self.assertEqual(
            (
                OPEN_ADMINISTRATIVELY_PROHIBITED,
                OPEN_CONNECT_FAILED,
                OPEN_UNKNOWN_CHANNEL_TYPE,
                OPEN_RESOURCE_SHORTAGE,
            ),
            (1, 2, 3, 4),
        )


class PrimitiveTests(SynchronousTestCase):
    """The SSH data types of RFC 4251 section 5."""

    def test_pack_string(self) -> None:
        """A string is a big-endian uint32 length followed by the bytes."""
        self.assertEqual(pack_string(b"abc"), b"\x00\x00\x00\x03abc")
        self.assertEqual(pack_string(b""), b"\x00\x00\x00\x00")

    def test_pack_uint32(self) -> None:
        """A uint32 is four big-endian bytes."""
        self.assertEqual(pack_uint32(0x01020304), b"\x01\x02\x03\x04")
        self.assertEqual(pack_uint32(0xFFFFFFFF), b"\xff\xff\xff\xff")

    def test_reader_sequence(self) -> None:
        """A Reader reads each type in turn and returns what is left."""
        r = Reader(b"\x00\x00\x00\x2a" + b"\x02" + b"\x00\x00\x00\x02hi" + b"tail", "test")
        self.assertEqual(r.uint32(), 42)
        self.assertIs(r.boolean(), True)
        self.assertEqual(r.text(), "hi")
        self.assertEqual(r.rest(), b"tail")
        self.assertEqual(r.rest(), b"")

    def test_reader_boolean_zero(self) -> None:
        """Only a zero byte is false."""
        self.assertIs(Reader(b"\x00", "test").boolean(), False)

    def test_reader_truncated(self) -> None:
        """Reading past the end raises L{MalformedPacket} naming the message and the offset."""
        r = Reader(b"\x00\x00\x00\x01\x00\x00", "SSH_MSG_TEST")
        r.uint32()
        error = self.assertRaises(MalformedPacket, r.uint32)
        self.assertEqual(str(error), "malformed SSH_MSG_TEST: truncated at byte 4")
        self.assertEqual(error.what, "SSH_MSG_TEST")
        self.assertIsInstance(error, RemoteProtocolError)

    def test_reader_string_length_beyond_payload(self) -> None:
        """A string length larger than the remaining bytes is a truncation."""
        r = Reader(b"\x00\x00\x00\x05abc", "SSH_MSG_TEST")
        self.assertRaises(MalformedPacket, r.string)

    def test_reader_text_not_utf8(self) -> None:
        """Text that is not UTF-8 raises L{MalformedPacket} quoting the bytes."""
        r = Reader(b"\x00\x00\x00\x02\xff\xfe", "SSH_MSG_TEST")
        error = self.assertRaises(MalformedPacket, r.text)
        self.assertEqual(str(error), "malformed SSH_MSG_TEST: string b'\\xff\\xfe' is not UTF-8")


class PayloadTestCase(SynchronousTestCase):
    """Helpers for checking that every short prefix of a payload is rejected."""

    def assertAllPrefixesMalformed(
        self,
        parse: Callable[[bytes], object],
        payload: bytes,
        what: str,
        upto: int | None = None,
    ) -> None:
        """Every proper prefix of C{payload} shorter than C{upto} raises naming C{what}."""
        end = len(payload) if upto is None else upto
        for n in range(end):
            error = self.assertRaises(MalformedPacket, parse, payload[:n])
            self.assertEqual(error.what, what, f"prefix of {n} bytes")
            self.assertTrue(str(error).startswith(f"malformed {what}: "), str(error))


class GlobalRequestTests(PayloadTestCase):
    """C{SSH_MSG_GLOBAL_REQUEST}: string name, boolean want-reply, request-specific data."""

    def test_pack_bytes(self) -> None:
        """The encoding is exactly RFC 4254 section 4's layout."""
        request = GlobalRequest(b"tcpip-forward", True, TCPIP_FORWARD_LOCALHOST_8080)
        self.assertEqual(
            request.pack(),
            b"\x00\x00\x00\x0dtcpip-forward" + b"\x01" + TCPIP_FORWARD_LOCALHOST_8080,
        )

    def test_want_reply_false(self) -> None:
        """A false want-reply is a zero byte."""
        self.assertEqual(GlobalRequest(b"x", False, b"").pack(), b"\x00\x00\x00\x01x\x00")

    def test_round_trip(self) -> None:
        """Parsing a packed request gives it back."""
        for request in [
            GlobalRequest(b"tcpip-forward", True, b"\x00\x00\x00\x00\x00\x00\x00\x00"),
            GlobalRequest(b"keepalive@openssh.com", False, b""),
        ]:
            self.assertEqual(GlobalRequest.parse(request.pack()), request)

    def test_parse_hand_built(self) -> None:
        """A hand-built payload parses into its fields; any non-zero byte is true."""
        request = GlobalRequest.parse(b"\x00\x00\x00\x04name\x07rest")
        self.assertEqual(request, GlobalRequest(b"name", True, b"rest"))

    def test_truncated(self) -> None:
        """A payload cut before the want-reply byte is malformed."""
        self.assertAllPrefixesMalformed(
            GlobalRequest.parse, b"\x00\x00\x00\x04name\x01", "SSH_MSG_GLOBAL_REQUEST"
        )


class TcpipForwardTests(PayloadTestCase):
    """The C{tcpip-forward} body: string address to bind, uint32 port."""

    def test_pack_bytes(self) -> None:
        """The encoding is exactly RFC 4254 section 7.1's layout."""
        self.assertEqual(TcpipForward("localhost", 8080).pack(), TCPIP_FORWARD_LOCALHOST_8080)

    def test_parse_hand_built(self) -> None:
        """A hand-built body parses into its address and port."""
        self.assertEqual(
            TcpipForward.parse(TCPIP_FORWARD_LOCALHOST_8080), TcpipForward("localhost", 8080)
        )

    def test_round_trip(self) -> None:
        """Empty, IPv6 and non-ASCII addresses and ports 0 and 65535 survive a round trip."""
        for forward in [
            TcpipForward("", 0),
            TcpipForward("::1", 65535),
            TcpipForward("h\u00f6st", 22),
        ]:
            self.assertEqual(TcpipForward.parse(forward.pack()), forward)

    def test_utf8_address(self) -> None:
        """Addresses are encoded as UTF-8."""
        self.assertEqual(
            TcpipForward("\u00e9", 1).pack(), b"\x00\x00\x00\x02\xc3\xa9\x00\x00\x00\x01"
        )

    def test_port_out_of_range(self) -> None:
        """A port above 65535 is malformed, named after the request."""
        error = self.assertRaises(
            MalformedPacket, TcpipForward.parse, b"\x00\x00\x00\x00\x00\x01\x00\x00"
        )
        self.assertEqual(str(error), "malformed tcpip-forward request: port 65536 is out of range")

    def test_custom_what(self) -> None:
        """The message name can be given, e.g. for C{cancel-tcpip-forward}."""
        error = self.assertRaises(
            MalformedPacket, TcpipForward.parse, b"\x00\x00\x00", "cancel-tcpip-forward request"
        )
        self.assertEqual(error.what, "cancel-tcpip-forward request")

    def test_not_utf8(self) -> None:
        """A bind address that is not UTF-8 is malformed."""
        error = self.assertRaises(
            MalformedPacket, TcpipForward.parse, b"\x00\x00\x00\x01\x80\x00\x00\x00\x16"
        )
        self.assertIn("is not UTF-8", str(error))
        self.assertEqual(error.what, "tcpip-forward request")

    def test_truncated(self) -> None:
        """Every proper prefix is malformed."""
        self.assertAllPrefixesMalformed(
            TcpipForward.parse, TCPIP_FORWARD_LOCALHOST_8080, "tcpip-forward request"
        )

    def test_length_too_large(self) -> None:
        """An address length pointing past the end is malformed."""
        self.assertRaises(
            MalformedPacket, TcpipForward.parse, b"\x00\x00\x00\x0alocalhost\x00\x00\x1f\x90"
        )


class AllocatedPortTests(SynchronousTestCase):
    """The success reply to C{tcpip-forward} for port 0 carries the allocated port."""

    def test_parse(self) -> None:
        """The uint32 is the port."""
        self.assertEqual(parse_allocated_port(b"\x00\x00\xa4\x10"), 42000)

    def test_zero(self) -> None:
        """Port 0 cannot have been allocated."""
        error = self.assertRaises(MalformedPacket, parse_allocated_port, b"\x00\x00\x00\x00")
        self.assertEqual(
            str(error), "malformed tcpip-forward reply: allocated port 0 is out of range"
        )

    def test_too_large(self) -> None:
        """A port above 65535 is malformed."""
        self.assertRaises(MalformedPacket, parse_allocated_port, b"\x00\x01\x00\x00")

    def test_truncated(self) -> None:
        """A reply shorter than a uint32 is malformed."""
        error = self.assertRaises(MalformedPacket, parse_allocated_port, b"\x00\x00\x50")
        self.assertEqual(error.what, "tcpip-forward reply")


class ForwardedTcpipTests(PayloadTestCase):
    """The C{forwarded-tcpip} open data: connected address/port, originator address/port."""

    def test_pack_bytes(self) -> None:
        """The encoding is exactly RFC 4254 section 7.2's layout."""
        self.assertEqual(ForwardedTcpip("", 8080, "192.0.2.9", 50000).pack(), FORWARDED_TCPIP)

    def test_parse_hand_built(self) -> None:
        """A hand-built payload parses into its four fields."""
        self.assertEqual(
            ForwardedTcpip.parse(FORWARDED_TCPIP), ForwardedTcpip("", 8080, "192.0.2.9", 50000)
        )

    def test_round_trip(self) -> None:
        """IPv6 addresses survive a round trip."""
        value = ForwardedTcpip("::", 443, "2001:db8::1", 65535)
        self.assertEqual(ForwardedTcpip.parse(value.pack()), value)

    def test_truncated(self) -> None:
        """Every proper prefix is malformed."""
        self.assertAllPrefixesMalformed(
            ForwardedTcpip.parse, FORWARDED_TCPIP, "forwarded-tcpip channel open"
        )

    def test_not_utf8(self) -> None:
        """An originator address that is not UTF-8 is malformed."""
        data = (
            b"\x00\x00\x00\x00"
            + b"\x00\x00\x00\x50"
            + b"\x00\x00\x00\x01\xfe"
            + b"\x00\x00\x00\x01"
        )
        error = self.assertRaises(MalformedPacket, ForwardedTcpip.parse, data)
        self.assertEqual(error.what, "forwarded-tcpip channel open")
        self.assertIn("not UTF-8", error.detail)

    def test_huge_length(self) -> None:
        """A length of 2**32-1 is a truncation, not an allocation."""
        self.assertRaises(MalformedPacket, ForwardedTcpip.parse, b"\xff\xff\xff\xffabc")


class ChannelOpenTests(PayloadTestCase):
    """C{SSH_MSG_CHANNEL_OPEN}: type, sender channel, window, max packet, type-specific data."""

    def test_pack_bytes(self) -> None:
        """The encoding is exactly RFC 4254 section 5.1's layout."""
        open_ = ChannelOpen(b"forwarded-tcpip", 3, 0x200000, 0x8000, FORWARDED_TCPIP)
        self.assertEqual(
            open_.pack(),
            b"\x00\x00\x00\x0fforwarded-tcpip"
            + b"\x00\x00\x00\x03"
            + b"\x00\x20\x00\x00"
            + b"\x00\x00\x80\x00"
            + FORWARDED_TCPIP,
        )

    def test_round_trip(self) -> None:
        """Parsing a packed open gives it back, extra data included."""
        for open_ in [
            ChannelOpen(b"forwarded-tcpip", 0xFFFFFFFF, 0, 1, FORWARDED_TCPIP),
            ChannelOpen(b"session", 0, 2**31, 32768, b""),
        ]:
            self.assertEqual(ChannelOpen.parse(open_.pack()), open_)

    def test_truncated(self) -> None:
        """A payload cut anywhere in the fixed fields is malformed."""
        payload = ChannelOpen(b"x", 1, 2, 3, b"").pack()
        self.assertAllPrefixesMalformed(ChannelOpen.parse, payload, "SSH_MSG_CHANNEL_OPEN")


class ChannelOpenConfirmationTests(PayloadTestCase):
    """C{SSH_MSG_CHANNEL_OPEN_CONFIRMATION}: four uint32s."""

    def test_pack_bytes(self) -> None:
        """Recipient, sender, window, max packet, in that order."""
        self.assertEqual(
            ChannelOpenConfirmation(1, 2, 0x10000, 0x8000).pack(),
            b"\x00\x00\x00\x01\x00\x00\x00\x02\x00\x01\x00\x00\x00\x00\x80\x00",
        )

    def test_round_trip(self) -> None:
        """Parsing a packed confirmation gives it back."""
        value = ChannelOpenConfirmation(0xFFFFFFFF, 0, 7, 9)
        self.assertEqual(ChannelOpenConfirmation.parse(value.pack()), value)

    def test_truncated(self) -> None:
        """Every proper prefix is malformed."""
        self.assertAllPrefixesMalformed(
            ChannelOpenConfirmation.parse,
            ChannelOpenConfirmation(1, 2, 3, 4).pack(),
            "SSH_MSG_CHANNEL_OPEN_CONFIRMATION",
        )


class ChannelOpenFailureTests(PayloadTestCase):
    """C{SSH_MSG_CHANNEL_OPEN_FAILURE}: recipient, reason code, description, language tag."""

    def test_pack_bytes(self) -> None:
        """The encoding ends with an empty language tag."""
        self.assertEqual(
            ChannelOpenFailure(7, OPEN_CONNECT_FAILED, "refused").pack(),
            b"\x00\x00\x00\x07\x00\x00\x00\x02\x00\x00\x00\x07refused\x00\x00\x00\x00",
        )

    def test_round_trip(self) -> None:
        """Parsing a packed failure gives it back."""
        value = ChannelOpenFailure(1, OPEN_ADMINISTRATIVELY_PROHIBITED, "not allowed \u2014 no")
        self.assertEqual(ChannelOpenFailure.parse(value.pack()), value)

    def test_missing_language_tag(self) -> None:
        """A failure without the language tag is still understood."""
        payload = b"\x00\x00\x00\x01\x00\x00\x00\x04\x00\x00\x00\x04full"
        self.assertEqual(
            ChannelOpenFailure.parse(payload),
            ChannelOpenFailure(1, OPEN_RESOURCE_SHORTAGE, "full"),
        )

    def test_bad_utf8_description(self) -> None:
        """A description that is not UTF-8 is decoded with replacement characters."""
        payload = b"\x00\x00\x00\x01\x00\x00\x00\x02\x00\x00\x00\x02a\xff"
        self.assertEqual(ChannelOpenFailure.parse(payload).description, "a\ufffd")

    def test_truncated(self) -> None:
        """A payload cut before the end of the description is malformed."""
        payload = ChannelOpenFailure(1, 2, "why").pack()
        self.assertAllPrefixesMalformed(
            ChannelOpenFailure.parse, payload, "SSH_MSG_CHANNEL_OPEN_FAILURE", upto=15
        )


class ChannelRequestTests(PayloadTestCase):
    """C{SSH_MSG_CHANNEL_REQUEST}: recipient, request type, want-reply, type-specific data."""

    PAYLOAD = b"\x00\x00\x00\x05" + b"\x00\x00\x00\x0bexit-status" + b"\x00" + b"\x00\x00\x00\x01"

    def test_parse_hand_built(self) -> None:
        """A hand-built request parses into its fields."""
        self.assertEqual(
            ChannelRequest.parse(self.PAYLOAD),
            ChannelRequest(5, b"exit-status", False, b"\x00\x00\x00\x01"),
        )

    def test_want_reply(self) -> None:
        """A want-reply of 1 is true and no data is an empty remainder."""
        payload = b"\x00\x00\x00\x00" + pack_string(b"keepalive@openssh.com") + b"\x01"
        self.assertEqual(
            ChannelRequest.parse(payload), ChannelRequest(0, b"keepalive@openssh.com", True, b"")
        )

    def test_truncated(self) -> None:
        """A payload cut before the want-reply byte is malformed."""
        self.assertAllPrefixesMalformed(
            ChannelRequest.parse, self.PAYLOAD, "SSH_MSG_CHANNEL_REQUEST", upto=20
        )


class ChannelDataTests(SynchronousTestCase):
    """C{SSH_MSG_CHANNEL_DATA}: recipient channel, then the data as a string."""

    def test_pack_bytes(self) -> None:
        """The data is a length-prefixed string after the channel number."""
        self.assertEqual(pack_channel_data(9, b"hello"), b"\x00\x00\x00\x09\x00\x00\x00\x05hello")

    def test_parse(self) -> None:
        """Parsing returns the channel and the data."""
        self.assertEqual(parse_channel_data(b"\x00\x00\x01\x00\x00\x00\x00\x03abc"), (256, b"abc"))

    def test_empty_data(self) -> None:
        """Zero bytes of data are allowed."""
        self.assertEqual(parse_channel_data(pack_channel_data(1, b"")), (1, b""))

    def test_round_trip(self) -> None:
        """Binary data, including NULs, round-trips."""
        data = bytes(range(256)) * 3
        self.assertEqual(
            parse_channel_data(pack_channel_data(0xFFFFFFFF, data)), (0xFFFFFFFF, data)
        )

    def test_shorter_than_header(self) -> None:
        """Fewer than eight bytes is malformed."""
        error = self.assertRaises(MalformedPacket, parse_channel_data, b"\x00\x00\x00\x01\x00")
        self.assertEqual(str(error), "malformed SSH_MSG_CHANNEL_DATA: shorter than its header")

    def test_length_too_large(self) -> None:
        """A length field larger than the data that follows is malformed."""
        error = self.assertRaises(
            MalformedPacket, parse_channel_data, b"\x00\x00\x00\x01\x00\x00\x00\x04abc"
        )
        self.assertEqual(
            str(error), "malformed SSH_MSG_CHANNEL_DATA: length field 4 but 3 bytes follow"
        )

    def test_length_too_small(self) -> None:
        """A length field smaller than the data that follows is malformed too."""
        error = self.assertRaises(
            MalformedPacket, parse_channel_data, b"\x00\x00\x00\x01\x00\x00\x00\x02abc"
        )
        self.assertEqual(error.detail, "length field 2 but 3 bytes follow")


class OtherChannelMessageTests(SynchronousTestCase):
    """Window adjust, extended data and the bare channel number."""

    def test_window_adjust(self) -> None:
        """A window adjust is recipient then increment; it round-trips."""
        packed = pack_window_adjust(3, 0x10000)
        self.assertEqual(packed, b"\x00\x00\x00\x03\x00\x01\x00\x00")
        self.assertEqual(parse_window_adjust(packed), (3, 0x10000))

    def test_window_adjust_truncated(self) -> None:
        """A window adjust without its increment is malformed."""
        error = self.assertRaises(MalformedPacket, parse_window_adjust, b"\x00\x00\x00\x03\x00")
        self.assertEqual(error.what, "SSH_MSG_CHANNEL_WINDOW_ADJUST")

    def test_extended_data(self) -> None:
        """Extended data is recipient, type code, then a string."""
        payload = b"\x00\x00\x00\x02\x00\x00\x00\x01\x00\x00\x00\x03err"
        self.assertEqual(parse_extended_data(payload), (2, 1, b"err"))

    def test_extended_data_truncated(self) -> None:
        """Extended data whose string runs past the end is malformed."""
        payload = b"\x00\x00\x00\x02\x00\x00\x00\x01\x00\x00\x00\x04err"
        error = self.assertRaises(MalformedPacket, parse_extended_data, payload)
        self.assertEqual(error.what, "SSH_MSG_CHANNEL_EXTENDED_DATA")

    def test_channel_number(self) -> None:
        """The leading uint32 is the channel, whatever follows."""
        self.assertEqual(parse_channel_number(b"\x00\x00\x00\x2aXYZ", "SSH_MSG_CHANNEL_EOF"), 42)

    def test_channel_number_truncated(self) -> None:
        """A per-channel message shorter than a uint32 is malformed, named as given."""
        error = self.assertRaises(
            MalformedPacket, parse_channel_number, b"", "SSH_MSG_CHANNEL_CLOSE"
        )
        self.assertEqual(str(error), "malformed SSH_MSG_CHANNEL_CLOSE: truncated at byte 0")
