"""The plugins' command lines, parsed in-process: OpenSSH's precedence rules and clear errors."""

from __future__ import annotations

from pathlib import Path

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from tests.support.keys import new_key, write_private_key
from twisted_rfwd.client.config import ClientConfig, HostKeyPolicy
from twisted_rfwd.errors import ConfigError
from twisted_rfwd.protocol.policy import GatewayPorts
from twisted_rfwd.protocol.spec import RemoteForward
from twisted_rfwd.tap import client as client_tap
from twisted_rfwd.tap import server as server_tap
from twisted_rfwd.tap.parsing import seconds


class ClientOptionsTests(SynchronousTestCase):
    def setUp(self) -> None:
        directory = Path(self.mktemp())
        directory.mkdir()
        self.key_path = str(write_private_key(new_key(), directory / "id"))

    def parse(self, *argv: str) -> ClientConfig:
        options = client_tap.Options()
        options.parseOptions(["-i", self.key_path, *argv])
        config = options["config"]
        assert isinstance(config, ClientConfig)
        return config

    def test_ssh_style_command_line(self) -> None:
        """-R, -p, user@host build the config ssh would use."""
        config = self.parse("-p", "2022", "-R", "2222:localhost:222", "alice@hostb.example")
        self.assertEqual(config.host, "hostb.example")
        self.assertEqual(config.port, 2022)
        self.assertEqual(config.user, "alice")
        self.assertEqual(config.forwards, [RemoteForward(2222, "localhost", 222)])
        self.assertEqual(config.strict_host_key_checking, HostKeyPolicy.YES)
        self.assertFalse(config.exit_on_forward_failure)
        self.assertEqual(len(config.identities), 1)

    def test_dash_l_beats_user_at_and_user_option(self) -> None:
        """-l wins over user@ which wins over -o User, as in ssh."""
        self.assertEqual(self.parse("-l", "a", "-o", "User=c", "-R", "1:h:2", "b@h").user, "a")
        self.assertEqual(self.parse("-o", "User=c", "-R", "1:h:2", "b@h").user, "b")
        self.assertEqual(self.parse("-o", "User=c", "-R", "1:h:2", "h").user, "c")

    def test_port_option_and_first_value_wins(self) -> None:
        """-p wins over -o Port; between two -o Port the first wins."""
        self.assertEqual(self.parse("-p", "1", "-o", "Port=2", "-R", "1:h:2", "h").port, 1)
        self.assertEqual(self.parse("-o", "Port=3", "-o", "Port=4", "-R", "1:h:2", "h").port, 3)

    def test_options_by_openssh_name(self) -> None:
        """-o names map to the config, in either Name=Value or 'Name Value' form."""
        config = self.parse(
            "-o",
            "stricthostkeychecking accept-new",
            "-o",
            "ExitOnForwardFailure=yes",
            "-o",
            "UserKnownHostsFile=/tmp/a /tmp/b",
            "-o",
            "ConnectTimeout=7",
            "-o",
            "RemoteForward=8080 localhost:80",
            "-R",
            "[::1]:9090:[::1]:90",
            "[::1]",
        )
        self.assertEqual(config.host, "::1")
        self.assertEqual(config.strict_host_key_checking, HostKeyPolicy.ACCEPT_NEW)
        self.assertTrue(config.exit_on_forward_failure)
        self.assertEqual(config.known_hosts, ["/tmp/a", "/tmp/b"])
        self.assertEqual(config.connect_timeout, 7.0)
        self.assertEqual(
            config.forwards,
            [RemoteForward(9090, "::1", 90, "::1"), RemoteForward(8080, "localhost", 80)],
        )

    def test_errors_are_usage_errors(self) -> None:
        """Bad input of every kind is a UsageError with the problem named."""
        cases = {
            ("-R", "nonsense", "h"): "Bad remote forwarding specification 'nonsense'",
            ("-p", "²", "-R", "1:h:2", "h"): "bad port '²'",
            ("-p", "70000", "-R", "1:h:2", "h"): "bad port '70000'",
            ("h",): "nothing to forward",
            ("-o", "ConnectTimeout=soon", "-R", "1:h:2", "h"): "ConnectTimeout must be a number",
            ("-o", "StrictHostKeyChecking=maybe", "-R", "1:h:2", "h"): "StrictHostKeyChecking",
            ("-R", "1:h:2", "user@"): "no host",
        }
        for argv, message in cases.items():
            error = self.assertRaises(usage.UsageError, self.parse, *argv)
            self.assertIn(message, str(error), argv)


class ServerOptionsTests(SynchronousTestCase):
    def test_defaults(self) -> None:
        """Defaults: tcp:2222, per-user authorized_keys, GatewayPorts no, no key given."""
        options = server_tap.Options()
        options.parseOptions([])
        self.assertEqual(options["listen"], "tcp:2222")
        self.assertEqual(options["authorized-keys"], "%h/.ssh/authorized_keys")
        self.assertEqual(options["gateway-ports-policy"], GatewayPorts.NO)
        self.assertEqual(options["host-keys"], [])

    def test_host_keys_are_loaded_and_repeatable(self) -> None:
        """--host-key may be given several times; each file is loaded."""
        directory = Path(self.mktemp())
        directory.mkdir()
        first = write_private_key(new_key(), directory / "a")
        second = write_private_key(new_key("ecdsa"), directory / "b")
        options = server_tap.Options()
        options.parseOptions(["--host-key", str(first), "--host-key", str(second)])
        self.assertEqual(
            [k.sshType() for k in options["host-keys"]], [b"ssh-ed25519", b"ecdsa-sha2-nistp256"]
        )

    def test_public_key_as_host_key_is_refused(self) -> None:
        """Giving the .pub file is a usage error saying so."""
        directory = Path(self.mktemp())
        directory.mkdir()
        path = write_private_key(new_key(), directory / "a")
        options = server_tap.Options()
        error = self.assertRaises(
            usage.UsageError, options.parseOptions, ["--host-key", f"{path}.pub"]
        )
        self.assertIn("public key", str(error))

    def test_bad_gateway_ports(self) -> None:
        """An unknown GatewayPorts value is refused by name."""
        options = server_tap.Options()
        error = self.assertRaises(
            usage.UsageError, options.parseOptions, ["--gateway-ports", "sometimes"]
        )
        self.assertIn("GatewayPorts must be", str(error))


class SharedParsingTests(SynchronousTestCase):
    def test_times_read_the_same_on_both_ends(self) -> None:
        """C{--drain-time} takes seconds (C{2.5}) and OpenSSH times (C{1m}) on both plugins."""
        self.assertEqual(seconds("2.5", "t"), 2.5)
        self.assertEqual(seconds("1m30s", "t"), 90.0)
        for bad in ("-1", "soon", "nan", "inf"):
            self.assertRaises(ConfigError, seconds, bad, "t")
        server = server_tap.Options()
        server.parseOptions(["--drain-time", "1m"])
        self.assertEqual(server["timing"]["drain_time"], 60.0)
        key = write_private_key(new_key(), Path(self.mktemp()))
        client = client_tap.Options()
        client.parseOptions(["-i", str(key), "--drain-time", "1m", "-R", "1:h:2", "host"])
        self.assertEqual(client["config"].drain_time, 60.0)
