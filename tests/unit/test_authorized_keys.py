"""
Tests for L{twisted_rfwd.protocol.authorized_keys}: OpenSSH C{authorized_keys} lines and options.
"""

from __future__ import annotations

import base64
import os
import time
from datetime import datetime, timedelta, timezone

from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from twisted.conch.ssh.keys import Key
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from twisted_rfwd.protocol.policy import ListenPermission
from twisted_rfwd.server.authorized_keys import (
    AuthorizedKey,
    KeyOptions,
    matches_from,
    parse_authorized_keys,
)

PATH = "/home/u/.ssh/authorized_keys"

_ED25519 = Key(ed25519.Ed25519PrivateKey.generate()).public()
_ECDSA = Key(ec.generate_private_key(ec.SECP256R1())).public()
_RSA = Key(rsa.generate_private_key(public_exponent=65537, key_size=2048)).public()
_OTHER = Key(ed25519.Ed25519PrivateKey.generate()).public()


def key_text(key: Key, comment: str = "") -> str:
    """The OpenSSH public-key line for C{key}, with an optional comment."""
    text: str = key.toString("OPENSSH").decode("ascii")
    return f"{text} {comment}" if comment else text


ED25519 = key_text(_ED25519, "alice@example")
ECDSA = key_text(_ECDSA)
RSA = key_text(_RSA, "bob with spaces in comment")


def parse(*lines: str) -> tuple[list[AuthorizedKey], list[str]]:
    """Parse the given lines as one file at L{PATH}."""
    return parse_authorized_keys("\n".join(lines).encode("utf-8") + b"\n", PATH)


class ParseTests(SynchronousTestCase):
    """Whole files: which lines become keys, and warnings for the others."""

    def parse_one(self, line: str) -> KeyOptions:
        """Parse a single line that must yield one key and no warnings; return its options."""
        keys, warnings = parse(line)
        self.assertEqual(warnings, [])
        self.assertEqual(len(keys), 1)
        return keys[0].options

    def test_plain_lines(self) -> None:
        """Ed25519, ECDSA and RSA lines load with default options, in order."""
        keys, warnings = parse(ED25519, ECDSA, RSA)
        self.assertEqual(warnings, [])
        self.assertEqual([k.key for k in keys], [_ED25519, _ECDSA, _RSA])
        self.assertEqual(
            [k.key.sshType() for k in keys], [b"ssh-ed25519", b"ecdsa-sha2-nistp256", b"ssh-rsa"]
        )
        for entry in keys:
            self.assertEqual(entry.options, KeyOptions())
            self.assertTrue(entry.options.port_forwarding)
            self.assertIsNone(entry.options.permit_listen)
            self.assertIsNone(entry.options.from_patterns)
            self.assertIsNone(entry.options.expiry)

    def test_matches_blob(self) -> None:
        """An entry matches its own key's blob and no other."""
        (entry,), _ = parse(ED25519)
        self.assertTrue(entry.matches(_ED25519.blob()))
        self.assertFalse(entry.matches(_OTHER.blob()))
        self.assertFalse(entry.matches(_RSA.blob()))

    def test_comments_and_blank_lines(self) -> None:
        """Comments and blank lines are skipped silently but still count as lines."""
        keys, warnings = parse("# a comment", "", "   ", "\t# indented comment", ECDSA)
        self.assertEqual(warnings, [])
        self.assertEqual([k.source for k in keys], [f"{PATH} line 5"])

    def test_crlf_and_indentation(self) -> None:
        """CRLF line endings and leading whitespace are tolerated."""
        text = f"  {ED25519}\r\n\r\n{RSA}\r\n".encode("ascii")
        keys, warnings = parse_authorized_keys(text, PATH)
        self.assertEqual(warnings, [])
        self.assertEqual([k.key for k in keys], [_ED25519, _RSA])
        self.assertEqual([k.source for k in keys], [f"{PATH} line 1", f"{PATH} line 3"])

    def test_empty_file(self) -> None:
        """An empty file has no keys and no warnings."""
        self.assertEqual(parse_authorized_keys(b"", PATH), ([], []))

    def test_restrict(self) -> None:
        """C{restrict} disables port forwarding."""
        options = self.parse_one(f"restrict {ED25519}")
        self.assertFalse(options.port_forwarding)
        self.assertFalse(options.allows_listen("localhost", 8080))

    def test_restrict_port_forwarding(self) -> None:
        """C{restrict,port-forwarding} re-enables forwarding, in either order."""
        self.assertTrue(self.parse_one(f"restrict,port-forwarding {ED25519}").port_forwarding)
        self.assertTrue(self.parse_one(f"port-forwarding,restrict {ED25519}").port_forwarding)

    def test_no_port_forwarding(self) -> None:
        """C{no-port-forwarding} disables forwarding, even with C{port-forwarding} too."""
        options = self.parse_one(f"no-port-forwarding {RSA}")
        self.assertFalse(options.port_forwarding)
        self.assertFalse(options.allows_listen("localhost", 1))
        self.assertFalse(
            self.parse_one(f"no-port-forwarding,port-forwarding {RSA}").port_forwarding
        )

    def test_option_names_case_insensitive(self) -> None:
        """Option names are matched without regard to case, as sshd does."""
        self.assertFalse(self.parse_one(f"No-Port-Forwarding {ED25519}").port_forwarding)

    def test_permitlisten(self) -> None:
        """Several C{permitlisten} options are all kept, and only they are allowed."""
        options = self.parse_one(
            f'permitlisten="localhost:8080",permitlisten="9000",permitlisten="[::1]:*" {ED25519}'
        )
        self.assertEqual(
            options.permit_listen,
            (
                ListenPermission("localhost", 8080),
                ListenPermission(None, 9000),
                ListenPermission("::1", None),
            ),
        )
        self.assertTrue(options.allows_listen("localhost", 8080))
        self.assertFalse(options.allows_listen("127.0.0.1", 8080))
        self.assertFalse(options.allows_listen("localhost", 8081))
        self.assertTrue(options.allows_listen("", 9000))
        self.assertTrue(options.allows_listen("::1", 0))
        self.assertFalse(options.allows_listen("localhost", 0))

    def test_permitlisten_with_restrict(self) -> None:
        """C{restrict} still wins over C{permitlisten} unless forwarding is re-enabled."""
        restricted = self.parse_one(f'restrict,permitlisten="8080" {ED25519}')
        self.assertFalse(restricted.allows_listen("localhost", 8080))
        enabled = self.parse_one(f'restrict,port-forwarding,permitlisten="8080" {ED25519}')
        self.assertTrue(enabled.allows_listen("localhost", 8080))
        self.assertFalse(enabled.allows_listen("localhost", 8081))

    def test_no_permitlisten_allows_all(self) -> None:
        """Without C{permitlisten} every listen is allowed."""
        self.assertTrue(KeyOptions().allows_listen("0.0.0.0", 0))

    def test_from(self) -> None:
        """C{from} keeps its comma-separated patterns, quoted commas and all."""
        options = self.parse_one(f'from="10.0.0.0/8,!10.1.2.3,192.168.*" {ECDSA}')
        self.assertEqual(options.from_patterns, ("10.0.0.0/8", "!10.1.2.3", "192.168.*"))
        patterns = options.from_patterns
        assert patterns is not None
        self.assertTrue(matches_from(patterns, "10.200.0.1"))
        self.assertFalse(matches_from(patterns, "10.1.2.3"))
        self.assertTrue(matches_from(patterns, "192.168.44.5"))
        self.assertFalse(matches_from(patterns, "172.16.0.1"))

    def test_expiry_local(self) -> None:
        """An expiry date without C{Z} is local midnight, as an aware datetime."""
        expiry = self.parse_one(f'expiry-time="20200101" {ED25519}').expiry
        assert expiry is not None
        self.assertIsNotNone(expiry.tzinfo)
        self.assertEqual(expiry, datetime(2020, 1, 1).astimezone())

    def test_expiry_local_zone(self) -> None:
        """Without C{Z} the date is read in the local zone, not in UTC."""
        if not hasattr(time, "tzset"):
            raise SkipTest("time.tzset() is needed to change the local zone")
        self.addCleanup(time.tzset)
        old = os.environ.get("TZ")
        if old is None:
            self.addCleanup(os.environ.pop, "TZ", None)
        else:
            self.addCleanup(os.environ.__setitem__, "TZ", old)
        os.environ["TZ"] = "XST-05:30"
        time.tzset()
        expiry = self.parse_one(f'expiry-time="20200101" {ED25519}').expiry
        self.assertEqual(expiry, datetime(2019, 12, 31, 18, 30, tzinfo=timezone.utc))

    def test_expiry_utc(self) -> None:
        """An expiry date ending in C{Z} is UTC."""
        expiry = self.parse_one(f'expiry-time="20991231Z" {ED25519}').expiry
        self.assertEqual(expiry, datetime(2099, 12, 31, tzinfo=timezone.utc))
        assert expiry is not None
        self.assertEqual(expiry.utcoffset(), timedelta(0))

    def test_expiry_with_time(self) -> None:
        """C{YYYYMMDDHHMM} and C{YYYYMMDDHHMMSS} forms carry the time of day."""
        self.assertEqual(
            self.parse_one(f'expiry-time="202403151230z" {ED25519}').expiry,
            datetime(2024, 3, 15, 12, 30, tzinfo=timezone.utc),
        )
        self.assertEqual(
            self.parse_one(f'expiry-time="20240315123059Z" {ED25519}').expiry,
            datetime(2024, 3, 15, 12, 30, 59, tzinfo=timezone.utc),
        )

    def test_bad_expiry(self) -> None:
        """Malformed expiry times make the line unusable."""
        keys, warnings = parse(
            f'expiry-time="2020" {ED25519}',
            f'expiry-time="20201301" {ED25519}',
            f'expiry-time="2020010x" {ED25519}',
        )
        self.assertEqual(keys, [])
        self.assertEqual(len(warnings), 3)
        self.assertEqual(warnings[0], f"{PATH} line 1: bad expiry-time '2020'")
        self.assertTrue(warnings[1].startswith(f"{PATH} line 2: "))
        self.assertEqual(warnings[2], f"{PATH} line 3: bad expiry-time '2020010x'")

    def test_quoted_values(self) -> None:
        """Quoted values may hold commas, spaces and escaped quotes without ending early."""
        options = self.parse_one(
            f'command="echo \\"a, b\\" c",no-port-forwarding,'
            f'environment="X=1 2",from="192.0.2.*" {ED25519}'
        )
        self.assertFalse(options.port_forwarding)
        self.assertEqual(options.from_patterns, ("192.0.2.*",))

    def test_escaped_quote_in_value(self) -> None:
        """An escaped quote inside a value is part of the value, not its end."""
        options = self.parse_one(f'from="10.0.0.1,\\"x y\\"" {ED25519}')
        self.assertEqual(options.from_patterns, ("10.0.0.1", '"x y"'))

    def test_irrelevant_options(self) -> None:
        """
        Options for features this server lacks are accepted and change nothing; principals=
        is kept (it matters on a cert-authority line).
        """
        options = self.parse_one(
            f'no-pty,command="x y",no-agent-forwarding,no-X11-forwarding,no-user-rc,'
            f'permitopen="h:1",principals="a,b",tunnel="0",pty {RSA}'
        )
        self.assertEqual(options, KeyOptions(principals=("a", "b")))

    def test_unknown_option(self) -> None:
        """An unknown option skips its line with a warning; other lines still load."""
        keys, warnings = parse(ED25519, f"frobnicate {ECDSA}", RSA)
        self.assertEqual([k.key for k in keys], [_ED25519, _RSA])
        self.assertEqual(warnings, [f"{PATH} line 2: unsupported option 'frobnicate'"])

    def test_flag_given_a_value(self) -> None:
        """A flag option written with a value is not understood."""
        keys, warnings = parse(f'restrict="yes" {ED25519}')
        self.assertEqual(keys, [])
        self.assertEqual(warnings, [f"{PATH} line 1: unsupported option 'restrict'"])

    def test_value_option_without_value(self) -> None:
        """A value option written as a bare flag is not understood."""
        keys, warnings = parse(f"permitlisten {ED25519}")
        self.assertEqual(keys, [])
        self.assertEqual(warnings, [f"{PATH} line 1: unsupported option 'permitlisten'"])

    def test_unquoted_value(self) -> None:
        """Option values must be double-quoted."""
        _, warnings = parse(f"from=10.0.0.1 {ED25519}")
        self.assertEqual(warnings, [f"{PATH} line 1: option from needs a double-quoted value"])

    def test_unterminated_quote(self) -> None:
        """A quote that never closes makes the line unusable."""
        _, warnings = parse(f'command="oops {ED25519}')
        self.assertEqual(warnings, [f"{PATH} line 1: unterminated quote"])

    def test_junk_after_value(self) -> None:
        """Text straight after a closing quote (no comma) is a syntax error."""
        keys, warnings = parse(f'command="x"y {ED25519}')
        self.assertEqual(keys, [])
        self.assertEqual(warnings, [f"{PATH} line 1: bad option syntax near 'y'"])

    def test_bad_permitlisten(self) -> None:
        """An unparsable C{permitlisten} makes the line unusable."""
        keys, warnings = parse(f'permitlisten="localhost:http" {ED25519}')
        self.assertEqual(keys, [])
        self.assertEqual(
            warnings,
            [f"{PATH} line 1: bad port in listen permission 'localhost:http'"],
        )

    def test_options_without_key(self) -> None:
        """An options field with nothing after it is reported."""
        _, warnings = parse("restrict")
        self.assertEqual(warnings, [f"{PATH} line 1: options without a key after them"])

    def test_garbage_key(self) -> None:
        """A key line whose data is not a key is skipped with a warning."""
        keys, warnings = parse("ssh-ed25519 not-base64-at-all!!", ED25519)
        self.assertEqual([k.key for k in keys], [_ED25519])
        self.assertEqual(len(warnings), 1)
        self.assertTrue(warnings[0].startswith(f"{PATH} line 1: unusable key"), warnings[0])

    def test_truncated_key(self) -> None:
        """A key whose base64 data is cut short is skipped with a warning."""
        truncated = ED25519.split()[0] + " " + ED25519.split()[1][:20]
        keys, warnings = parse(truncated)
        self.assertEqual(keys, [])
        self.assertTrue(warnings[0].startswith(f"{PATH} line 1: unusable key"), warnings[0])

    def test_every_truncation_rejected(self) -> None:
        """A key blob cut short at any byte is rejected, never read as another key."""
        for key in (_ED25519, _ECDSA, _RSA):
            blob = key.blob()
            key_type = key.sshType().decode("ascii")
            lines = [
                f"{key_type} {base64.b64encode(blob[:n]).decode('ascii')}"
                for n in range(1, len(blob))
            ]
            keys, warnings = parse(*lines)
            self.assertEqual(keys, [], key_type)
            self.assertEqual(len(warnings), len(blob) - 1, key_type)
            for warning in warnings:
                self.assertIn(": unusable key", warning)

    def test_trailing_data_rejected(self) -> None:
        """Bytes after a complete key blob make the line unusable."""
        for key in (_ED25519, _ECDSA, _RSA):
            key_type = key.sshType().decode("ascii")
            data = base64.b64encode(key.blob() + b"junk").decode("ascii")
            keys, warnings = parse(f"{key_type} {data}")
            self.assertEqual(keys, [], key_type)
            self.assertEqual(len(warnings), 1, key_type)

    def test_key_type_mismatch(self) -> None:
        """A line whose stated type differs from its key data is unusable."""
        data = ED25519.split()[1]
        keys, warnings = parse(f"ssh-rsa {data}", f"ecdsa-sha2-nistp256 {data}")
        self.assertEqual(keys, [])
        self.assertEqual(len(warnings), 2)
        self.assertEqual(
            warnings[0], f"{PATH} line 1: unusable key: the ssh-rsa key data is corrupt"
        )
        self.assertTrue(warnings[1].startswith(f"{PATH} line 2: unusable key: "), warnings[1])

    def test_key_type_without_data(self) -> None:
        """A key type alone is not a key."""
        _, warnings = parse("ssh-ed25519")
        self.assertEqual(warnings, [f"{PATH} line 1: expected 'keytype base64-key [comment]'"])

    def test_garbage_line(self) -> None:
        """A line of words that are neither options nor a key is skipped with a warning."""
        keys, warnings = parse("hello world", ED25519)
        self.assertEqual(len(keys), 1)
        self.assertEqual(len(warnings), 1)
        self.assertTrue(warnings[0].startswith(f"{PATH} line 1: "), warnings[0])

    def test_not_utf8(self) -> None:
        """A line that is not UTF-8 is skipped with a warning naming its line."""
        text = b'command="\xff" ' + ED25519.encode("ascii") + b"\n" + ECDSA.encode("ascii")
        keys, warnings = parse_authorized_keys(text, PATH)
        self.assertEqual([k.key for k in keys], [_ECDSA])
        self.assertEqual(len(warnings), 1)
        self.assertTrue(warnings[0].startswith(f"{PATH} line 1: "), warnings[0])


class MatchesFromTests(SynchronousTestCase):
    """sshd's C{from=} pattern list against a client address."""

    def test_exact(self) -> None:
        """A literal address matches only itself."""
        self.assertTrue(matches_from(("192.0.2.1",), "192.0.2.1"))
        self.assertFalse(matches_from(("192.0.2.1",), "192.0.2.10"))

    def test_wildcards(self) -> None:
        """C{*} matches any run of characters and C{?} exactly one."""
        self.assertTrue(matches_from(("192.0.2.*",), "192.0.2.200"))
        self.assertTrue(matches_from(("192.0.2.?",), "192.0.2.7"))
        self.assertFalse(matches_from(("192.0.2.?",), "192.0.2.70"))
        self.assertTrue(matches_from(("*",), "2001:db8::1"))

    def test_cidr(self) -> None:
        """CIDR blocks match addresses inside them, for both families."""
        self.assertTrue(matches_from(("10.0.0.0/8",), "10.255.255.255"))
        self.assertFalse(matches_from(("10.0.0.0/8",), "11.0.0.0"))
        self.assertTrue(matches_from(("2001:db8::/32",), "2001:db8:1::5"))
        self.assertFalse(matches_from(("2001:db8::/32",), "2001:db9::5"))
        self.assertFalse(matches_from(("10.0.0.0/8",), "::ffff:1.2.3.4"))

    def test_negation_wins(self) -> None:
        """A matching negated pattern denies, wherever it appears in the list."""
        self.assertFalse(matches_from(("!10.1.2.3", "10.0.0.0/8"), "10.1.2.3"))
        self.assertFalse(matches_from(("10.0.0.0/8", "!10.1.2.3"), "10.1.2.3"))
        self.assertFalse(matches_from(("*", "!10.0.0.0/8"), "10.9.9.9"))
        self.assertTrue(matches_from(("*", "!10.0.0.0/8"), "11.9.9.9"))

    def test_negation_alone_allows_nothing(self) -> None:
        """Negations only deny: a list of them alone matches no address."""
        self.assertFalse(matches_from(("!10.1.2.3",), "192.0.2.1"))

    def test_empty(self) -> None:
        """An empty list matches nothing."""
        self.assertFalse(matches_from((), "127.0.0.1"))

    def test_ipv6_case_insensitive(self) -> None:
        """Hex digits in IPv6 patterns match either case."""
        self.assertTrue(matches_from(("2001:DB8::*",), "2001:db8::abcd"))

    def test_bad_cidr_does_not_match(self) -> None:
        """A malformed CIDR pattern matches nothing rather than raising."""
        self.assertFalse(matches_from(("10.0.0.0/99",), "10.0.0.1"))
        self.assertFalse(matches_from(("10.0.0.0/8",), "not-an-address"))


class MappedAddressTests(SynchronousTestCase):
    def test_ipv4_mapped_peer_matches_ipv4_patterns(self) -> None:
        """A client seen as ::ffff:10.1.2.3 on a dual-stack socket matches 10.0.0.0/8."""
        self.assertTrue(matches_from(("10.0.0.0/8",), "::ffff:10.1.2.3"))
        self.assertFalse(matches_from(("10.0.0.0/8", "!10.1.2.3"), "::ffff:10.1.2.3"))


class CertAuthorityTests(SynchronousTestCase):
    """
    C{cert-authority} lines: kept (they vouch for certificates), and the CA key never logs in
    as a plain key, as in sshd.
    """

    def test_line_authorizes_no_plain_key(self) -> None:
        """A cert-authority line is kept as a CA entry that matches no plain key."""
        keys, warnings = parse(ECDSA, f"cert-authority {ED25519}", RSA)
        self.assertEqual(warnings, [])
        self.assertEqual([k.key for k in keys], [_ECDSA, _ED25519, _RSA])
        self.assertEqual([k.options.cert_authority for k in keys], [False, True, False])
        self.assertFalse(any(k.matches(_ED25519.blob()) for k in keys))
        self.assertTrue(keys[1].signs(_ED25519.blob()))

    def test_with_other_options_and_any_case(self) -> None:
        """The flag counts wherever it stands among options; principals= is kept with it."""
        for options in ('restrict,Cert-Authority,principals="alice"', "no-pty,CERT-AUTHORITY"):
            keys, warnings = parse(RSA, f"{options} {ED25519}")
            self.assertEqual(warnings, [])
            self.assertTrue(keys[1].options.cert_authority)
            self.assertFalse(keys[1].matches(_ED25519.blob()))
        keys, _ = parse(f'cert-authority,principals="alice,ops" {ED25519}')
        self.assertEqual(keys[0].options.principals, ("alice", "ops"))

    def test_same_key_on_a_plain_line_still_logs_in(self) -> None:
        """The key listed again without cert-authority authorizes as that plain line says."""
        keys, warnings = parse(f"restrict {ED25519}", f"cert-authority {ED25519}")
        self.assertEqual(warnings, [])
        matching = [k for k in keys if k.matches(_ED25519.blob())]
        (entry,) = matching
        self.assertEqual(entry.source, f"{PATH} line 1")
        self.assertFalse(entry.options.port_forwarding)

    def test_entry_marked_cert_authority_never_matches(self) -> None:
        """An entry built with cert_authority set does not match even its own key's blob."""
        entry = AuthorizedKey(_ED25519, KeyOptions(cert_authority=True), "built")
        self.assertFalse(entry.matches(_ED25519.blob()))
        self.assertTrue(AuthorizedKey(_ED25519, KeyOptions(), "built").matches(_ED25519.blob()))

    def test_flag_given_a_value(self) -> None:
        """cert-authority written with a value is not understood, like any flag."""
        keys, warnings = parse(f'cert-authority="yes" {ED25519}')
        self.assertEqual(keys, [])
        self.assertEqual(warnings, [f"{PATH} line 1: unsupported option 'cert-authority'"])
