"""
Tests for L{twisted_rfwd.protocol.socks}: the SOCKS4, SOCKS4A and SOCKS5 handshakes rfwd-client
reads for a remote dynamic forward, and C{PermitRemoteOpen}.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from twisted_rfwd.client.ssh_config import CommandLine, Settings, dump, resolve
from twisted_rfwd.errors import ConfigError
from twisted_rfwd.protocol.socks import (
    MAX_NAME,
    SOCKS5_NOT_ALLOWED,
    AddressKind,
    RemoteOpenPolicy,
    SocksError,
    SocksParser,
    SocksRequest,
    failure_reply,
    success_reply,
)
from twisted_rfwd.protocol.ssh_config import Local, Sources
from twisted_rfwd.tap.client import _defaults

SOCKS5_GREETING = b"\x05\x01\x00"


def socks5_name(name: bytes, port: int) -> bytes:
    return b"\x05\x01\x00\x03" + bytes([len(name)]) + name + struct.pack("!H", port)


def socks4(ip: bytes, port: int, user: bytes = b"") -> bytes:
    return b"\x04\x01" + struct.pack("!H", port) + ip + user + b"\0"


def feed_bytewise(parser: SocksParser, data: bytes) -> tuple[bytes, SocksRequest | None]:
    """Feed C{data} one byte at a time; what was answered, and the request if it completed."""
    answered = b""
    for i in range(len(data)):
        answer, request = parser.receive(data[i : i + 1])
        answered += answer
        if request is not None:
            return answered, request
    return answered, None


class Socks5Tests(SynchronousTestCase):
    """SOCKS5 (RFC 1928): method choice, then CONNECT to an IPv4, IPv6 or named host."""

    def test_name_in_pieces(self) -> None:
        """A request cut into single bytes still parses; the method choice comes after the
        greeting, before the request is complete."""
        parser = SocksParser()
        answer, request = feed_bytewise(parser, SOCKS5_GREETING)
        self.assertEqual((answer, request), (b"\x05\x00", None))
        answer, request = feed_bytewise(parser, socks5_name(b"example.com", 443))
        self.assertEqual(answer, b"")
        self.assertEqual(request, SocksRequest(5, "example.com", 443, AddressKind.NAME))

    def test_ipv4_all_at_once_with_leftover(self) -> None:
        """Greeting, request and the application's first bytes in one piece: the bytes after
        the request are kept for the destination."""
        parser = SocksParser()
        data = SOCKS5_GREETING + b"\x05\x01\x00\x01\x7f\x00\x00\x01\x1f\x90" + b"GET /"
        answer, request = parser.receive(data)
        self.assertEqual(answer, b"\x05\x00")
        self.assertEqual(request, SocksRequest(5, "127.0.0.1", 8080, AddressKind.IPV4))
        self.assertEqual(parser.leftover, b"GET /")

    def test_ipv6(self) -> None:
        """An IPv6 address comes out in its compressed text form."""
        parser = SocksParser()
        raw = b"\x20\x01\x0d\xb8" + b"\0" * 11 + b"\x05"
        _, request = parser.receive(SOCKS5_GREETING + b"\x05\x01\x00\x04" + raw + b"\x00\x16")
        self.assertEqual(request, SocksRequest(5, "2001:db8::5", 22, AddressKind.IPV6))

    def test_several_methods(self) -> None:
        """No authentication is chosen when offered among others."""
        answer, request = SocksParser().receive(b"\x05\x03\x02\x01\x00")
        self.assertEqual((answer, request), (b"\x05\x00", None))

    def test_authentication_only(self) -> None:
        """A client that offers only authenticated methods gets 0xFF, and the handshake ends."""
        e = self.assertRaises(SocksError, SocksParser().receive, b"\x05\x01\x02")
        self.assertEqual(e.reply, b"\x05\xff")

    def test_not_connect(self) -> None:
        """BIND and UDP ASSOCIATE are refused with "command not supported" (7)."""
        parser = SocksParser()
        parser.receive(SOCKS5_GREETING)
        e = self.assertRaises(
            SocksError, parser.receive, b"\x05\x02\x00\x01\x7f\x00\x00\x01\x00\x50"
        )
        self.assertEqual(e.reply[:2], b"\x05\x07")

    def test_unknown_address_type(self) -> None:
        """An address type other than 1, 3 and 4 is refused with 8."""
        parser = SocksParser()
        parser.receive(SOCKS5_GREETING)
        e = self.assertRaises(SocksError, parser.receive, b"\x05\x01\x00\x09\x00")
        self.assertEqual(e.reply[:2], b"\x05\x08")

    def test_bad_request_version(self) -> None:
        """A request whose version byte is not 5 is refused with a general failure."""
        parser = SocksParser()
        parser.receive(SOCKS5_GREETING)
        e = self.assertRaises(SocksError, parser.receive, b"\x04\x01\x00\x03\x01a\x00\x50")
        self.assertEqual(e.reply[:2], b"\x05\x01")

    def test_empty_or_binary_name(self) -> None:
        """A zero-length host name, or one with control bytes, is refused."""
        for name in (b"", b"a\0b", b"a b"):
            parser = SocksParser()
            parser.receive(SOCKS5_GREETING)
            e = self.assertRaises(SocksError, parser.receive, socks5_name(name, 80))
            self.assertEqual(e.reply[:2], b"\x05\x01")

    def test_longest_name(self) -> None:
        """A 255-byte name (the most its length byte allows) is accepted."""
        parser = SocksParser()
        parser.receive(SOCKS5_GREETING)
        _, request = parser.receive(socks5_name(b"a" * 255, 80))
        assert request is not None
        self.assertEqual(len(request.host), 255)


class Socks4Tests(SynchronousTestCase):
    """SOCKS4 and SOCKS4A: a user id, and for 4A a host name after it."""

    def test_ipv4_in_pieces(self) -> None:
        """A SOCKS4 request with a user id, a byte at a time; nothing is answered early."""
        answer, request = feed_bytewise(SocksParser(), socks4(b"\x7f\x00\x00\x01", 80, b"bob"))
        self.assertEqual(answer, b"")
        self.assertEqual(request, SocksRequest(4, "127.0.0.1", 80, AddressKind.IPV4))

    def test_socks4a_name(self) -> None:
        """0.0.0.x with x non-zero: the host name follows the user id."""
        parser = SocksParser()
        data = socks4(b"\x00\x00\x00\x01", 8080, b"u") + b"localhost\0" + b"extra"
        answer, request = feed_bytewise(parser, data[:-5])
        self.assertEqual(request, SocksRequest(4, "localhost", 8080, AddressKind.NAME))
        self.assertEqual(answer, b"")
        parser2 = SocksParser()
        _, request = parser2.receive(data)
        self.assertEqual(parser2.leftover, b"extra")

    def test_user_id_too_long(self) -> None:
        """A user id with no NUL within 255 bytes is refused with 0x5B, not buffered on."""
        parser = SocksParser()
        parser.receive(b"\x04\x01\x00\x50\x7f\x00\x00\x01")
        e = self.assertRaises(SocksError, parser.receive, b"u" * (MAX_NAME + 1))
        self.assertEqual(e.reply[:2], b"\x00\x5b")

    def test_name_too_long(self) -> None:
        """A SOCKS4A host name longer than 255 bytes is refused."""
        parser = SocksParser()
        parser.receive(socks4(b"\x00\x00\x00\x07", 80))
        e = self.assertRaises(SocksError, parser.receive, b"h" * 300)
        self.assertEqual(e.reply[:2], b"\x00\x5b")

    def test_not_connect(self) -> None:
        """SOCKS4 BIND is refused with 0x5B."""
        e = self.assertRaises(SocksError, SocksParser().receive, b"\x04\x02\x00\x50\x7f\0\0\1\0")
        self.assertEqual(e.reply[:2], b"\x00\x5b")


class VersionAndReplyTests(SynchronousTestCase):
    """The first byte picks the version; replies have each version's layout."""

    def test_bad_version(self) -> None:
        """Anything but 4 or 5 (here an HTTP request) ends the handshake with no reply."""
        e = self.assertRaises(SocksError, SocksParser().receive, b"GET / HTTP/1.1\r\n")
        self.assertEqual(e.reply, b"")

    def test_data_after_request(self) -> None:
        """The parser takes one request; the caller keeps what follows."""
        parser = SocksParser()
        parser.receive(socks4(b"\x7f\0\0\1", 80))
        self.assertRaises(SocksError, parser.receive, b"more")

    def test_replies(self) -> None:
        """SOCKS5 replies carry the bound address; SOCKS4's are 8 bytes of 0x5A or 0x5B."""
        self.assertEqual(
            success_reply(5, ("127.0.0.1", 4321)), b"\x05\x00\x00\x01\x7f\x00\x00\x01\x10\xe1"
        )
        self.assertEqual(success_reply(5, ("::1", 1))[:4], b"\x05\x00\x00\x04")
        self.assertEqual(len(success_reply(5, ("::1", 1))), 22)
        self.assertEqual(failure_reply(5, SOCKS5_NOT_ALLOWED)[:2], b"\x05\x02")
        self.assertEqual(success_reply(4), b"\x00\x5a" + b"\0" * 6)
        self.assertEqual(failure_reply(4, SOCKS5_NOT_ALLOWED), b"\x00\x5b" + b"\0" * 6)


class RemoteOpenPolicyTests(SynchronousTestCase):
    """C{PermitRemoteOpen}, as ssh_config(5) describes it."""

    def test_any(self) -> None:
        """The default, and C{any}, allow every destination."""
        for policy in (RemoteOpenPolicy(), RemoteOpenPolicy.parse(["any"])):
            self.assertTrue(policy.permits("example.com", 1))
        self.assertEqual(RemoteOpenPolicy().words, ("any",))

    def test_none(self) -> None:
        """C{none} allows nothing."""
        policy = RemoteOpenPolicy.parse(["none"])
        self.assertFalse(policy.permits("127.0.0.1", 80))
        self.assertEqual(policy.words, ("none",))

    def test_exact_entries(self) -> None:
        """Hosts compare exactly (no lookup, no case folding); the port must match too."""
        policy = RemoteOpenPolicy.parse(["localhost:80", "[::1]:22", "10.0.0.1:443"])
        self.assertTrue(policy.permits("localhost", 80))
        self.assertFalse(policy.permits("localhost", 81))
        self.assertFalse(policy.permits("LOCALHOST", 80))
        self.assertFalse(policy.permits("127.0.0.1", 80))
        self.assertTrue(policy.permits("::1", 22))
        self.assertTrue(policy.permits("10.0.0.1", 443))

    def test_wildcards(self) -> None:
        """C{*} for the host is any host, for the port any port; nothing else is a pattern."""
        policy = RemoteOpenPolicy.parse(["*:8080", "db.internal:*", "web*:80"])
        self.assertTrue(policy.permits("anything", 8080))
        self.assertFalse(policy.permits("anything", 8081))
        self.assertTrue(policy.permits("db.internal", 5432))
        self.assertFalse(policy.permits("web1", 80))
        self.assertTrue(policy.permits("web*", 80))
        self.assertTrue(RemoteOpenPolicy.parse(["*:*"]).permits("x", 1))

    def test_bad_entries(self) -> None:
        """Errors say what is wrong with which entry, as ssh refuses them."""
        cases = {
            ("any", "a:1"): "must appear alone",
            ("a:1", "none"): "must appear alone",
            ("nohost",): "not host:port",
            (":80",): "missing host",
            ("a:0",): "bad port number",
            ("a:http",): "bad port number",
            ("::1:22",): "bracket IPv6",
            ("[::1]",): "not host:port",
        }
        for words, text in cases.items():
            e = self.assertRaises(ConfigError, RemoteOpenPolicy.parse, list(words))
            self.assertIn(text, str(e))


class ClientSettingsTests(SynchronousTestCase):
    """C{-R [bind:]port} and C{-o PermitRemoteOpen} reach rfwd-client's settings and C{-G}."""

    def resolve(self, *options: str, forwards: Sequence[str] = ("8080",)) -> Settings:
        root = Path(self.mktemp()).resolve()
        (root / ".ssh").mkdir(parents=True)
        local = Local(user="me", home=str(root), uid=1000, hostname="box", environ={})
        sources = Sources(
            config_file="none",
            user_config=str(root / ".ssh" / "config"),
            system_config=str(root / "ssh_config"),
            user_dir=str(root / ".ssh"),
            system_dir=str(root),
        )
        command = CommandLine("t", options=list(options), forwards=list(forwards))
        return resolve(command, local, sources)

    def test_dynamic_forward_accepted(self) -> None:
        """A dynamic forward is no longer refused, and -G prints it as ssh does."""
        s = self.resolve(forwards=("8080", "[::1]:0"))
        self.assertEqual([f.dynamic for f in s.forwards], [True, True])
        lines = dump(s, _defaults())
        self.assertIn("remoteforward 8080 [socks]:0", lines)
        self.assertIn("remoteforward [::1]:0 [socks]:0", lines)
        self.assertIn("permitremoteopen any", lines)

    def test_permit_remote_open(self) -> None:
        """The option is parsed into the policy, and -G prints its words."""
        s = self.resolve("PermitRemoteOpen=127.0.0.1:80 *:8080")
        self.assertTrue(s.permit_remote_open.permits("127.0.0.1", 80))
        self.assertFalse(s.permit_remote_open.permits("127.0.0.1", 81))
        self.assertIn("permitremoteopen 127.0.0.1:80 *:8080", dump(s, _defaults()))

    def test_bad_permit_remote_open(self) -> None:
        """A bad entry is an error naming where it came from."""
        e = self.assertRaises(ConfigError, self.resolve, "PermitRemoteOpen=host")
        self.assertEqual(
            str(e),
            "command-line line 0: PermitRemoteOpen: 'host' is not host:port "
            "(bracket IPv6 addresses)",
        )


class OneChunkTests(SynchronousTestCase):
    """A greeting and a bad request in one piece: the method choice still precedes the error."""

    def test_method_choice_kept(self) -> None:
        """SOCKS5 BIND sent with the greeting: the reply is the choice, then error 7."""
        e = self.assertRaises(
            SocksError, SocksParser().receive, SOCKS5_GREETING + b"\x05\x02\x00\x01\0\0\0\0\0\0"
        )
        self.assertEqual(e.reply[:4], b"\x05\x00\x05\x07")
