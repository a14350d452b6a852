"""
rfwd-server's sshd_config-style file: syntax, first value wins, Include, Match criteria, errors
with FILE line N, warnings for sshd's keywords rfwd does not act on, and the Match blocks applied
to one connection's ServerConfig.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path

from twisted.internet.address import IPv4Address
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase

from tests.support.keys import new_key
from tests.support.memory import MemoryRig
from twisted_rfwd.client.transport import ClientTransport
from twisted_rfwd.errors import ConfigError
from twisted_rfwd.protocol.policy import GatewayPorts, ListenPermission, ListenPolicy
from twisted_rfwd.protocol.spec import RemoteForward
from twisted_rfwd.protocol.sshd_config import (
    Connection,
    ListenAddress,
    SshdConfig,
    effective,
    parse_config,
    parse_test_spec,
)
from twisted_rfwd.server.config import ServerConfig
from twisted_rfwd.server.config_file import MatchRules, listen_endpoints, load_config_file
from twisted_rfwd.server.connection import ForwardingServerConnection


class FakeFiles:
    """Files in a dict; glob with fnmatch over the names, sorted."""

    def __init__(self, files: dict[str, str]) -> None:
        self.files = files

    def read_text(self, path: str) -> str:
        if path not in self.files:
            raise FileNotFoundError(2, "No such file or directory")
        return self.files[path]

    def glob(self, pattern: str) -> list[str]:
        return sorted(name for name in self.files if fnmatch.fnmatchcase(name, pattern))


def parse(text: str, **others: str) -> SshdConfig:
    return parse_config("/etc/rfwd/main.conf", FakeFiles({"/etc/rfwd/main.conf": text, **others}))


def values(text: str, **connection: object) -> dict[str, object]:
    return parse(text).values(Connection(**connection))  # type: ignore[arg-type]


class SyntaxTests(SynchronousTestCase):
    def test_keywords_any_case_with_equals_and_comments(self) -> None:
        """Keywords in any case, 'Keyword value', 'Keyword=value', 'Keyword = value', comments."""
        found = values(
            "# a comment\n"
            "gatewayports yes\n"
            "MAXAUTHTRIES=3\n"
            "  ClientAliveCountMax = 5   # trailing comment\n"
            "\n"
            "\tLoginGraceTime 1m30s\r\n"
        )
        self.assertEqual(found["gateway_ports"], GatewayPorts.YES)
        self.assertEqual(found["max_auth_tries"], 3)
        self.assertEqual(found["client_alive_count_max"], 5)
        self.assertEqual(found["login_grace_time"], 90.0)

    def test_quoted_values(self) -> None:
        """A quoted argument keeps its spaces; an unclosed quote is an error."""
        self.assertEqual(values('Banner "/etc/rfwd/my banner"\n')["banner"], "/etc/rfwd/my banner")
        self.assertEqual(values("Banner '/x y'\n")["banner"], "/x y")
        with self.assertRaises(ConfigError) as caught:
            parse('Banner "/etc/unclosed\n')
        self.assertEqual(str(caught.exception), "/etc/rfwd/main.conf line 1: invalid quotes")

    def test_first_value_wins(self) -> None:
        """For a single-valued keyword the first line wins, as in sshd."""
        found = values(
            "GatewayPorts clientspecified\nGatewayPorts yes\nMaxSessions 4\nMaxSessions 8\n"
        )
        self.assertEqual(found["gateway_ports"], GatewayPorts.CLIENTSPECIFIED)
        self.assertEqual(found["max_sessions"], 4)

    def test_values_that_add_up(self) -> None:
        """Port, ListenAddress, HostKey and the access lists add up over lines."""
        found = values(
            "Port 2022\nPort 2023\nListenAddress 127.0.0.1\nListenAddress [::1]:2400\n"
            "HostKey /k1\nHostKey /k2\nAllowUsers alice bob\nAllowUsers carol\n"
            "DenyGroups nobody\n"
        )
        self.assertEqual(found["ports"], [2022, 2023])
        self.assertEqual(
            found["listen_addresses"],
            [ListenAddress("127.0.0.1", None), ListenAddress("::1", 2400)],
        )
        self.assertEqual(found["host_key_files"], ["/k1", "/k2"])
        self.assertEqual(found["allow_users"], ["alice", "bob", "carol"])
        self.assertEqual(found["deny_groups"], ["nobody"])

    def test_permit_listen_first_line(self) -> None:
        """PermitListen takes every entry of its first line, and only that line."""
        found = values("PermitListen 8080 localhost:9000\nPermitListen 1\n")
        self.assertEqual(
            found["permit_listen"],
            ListenPolicy((ListenPermission(None, 8080), ListenPermission("localhost", 9000))),
        )

    def test_value_conversions(self) -> None:
        """Values become what ServerConfig holds, with sshd's meanings."""
        found = values(
            "AllowTcpForwarding remote\nAuthorizedKeysFile .ssh/authorized_keys\n"
            "RekeyLimit 512M 30m\nMaxStartups 5:50:20\nPerSourceMaxStartups none\n"
            "Ciphers -aes*-ctr\nBanner none\nLogLevel debug2\nSessions no\n"
        )
        self.assertIs(found["allow_tcp_forwarding"], True)
        self.assertEqual(found["authorized_keys"], "%h/.ssh/authorized_keys")
        self.assertEqual((found["rekey_bytes"], found["rekey_seconds"]), (512 << 20, 1800.0))
        self.assertEqual(found["max_startups"], (5, 50, 20))
        self.assertIsNone(found["per_source_max_startups"])
        self.assertEqual(
            found["ciphers"],
            [
                b"aes128-gcm@openssh.com",
                b"aes256-gcm@openssh.com",
                b"chacha20-poly1305@openssh.com",
            ],
        )
        self.assertIsNone(found["banner"])
        self.assertEqual(found["log_level"], "DEBUG2")
        self.assertIs(found["sessions"], False)
        self.assertIs(values("AllowTcpForwarding local\n")["allow_tcp_forwarding"], False)


class IncludeTests(SynchronousTestCase):
    def test_glob_in_sorted_order_relative_to_the_file(self) -> None:
        """Include reads matching files in sorted order; a relative path is the file's dir's."""
        config = parse(
            "Include conf.d/*.conf\nMaxSessions 9\n",
            **{
                "/etc/rfwd/conf.d/20-b.conf": "MaxSessions 2\nAllowUsers b\n",
                "/etc/rfwd/conf.d/10-a.conf": "MaxSessions 1\nAllowUsers a\n",
                "/etc/rfwd/conf.d/readme.txt": "not read\n",
            },
        )
        found = config.values(Connection())
        self.assertEqual(found["max_sessions"], 1)
        self.assertEqual(found["allow_users"], ["a", "b"])

    def test_absolute_path_and_no_match(self) -> None:
        """An absolute pattern is used as is; a pattern that matches nothing is no error."""
        config = parse(
            "Include /srv/none*.conf /srv/x.conf\n", **{"/srv/x.conf": "MaxSessions 3\n"}
        )
        self.assertEqual(config.global_values()["max_sessions"], 3)

    def test_match_state_across_files(self) -> None:
        """Included lines belong to the includer's Match; a Match in an included file ends there."""
        config = parse(
            "Match User alice\n  Include in-match.conf\nMatch All\n  Include opens-match.conf\n"
            "  MaxSessions 7\n",
            **{
                "/etc/rfwd/in-match.conf": "GatewayPorts yes\n",
                "/etc/rfwd/opens-match.conf": "Match User bob\n  MaxAuthTries 2\n",
            },
        )
        self.assertEqual(config.values(Connection(user="alice"))["gateway_ports"], GatewayPorts.YES)
        self.assertNotIn("gateway_ports", config.values(Connection(user="bob")))
        # MaxSessions 7 is back under "Match All", after the included file's Match ended.
        self.assertEqual(config.values(Connection(user="carol"))["max_sessions"], 7)
        self.assertEqual(config.values(Connection(user="bob"))["max_auth_tries"], 2)

    def test_errors_name_the_included_file(self) -> None:
        """A bad line in an included file is reported at that file's line."""
        with self.assertRaises(ConfigError) as caught:
            parse("Include a.conf\n", **{"/etc/rfwd/a.conf": "\nGatewayPorts maybe\n"})
        self.assertEqual(
            str(caught.exception),
            "/etc/rfwd/a.conf line 2: GatewayPorts must be no, yes or clientspecified, not 'maybe'",
        )

    def test_include_loop_is_bounded(self) -> None:
        """A file that includes itself stops at 16 levels with an error."""
        with self.assertRaises(ConfigError) as caught:
            parse("Include main.conf\n")
        self.assertIn("too many nested Includes", str(caught.exception))

    def test_real_files(self) -> None:
        """load_config_file reads real files, relative Includes from the including file's dir."""
        directory = Path(self.mktemp())
        (directory / "d").mkdir(parents=True)
        (directory / "main.conf").write_text("Include d/*.conf\n")
        (directory / "d" / "x.conf").write_text("MaxSessions 5\n")
        config = load_config_file(str(directory / "main.conf"))
        self.assertEqual(config.global_values()["max_sessions"], 5)


MATCHES = """\
GatewayPorts no
MaxSessions 10
Match {criteria}
  GatewayPorts yes
"""


class MatchTests(SynchronousTestCase):
    def matches(self, criteria: str, **connection: object) -> bool:
        found = values(MATCHES.format(criteria=criteria), **connection)
        return found["gateway_ports"] is GatewayPorts.YES

    def test_user(self) -> None:
        """User: wildcards, lists, negation (a negated match fails even with another match)."""
        self.assertTrue(self.matches("User alice", user="alice"))
        self.assertFalse(self.matches("User alice", user="Alice"))
        self.assertTrue(self.matches("User bob,al*", user="alice"))
        self.assertTrue(self.matches("User a?ice", user="alice"))
        self.assertFalse(self.matches("User *,!alice", user="alice"))
        self.assertTrue(self.matches("User *,!alice", user="bob"))
        self.assertFalse(self.matches("User alice"))

    def test_group(self) -> None:
        """Group: any of the user's groups matches; a negated group fails the criterion."""
        self.assertTrue(self.matches("Group wheel,staff", user="a", groups=("users", "staff")))
        self.assertFalse(self.matches("Group wheel", user="a", groups=("users",)))
        self.assertFalse(self.matches("Group *,!users", user="a", groups=("users", "staff")))
        self.assertFalse(self.matches("Group staff", groups=("staff",)))

    def test_address(self) -> None:
        """Address: CIDR blocks, single addresses, wildcards, negation, IPv6, mapped IPv4."""
        self.assertTrue(self.matches("Address 192.0.2.0/24", address="192.0.2.7"))
        self.assertFalse(self.matches("Address 192.0.2.0/24", address="198.51.100.1"))
        self.assertTrue(self.matches("Address 10.*,192.0.2.7", address="192.0.2.7"))
        self.assertTrue(self.matches("Address 10.*", address="10.1.2.3"))
        self.assertFalse(self.matches("Address 0.0.0.0/0,!192.0.2.7", address="192.0.2.7"))
        self.assertTrue(self.matches("Address 0.0.0.0/0,!192.0.2.7", address="192.0.2.8"))
        self.assertTrue(self.matches("Address 2001:db8::/32", address="2001:db8::1"))
        self.assertTrue(self.matches("Address 127.0.0.0/8", address="::ffff:127.0.0.1"))
        self.assertFalse(self.matches("Address 127.0.0.0/8"))

    def test_local_address_and_port(self) -> None:
        """LocalAddress matches where the client connected; LocalPort that port."""
        self.assertTrue(self.matches("LocalAddress 127.0.0.1", local_address="127.0.0.1"))
        self.assertFalse(self.matches("LocalAddress !127.0.0.1,*", local_address="127.0.0.1"))
        self.assertTrue(self.matches("LocalPort 2022", local_port=2022))
        self.assertFalse(self.matches("LocalPort 2022", local_port=2023))

    def test_local_port_missing_from_the_test_spec(self) -> None:
        """As sshd -T: Match LocalPort without lport in -C is an error, not a silent miss."""
        with self.assertRaises(ConfigError) as caught:
            self.matches("LocalPort 2022", user="alice")
        self.assertIn("'lport' not in connection test specification", str(caught.exception))

    def test_host(self) -> None:
        """Host: the client's name, case-insensitive (rfwd uses the address: no DNS)."""
        self.assertTrue(self.matches("Host *.example", host="Client.EXAMPLE"))
        self.assertFalse(self.matches("Host *.example,!bad.example", host="bad.example"))

    def test_all_and_every_criterion_must_hold(self) -> None:
        """All matches every connection; several criteria must all hold."""
        self.assertTrue(self.matches("All"))
        self.assertTrue(self.matches("all # a comment"))
        both = "User alice Address 192.0.2.0/24"
        self.assertTrue(self.matches(both, user="alice", address="192.0.2.1"))
        self.assertFalse(self.matches(both, user="alice", address="198.51.100.1"))
        self.assertFalse(self.matches(both, user="bob", address="192.0.2.1"))

    def test_first_matching_value_wins_and_lists_replace(self) -> None:
        """The first matching block's value wins; access lists add up and replace global ones."""
        config = parse(
            "AllowUsers global\nMaxSessions 10\n"
            "Match User alice\n  MaxSessions 1\n  AllowUsers a1\n"
            "Match All\n  MaxSessions 2\n  AllowUsers a2\n"
        )
        alice = config.values(Connection(user="alice"))
        self.assertEqual(alice["max_sessions"], 1)
        self.assertEqual(alice["allow_users"], ["a1", "a2"])
        self.assertEqual(config.values(Connection(user="bob"))["max_sessions"], 2)
        self.assertEqual(config.global_values()["allow_users"], ["global"])

    def test_effective(self) -> None:
        """effective() gives one connection's overrides only, with the address as its host."""
        config = parse(
            "GatewayPorts no\nMatch Group ops Host 192.0.2.*\n  GatewayPorts clientspecified\n"
        )
        self.assertEqual(
            effective(config, "alice", ["ops"], "192.0.2.5", "10.0.0.1", 22),
            {"gateway_ports": GatewayPorts.CLIENTSPECIFIED},
        )
        self.assertEqual(effective(config, "alice", ["dev"], "192.0.2.5", "10.0.0.1", 22), {})

    def test_test_spec(self) -> None:
        """sshd -C's spec: user, addr, host, laddr, lport; anything else is an error."""
        self.assertEqual(
            parse_test_spec("user=u,addr=192.0.2.1,host=h,laddr=127.0.0.1,lport=22"),
            Connection("u", (), "h", "192.0.2.1", "127.0.0.1", 22),
        )
        self.assertRaises(ConfigError, parse_test_spec, "usr=u")
        self.assertRaises(ConfigError, parse_test_spec, "lport=x")


class ErrorTests(SynchronousTestCase):
    def error(self, text: str) -> str:
        with self.assertRaises(ConfigError) as caught:
            parse(text)
        return str(caught.exception)

    def test_errors_say_file_and_line(self) -> None:
        """Every unusable line is reported as FILE line N: reason."""
        where = "/etc/rfwd/main.conf line 2: "
        cases = {
            "NoSuchKeyword yes": "bad configuration option: NoSuchKeyword",
            "GatewayPorts": 'no argument after keyword "GatewayPorts"',
            "GatewayPorts yes no": "GatewayPorts: extra arguments at end of line",
            "MaxAuthTries lots": "MaxAuthTries must be a positive number, not 'lots'",
            "Port 70000": "Port: bad port number '70000'",
            "ListenAddress localhost": "ListenAddress must be an IP address",
            "Ciphers aes128-cbc": "Ciphers: unsupported aes128-cbc",
            "PasswordAuthentication maybe": "PasswordAuthentication must be yes or no",
            "LogLevel LOUD": "LogLevel: unsupported log level 'LOUD'",
            "Match User alice\n  Ciphers aes128-ctr": "line 3: directive 'Ciphers' is not allowed",
            "Match User alice\n  PrintMotd no": "line 3: directive 'PrintMotd' is not allowed",
            "Match Address 10.0.0.1/8": "bits set beyond its mask length",
            "Match Address 10.0.0.0/33": "bad mask length",
            "Match All User alice": "'all' cannot be combined",
            "Match User": "missing Match criteria for user",
            "Match Colour blue": "unsupported Match attribute 'colour'",
            "Match LocalPort http": "invalid LocalPort 'http'",
            "Include": 'no argument after keyword "Include"',
        }
        for line, reason in cases.items():
            message = self.error(f"# first line\n{line}\n")
            expected_where = where if not reason.startswith("line ") else "/etc/rfwd/main.conf "
            self.assertTrue(message.startswith(expected_where), message)
            self.assertIn(reason, message)

    def test_missing_file(self) -> None:
        """A file that cannot be read is one line naming it."""
        with self.assertRaises(ConfigError) as caught:
            parse_config("/nowhere.conf", FakeFiles({}))
        self.assertEqual(
            str(caught.exception), "cannot read /nowhere.conf: No such file or directory"
        )


class WarningTests(SynchronousTestCase):
    def test_sshd_keywords_rfwd_ignores(self) -> None:
        """sshd's keywords rfwd does not act on: one warning each, naming it; not an error."""
        config = parse(
            "UsePAM yes\nX11Forwarding no\nusepam no\nPrintMotd no\n"
            "Match User alice\n  X11Forwarding yes\n"
        )
        self.assertEqual(
            config.warnings,
            (
                "/etc/rfwd/main.conf line 1: rfwd-server does not act on sshd's UsePAM; ignored",
                "/etc/rfwd/main.conf line 2: rfwd-server does not act on sshd's X11Forwarding; "
                "ignored",
                "/etc/rfwd/main.conf line 4: rfwd-server does not act on sshd's PrintMotd; ignored",
            ),
        )
        self.assertEqual(config.global_values(), {})

    def test_several_authorized_keys_files(self) -> None:
        """rfwd reads the first AuthorizedKeysFile and warns about the others."""
        config = parse("AuthorizedKeysFile /keys/%u .ssh/authorized_keys2\n")
        self.assertEqual(config.global_values()["authorized_keys"], "/keys/%u")
        self.assertIn("ignoring .ssh/authorized_keys2", config.warnings[0])


class ServerSideTests(SynchronousTestCase):
    def test_listen_endpoints(self) -> None:
        """Port and ListenAddress pair as in sshd: an address without a port takes every Port."""
        addresses = [ListenAddress("127.0.0.1", None), ListenAddress("::1", 2400)]
        self.assertEqual(
            listen_endpoints([2022, 2023], addresses),
            [
                "tcp:2022:interface=127.0.0.1",
                "tcp:2023:interface=127.0.0.1",
                "tcp6:2400:interface=\\:\\:1",
            ],
        )
        self.assertEqual(listen_endpoints([2022], []), ["tcp:2022"])
        self.assertEqual(listen_endpoints([], []), ["tcp:2222"])

    def test_match_rules_keep_command_line_values(self) -> None:
        """MatchRules change a connection's config, except fields pinned on the command line."""
        config = parse("Match User alice\n  GatewayPorts yes\n  MaxSessions 1\n")
        base = ServerConfig(host_keys=[new_key()])
        rules = MatchRules(config, pinned={"max_sessions"}, groups=lambda user: ())
        alice = rules(base, "alice", "192.0.2.1", "127.0.0.1", 2222)
        self.assertEqual((alice.gateway_ports, alice.max_sessions), (GatewayPorts.YES, 10))
        self.assertIs(rules(base, "bob", "192.0.2.1", "127.0.0.1", 2222), base)

    def test_connection_service_gets_the_effective_config(self) -> None:
        """The factory applies Match blocks once the user is known, with the socket's addresses."""
        config = parse(
            "Match User alice Address 192.0.2.0/24 LocalPort 2022\n"
            "  GatewayPorts clientspecified\n  MaxForwardsPerConnection 3\n"
        )
        tmp = Path(self.mktemp())
        tmp.mkdir()
        rig = MemoryRig(tmp, [RemoteForward(0, "localhost", 80)])
        rig.factory.match = MatchRules(config, groups=lambda user: ())
        server = rig.factory.buildProtocol(IPv4Address("TCP", "192.0.2.9", 50000))
        client_transport = ClientTransport(rig.tunnel)
        pump = iosim.connect(
            server,
            iosim.FakeTransport(
                server,
                isServer=True,
                hostAddress=IPv4Address("TCP", "127.0.0.1", 2022),
                peerAddress=IPv4Address("TCP", "192.0.2.9", 50000),
            ),
            client_transport,
            iosim.makeFakeClient(client_transport),
            greet=False,
        )
        pump.flush()
        self.addCleanup(
            lambda: server.loseConnection() if hasattr(server, "loseConnection") else None
        )
        [connection] = rig.factory.connections
        assert isinstance(connection, ForwardingServerConnection)
        self.assertEqual(connection.config.gateway_ports, GatewayPorts.CLIENTSPECIFIED)
        self.assertEqual(connection.config.max_forwards_per_connection, 3)
        self.assertEqual(rig.factory.config.gateway_ports, GatewayPorts.NO)
        self.assertEqual(
            rig.factory.config_for("alice", "198.51.100.1", "127.0.0.1", 2022).gateway_ports,
            GatewayPorts.NO,
        )


class ExampleTests(SynchronousTestCase):
    def test_example_file(self) -> None:
        """examples/rfwd-server.conf parses without errors or warnings, Match blocks included."""
        example = Path(__file__).resolve().parents[2] / "examples" / "rfwd-server.conf"
        config = load_config_file(str(example))
        self.assertEqual(config.warnings, ())
        ci = config.values(Connection(user="ci-7", address="192.0.2.5"))
        self.assertEqual(ci["gateway_ports"], GatewayPorts.CLIENTSPECIFIED)
        self.assertEqual(ci["max_forwards_per_connection"], 4)
        other = config.values(Connection(user="ci-7", address="192.0.2.66"))
        self.assertEqual(other["gateway_ports"], GatewayPorts.NO)
