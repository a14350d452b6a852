"""
Tests for L{twisted_rfwd.protocol.policy}: sshd's C{GatewayPorts} and C{PermitListen} decisions.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from twisted_rfwd.errors import ConfigError
from twisted_rfwd.protocol.policy import (
    LOOPBACK,
    WILDCARD,
    GatewayPorts,
    ListenPermission,
    ListenPolicy,
    is_ip_literal,
    listen_addresses,
    parse_listen_permission,
)

LOOPBACK_PAIR = ("127.0.0.1", "::1")
WILDCARD_PAIR = ("0.0.0.0", "::")

# requested bind string -> (no, yes, clientspecified), written out independently of the module.
GATEWAY_PORTS_TABLE: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    "localhost": (LOOPBACK_PAIR, WILDCARD_PAIR, LOOPBACK_PAIR),
    "": (LOOPBACK_PAIR, WILDCARD_PAIR, WILDCARD_PAIR),
    "0.0.0.0": (LOOPBACK_PAIR, WILDCARD_PAIR, ("0.0.0.0",)),
    "127.0.0.1": (("127.0.0.1",), WILDCARD_PAIR, ("127.0.0.1",)),
    "::1": (("::1",), WILDCARD_PAIR, ("::1",)),
    "192.0.2.7": (LOOPBACK_PAIR, WILDCARD_PAIR, ("192.0.2.7",)),
}


class GatewayPortsTests(SynchronousTestCase):
    """Parsing the C{GatewayPorts} setting."""

    def test_parse_values(self) -> None:
        """The three sshd values parse, case-insensitively."""
        self.assertIs(GatewayPorts.parse("no"), GatewayPorts.NO)
        self.assertIs(GatewayPorts.parse("yes"), GatewayPorts.YES)
        self.assertIs(GatewayPorts.parse("clientspecified"), GatewayPorts.CLIENTSPECIFIED)
        self.assertIs(GatewayPorts.parse("ClientSpecified"), GatewayPorts.CLIENTSPECIFIED)
        self.assertIs(GatewayPorts.parse("YES"), GatewayPorts.YES)

    def test_parse_bad(self) -> None:
        """Anything else is a L{ConfigError} quoting the value as given."""
        error = self.assertRaises(ConfigError, GatewayPorts.parse, "Maybe")
        self.assertEqual(str(error), "GatewayPorts must be no, yes or clientspecified, not 'Maybe'")
        self.assertRaises(ConfigError, GatewayPorts.parse, "")
        self.assertRaises(ConfigError, GatewayPorts.parse, "true")


class ListenAddressesTests(SynchronousTestCase):
    """Which addresses a C{tcpip-forward} binds, for each C{GatewayPorts} setting."""

    def test_constants(self) -> None:
        """The loopback and wildcard pairs are IPv4 first, then IPv6."""
        self.assertEqual(LOOPBACK, LOOPBACK_PAIR)
        self.assertEqual(WILDCARD, WILDCARD_PAIR)

    def check_column(self, gateway_ports: GatewayPorts, column: int) -> None:
        """Every row of the table gives the expected addresses for C{gateway_ports}."""
        for requested, expected in GATEWAY_PORTS_TABLE.items():
            self.assertEqual(
                listen_addresses(requested, gateway_ports),
                expected[column],
                f"GatewayPorts {gateway_ports.value}, requested {requested!r}",
            )

    def test_no(self) -> None:
        """C{no}: loopback only; a named loopback address binds just that address."""
        self.check_column(GatewayPorts.NO, 0)

    def test_yes(self) -> None:
        """C{yes}: every interface, whatever the client asked for."""
        self.check_column(GatewayPorts.YES, 1)

    def test_clientspecified(self) -> None:
        """C{clientspecified}: what the client named; empty means all, localhost loopback."""
        self.check_column(GatewayPorts.CLIENTSPECIFIED, 2)

    def test_star(self) -> None:
        """C{*} is treated like the empty string."""
        self.assertEqual(listen_addresses("*", GatewayPorts.CLIENTSPECIFIED), WILDCARD_PAIR)
        self.assertEqual(listen_addresses("*", GatewayPorts.NO), LOOPBACK_PAIR)


class IsIpLiteralTests(SynchronousTestCase):
    """Recognising numeric addresses."""

    def test_literals(self) -> None:
        """IPv4 and IPv6 literals are recognised; names and blanks are not."""
        self.assertTrue(is_ip_literal("192.0.2.1"))
        self.assertTrue(is_ip_literal("::1"))
        self.assertFalse(is_ip_literal("localhost"))
        self.assertFalse(is_ip_literal(""))
        self.assertFalse(is_ip_literal("[::1]"))


class ListenPermissionTests(SynchronousTestCase):
    """One C{PermitListen} entry against a requested address and port."""

    def test_parse_bare_port(self) -> None:
        """A bare port permits that port on any host."""
        permission = parse_listen_permission("8080")
        self.assertEqual(permission, ListenPermission(None, 8080))
        self.assertTrue(permission.allows("localhost", 8080))
        self.assertTrue(permission.allows("", 8080))
        self.assertTrue(permission.allows("192.0.2.7", 8080))
        self.assertFalse(permission.allows("localhost", 8081))

    def test_parse_host_port(self) -> None:
        """C{host:port} compares the requested string exactly."""
        permission = parse_listen_permission("localhost:8080")
        self.assertEqual(permission, ListenPermission("localhost", 8080))
        self.assertTrue(permission.allows("localhost", 8080))
        self.assertFalse(permission.allows("127.0.0.1", 8080))
        self.assertFalse(permission.allows("LOCALHOST", 8080))
        self.assertFalse(permission.allows("", 8080))
        self.assertFalse(permission.allows("localhost", 8081))

    def test_parse_star_port(self) -> None:
        """C{host:*} permits any port on that host, including port 0."""
        permission = parse_listen_permission("localhost:*")
        self.assertEqual(permission, ListenPermission("localhost", None))
        self.assertTrue(permission.allows("localhost", 1))
        self.assertTrue(permission.allows("localhost", 0))
        self.assertFalse(permission.allows("127.0.0.1", 1))

    def test_parse_star_host(self) -> None:
        """C{*:port} is the same as a bare port."""
        self.assertEqual(parse_listen_permission("*:22"), ListenPermission(None, 22))

    def test_parse_star(self) -> None:
        """A lone C{*} permits everything."""
        permission = parse_listen_permission("*")
        self.assertEqual(permission, ListenPermission(None, None))
        self.assertTrue(permission.allows("anything", 0))

    def test_port_zero_request(self) -> None:
        """A request for port 0 (server picks) matches only a wildcard port."""
        self.assertFalse(ListenPermission(None, 8080).allows("localhost", 0))
        self.assertFalse(ListenPermission("localhost", 8080).allows("localhost", 0))
        self.assertTrue(ListenPermission(None, None).allows("localhost", 0))
        self.assertTrue(ListenPermission("localhost", None).allows("localhost", 0))
        self.assertFalse(ListenPermission(None, 0).allows("localhost", 0))

    def test_parse_bracketed_ipv6(self) -> None:
        """C{[::1]:80} names host C{::1}, brackets removed."""
        permission = parse_listen_permission("[::1]:80")
        self.assertEqual(permission, ListenPermission("::1", 80))
        self.assertTrue(permission.allows("::1", 80))
        self.assertFalse(permission.allows("[::1]", 80))
        self.assertEqual(parse_listen_permission("[::1]:*"), ListenPermission("::1", None))

    def test_str(self) -> None:
        """C{str()} renders the entry in C{PermitListen} syntax."""
        self.assertEqual(str(ListenPermission(None, 80)), "80")
        self.assertEqual(str(ListenPermission("h", None)), "h:*")
        self.assertEqual(str(ListenPermission(None, None)), "*")
        self.assertEqual(str(ListenPermission("h", 80)), "h:80")

    def test_bad_entries(self) -> None:
        """Malformed entries raise L{ConfigError} quoting the entry."""
        for text in [
            "",
            "localhost:",
            "x",
            "host:port",
            "0",
            "host:0",
            "65536",
            "-1",
            "[::1]80",
            "[::1]",
            "[::1:80",
            "\u00b2",
            "h:\u0668\u0660",
        ]:
            error = self.assertRaises(ConfigError, parse_listen_permission, text)
            self.assertIn(f"'{text}'", str(error))


class ListenPolicyTests(SynchronousTestCase):
    """A whole C{PermitListen} setting."""

    def test_default_is_any(self) -> None:
        """The default policy permits everything."""
        self.assertTrue(ListenPolicy().allows("192.0.2.7", 1))

    def test_any(self) -> None:
        """C{any}, or nothing at all, permits every request."""
        for entries in (["any"], [], [" any "]):
            policy = ListenPolicy.parse(entries)
            self.assertIsNone(policy.permissions)
            self.assertTrue(policy.allows("", 0))
            self.assertTrue(policy.allows("192.0.2.7", 65535))

    def test_none(self) -> None:
        """C{none} permits nothing."""
        policy = ListenPolicy.parse(["none"])
        self.assertEqual(policy.permissions, ())
        self.assertFalse(policy.allows("localhost", 8080))
        self.assertFalse(policy.allows("", 0))

    def test_list(self) -> None:
        """Several entries, split on whitespace across arguments, permit their union."""
        policy = ListenPolicy.parse(["localhost:8080 9000", "[::1]:*"])
        self.assertEqual(
            policy.permissions,
            (
                ListenPermission("localhost", 8080),
                ListenPermission(None, 9000),
                ListenPermission("::1", None),
            ),
        )
        self.assertTrue(policy.allows("localhost", 8080))
        self.assertFalse(policy.allows("127.0.0.1", 8080))
        self.assertTrue(policy.allows("127.0.0.1", 9000))
        self.assertTrue(policy.allows("::1", 0))
        self.assertFalse(policy.allows("localhost", 0))

    def test_bad_entry(self) -> None:
        """One bad entry makes the whole setting an error."""
        self.assertRaises(ConfigError, ListenPolicy.parse, ["8080 bogus"])

    def test_any_with_others(self) -> None:
        """C{any} or C{none} mixed with ports is an error, not silently one or the other."""
        self.assertRaises(ConfigError, ListenPolicy.parse, ["any 8080"])
        self.assertRaises(ConfigError, ListenPolicy.parse, ["none", "8080"])
