"""
Tests for L{twisted_rfwd.protocol.spec}: OpenSSH's C{-R [bind_address:]port:host:hostport} syntax.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from twisted_rfwd.errors import BadForwardSpec, ConfigError
from twisted_rfwd.protocol.spec import RemoteForward, parse_remote_forward


class ParseValidTests(SynchronousTestCase):
    """Specifications OpenSSH accepts parse into the fields it would use."""

    def test_three_fields(self) -> None:
        """C{port:host:hostport} leaves the bind address unset."""
        self.assertEqual(
            parse_remote_forward("8080:localhost:80"),
            RemoteForward(listen_port=8080, host="localhost", host_port=80, bind_address=None),
        )

    def test_four_fields(self) -> None:
        """C{bind:port:host:hostport} keeps the bind address as written."""
        self.assertEqual(
            parse_remote_forward("192.0.2.1:8080:example.com:443"),
            RemoteForward(8080, "example.com", 443, "192.0.2.1"),
        )

    def test_ipv6_bracketed_bind_and_host(self) -> None:
        """Square brackets protect IPv6 colons in both the bind address and the host."""
        forward = parse_remote_forward("[::1]:8080:[::1]:80")
        self.assertEqual(forward, RemoteForward(8080, "::1", 80, "::1"))
        self.assertEqual(forward.request_address, "::1")

    def test_ipv6_host_only(self) -> None:
        """A bracketed IPv6 destination works in the three-field form."""
        self.assertEqual(
            parse_remote_forward("9000:[2001:db8::5]:22"),
            RemoteForward(9000, "2001:db8::5", 22, None),
        )

    def test_no_bind_requests_localhost(self) -> None:
        """Without a bind address the C{tcpip-forward} request names C{localhost}, as ssh does."""
        self.assertEqual(parse_remote_forward("8080:h:80").request_address, "localhost")

    def test_star_bind_requests_empty(self) -> None:
        """A C{*} bind address is sent as the empty string (all interfaces)."""
        forward = parse_remote_forward("*:8080:h:80")
        self.assertEqual(forward.bind_address, "*")
        self.assertEqual(forward.request_address, "")

    def test_empty_bind_requests_empty(self) -> None:
        """An empty bind field (C{:8080:h:80}) is sent as the empty string."""
        forward = parse_remote_forward(":8080:h:80")
        self.assertEqual(forward.bind_address, "")
        self.assertEqual(forward.request_address, "")

    def test_named_bind_is_sent_verbatim(self) -> None:
        """A named bind address is sent exactly as given, not resolved or lower-cased."""
        self.assertEqual(parse_remote_forward("GateWay:1:h:2").request_address, "GateWay")

    def test_listen_port_zero(self) -> None:
        """Port 0 is allowed for the listen port (the server picks one)."""
        self.assertEqual(parse_remote_forward("0:h:80").listen_port, 0)

    def test_port_limits(self) -> None:
        """Ports 65535 and 1 are the largest and smallest destination ports accepted."""
        forward = parse_remote_forward("65535:h:1")
        self.assertEqual((forward.listen_port, forward.host_port), (65535, 1))

    def test_service_names(self) -> None:
        """Service names from the services database are accepted for either port."""
        forward = parse_remote_forward("http:h:http")
        self.assertEqual((forward.listen_port, forward.host_port), (80, 80))

    def test_destination(self) -> None:
        """C{destination} is C{host:hostport} as OpenSSH prints it, brackets dropped."""
        self.assertEqual(parse_remote_forward("1:[::1]:80").destination, "::1:80")
        self.assertEqual(parse_remote_forward("1:db.internal:5432").destination, "db.internal:5432")


class StrTests(SynchronousTestCase):
    """C{str()} renders a forward back in the syntax it was parsed from."""

    def test_round_trip(self) -> None:
        """Each canonical specification parses and prints back unchanged."""
        for spec in [
            "8080:localhost:80",
            "0:h:1",
            "192.0.2.1:8080:example.com:443",
            "[::1]:8080:[::1]:80",
            "*:8080:h:80",
            ":8080:h:80",
            "9000:[2001:db8::5]:22",
        ]:
            self.assertEqual(str(parse_remote_forward(spec)), spec)

    def test_service_name_renders_as_number(self) -> None:
        """Service names are resolved, so C{str()} shows the numeric port."""
        self.assertEqual(str(parse_remote_forward("http:h:http")), "80:h:80")

    def test_constructed_ipv6(self) -> None:
        """A directly constructed forward with IPv6 addresses is bracketed."""
        self.assertEqual(str(RemoteForward(22, "fe80::1", 2222, "::")), "[::]:22:[fe80::1]:2222")


class ParseInvalidTests(SynchronousTestCase):
    """Anything else raises L{BadForwardSpec} with OpenSSH's message prefix."""

    def assertBad(self, spec: str, reason_contains: str) -> BadForwardSpec:
        """Parse C{spec}, expecting L{BadForwardSpec} whose reason mentions C{reason_contains}."""
        error: BadForwardSpec = self.assertRaises(BadForwardSpec, parse_remote_forward, spec)
        self.assertTrue(
            str(error).startswith(f"Bad remote forwarding specification '{spec}': "),
            str(error),
        )
        self.assertEqual(error.spec, spec)
        self.assertIn(reason_contains, error.reason)
        return error

    def test_is_config_error(self) -> None:
        """L{BadForwardSpec} is a L{ConfigError}, so it is reported as a usage error."""
        self.assertIsInstance(self.assertBad("a:1:h:2:3", "too many"), ConfigError)

    def test_two_fields_without_a_port(self) -> None:
        """C{bind:port} is dynamic, so its second field must be a port."""
        self.assertBad("8080:h", "listen port 'h' is not a number or a known service")

    def test_too_many_fields(self) -> None:
        """Five fields (e.g. an unbracketed IPv6 address) are rejected."""
        self.assertBad("a:1:h:2:3", "too many")
        self.assertBad("::1:8080:h:80", "too many")

    def test_empty(self) -> None:
        """The empty string is not a specification."""
        self.assertBad("", "the listen port is empty")

    def test_non_numeric_listen_port(self) -> None:
        """A listen port that is neither a number nor a service is rejected by name."""
        self.assertBad("nonsense-port:h:80", "listen port 'nonsense-port'")

    def test_non_numeric_destination_port(self) -> None:
        """A destination port that is neither a number nor a service is rejected by name."""
        self.assertBad("8080:h:eighty", "destination port 'eighty'")

    def test_negative_port(self) -> None:
        """A minus sign does not make a port."""
        self.assertBad("-1:h:80", "listen port '-1'")

    def test_non_ascii_digits(self) -> None:
        """Unicode digits are not port numbers (and do not crash the parser)."""
        self.assertBad("\u00b2:h:80", "listen port")
        self.assertBad("8080:h:\u0668\u0660", "destination port")

    def test_listen_port_too_large(self) -> None:
        """A listen port above 65535 is out of range."""
        self.assertBad("65536:h:80", "listen port 65536 is out of range")

    def test_destination_port_too_large(self) -> None:
        """A destination port above 65535 is out of range."""
        self.assertBad("8080:h:70000", "destination port 70000 is out of range")

    def test_destination_port_zero(self) -> None:
        """Port 0 is not a destination."""
        self.assertBad("8080:h:0", "port 0 is out of range")

    def test_empty_ports(self) -> None:
        """Empty port fields are reported as empty."""
        self.assertBad("1.2.3.4::h:80", "the listen port is empty")
        self.assertBad("8080:h:", "the destination port is empty")

    def test_empty_host(self) -> None:
        """An empty destination host is rejected."""
        self.assertBad("8080::80", "the destination host is empty")
        self.assertBad("8080:[]:80", "the destination host is empty")

    def test_unmatched_bracket(self) -> None:
        """A '[' without its ']' is reported."""
        self.assertBad("[::1:8080:h:80", "unmatched '['")
        self.assertBad("8080:[::1:80", "unmatched '['")

    def test_junk_after_bracket(self) -> None:
        """Something other than ':' after ']' is rejected."""
        self.assertBad("[::1]x:8080:h:80", "expected ':' after ']'")

    def test_unix_socket_path_in_a_host_or_port_field(self) -> None:
        """A path where a host or a port belongs is rejected."""
        self.assertBad("a:8080:/tmp/sock:80", "a Unix socket path is not allowed there")
        self.assertBad("/tmp/s:/tmp/x:80", "expected remote_socket:host:hostport")


class OtherFormsTests(SynchronousTestCase):
    """OpenSSH's Unix-socket and dynamic -R forms, parsed and rendered back."""

    def test_forms(self) -> None:
        """Each form gives the fields it names, and renders back as written."""
        cases = {
            "8080": RemoteForward(8080, "", 0, dynamic=True),
            "127.0.0.1:1080": RemoteForward(1080, "", 0, "127.0.0.1", dynamic=True),
            "8080:/tmp/app.sock": RemoteForward(8080, "", 0, host_path="/tmp/app.sock"),
            "a:8080:/tmp/app.sock": RemoteForward(8080, "", 0, "a", host_path="/tmp/app.sock"),
            "/tmp/r.sock:localhost:80": RemoteForward(
                0, "localhost", 80, listen_path="/tmp/r.sock"
            ),
            "/tmp/r.sock:/tmp/l.sock": RemoteForward(
                0, "", 0, listen_path="/tmp/r.sock", host_path="/tmp/l.sock"
            ),
        }
        for text, expected in cases.items():
            forward = parse_remote_forward(text)
            self.assertEqual(forward, expected, text)
            self.assertEqual(str(forward), text)
            self.assertFalse(forward.is_tcp)
        self.assertTrue(parse_remote_forward("8080:h:80").is_tcp)


class RemoteForwardTests(SynchronousTestCase):
    """L{RemoteForward} validates itself when constructed directly."""

    def test_listen_port_range(self) -> None:
        """A negative or too-large listen port raises, naming the rendered forward."""
        error = self.assertRaises(BadForwardSpec, RemoteForward, -1, "h", 80)
        self.assertEqual(
            str(error),
            "Bad remote forwarding specification '-1:h:80': listen port -1 is out of range",
        )
        self.assertRaises(BadForwardSpec, RemoteForward, 65536, "h", 80)

    def test_host_port_range(self) -> None:
        """A destination port of 0 or above 65535 raises."""
        self.assertRaises(BadForwardSpec, RemoteForward, 1, "h", 0)
        self.assertRaises(BadForwardSpec, RemoteForward, 1, "h", 65536)

    def test_empty_host(self) -> None:
        """An empty host raises."""
        error = self.assertRaises(BadForwardSpec, RemoteForward, 1, "", 2)
        self.assertEqual(error.reason, "the destination host is empty")

    def test_frozen(self) -> None:
        """Forwards are immutable values, equal by their fields."""
        forward = RemoteForward(1, "h", 2)
        self.assertEqual(forward, RemoteForward(1, "h", 2, None))
        self.assertNotEqual(forward, RemoteForward(1, "h", 2, ""))
        self.assertEqual(len({forward, RemoteForward(1, "h", 2)}), 1)
