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


class ClientSSHConfigTests(SynchronousTestCase):
    """rfwd-client reads ssh_config: -F, a Host alias as destination, -G, precedence."""

    def setUp(self) -> None:
        from twisted_rfwd.protocol.ssh_config import Sources

        self.directory = Path(self.mktemp()).resolve()
        self.directory.mkdir()
        self.key_path = str(write_private_key(new_key(), self.directory / "id"))
        self.config = self.directory / "ssh_config"
        self.sources = Sources(
            user_config=str(self.directory / "absent"),
            system_config=str(self.directory / "absent"),
        )

    def options(self, text: str) -> client_tap.Options:
        self.config.write_text(text)
        options = client_tap.Options()
        options.sources = self.sources
        return options

    def parse(self, text: str, *argv: str) -> ClientConfig:
        options = self.options(text)
        options.parseOptions(["-F", str(self.config), *argv])
        config = options["config"]
        assert isinstance(config, ClientConfig)
        return config

    def test_host_alias(self) -> None:
        """The destination is a Host alias: address, port, user, key and forwards from it."""
        config = self.parse(
            f"Host tunnelhost\n  HostName 192.0.2.7\n  Port 2022\n  User tun\n"
            f"  IdentityFile {self.key_path}\n  RemoteForward 8080 localhost:80\n"
            "  ExitOnForwardFailure yes\n  ServerAliveInterval 5\n  ServerAliveCountMax 2\n"
            "  ConnectTimeout 1m\n  StrictHostKeyChecking accept-new\n",
            "tunnelhost",
        )
        self.assertEqual((config.host, config.port, config.user), ("192.0.2.7", 2022, "tun"))
        self.assertEqual(config.forwards, [RemoteForward(8080, "localhost", 80)])
        self.assertEqual(len(config.identities), 1)
        self.assertTrue(config.exit_on_forward_failure)
        self.assertEqual(config.server_alive_interval, 5.0)
        self.assertEqual(config.server_alive_count_max, 2)
        self.assertEqual(config.connect_timeout, 60.0)
        self.assertEqual(config.strict_host_key_checking, HostKeyPolicy.ACCEPT_NEW)

    def test_command_line_wins(self) -> None:
        """-p, -l, -o and -R come before the file; -o HostName is accepted."""
        config = self.parse(
            f"Host t\n  HostName file\n  Port 1\n  User f\n  IdentityFile {self.key_path}\n"
            "  RemoteForward 2 h:2\n",
            "-p", "3", "-l", "cli", "-o", "HostName=cmd", "-R", "1:h:1", "t",
        )  # fmt: skip
        self.assertEqual((config.host, config.port, config.user), ("cmd", 3, "cli"))
        self.assertEqual(config.forwards, [RemoteForward(1, "h", 1), RemoteForward(2, "h", 2)])

    def test_missing_identity_file_in_config_is_skipped(self) -> None:
        """An IdentityFile of the file that does not exist is skipped, as ssh does."""
        config = self.parse(
            f"IdentityFile {self.directory}/nope\nIdentityFile {self.key_path}\n",
            "-R", "1:h:1", "h",
        )  # fmt: skip
        self.assertEqual(len(config.identities), 1)

    def test_ignored_and_unknown_keywords(self) -> None:
        """ssh keywords rfwd-client does not use pass; unknown ones are FILE line N errors."""
        self.parse(f"Compression yes\nIdentityFile {self.key_path}\n", "-R", "1:h:1", "h")
        options = self.options("Port 22\nFrobnicate yes\n")
        error = self.assertRaises(
            usage.UsageError, options.parseOptions, ["-F", str(self.config), "-R", "1:h:1", "h"]
        )
        self.assertEqual(str(error), f"{self.config} line 2: unsupported option 'Frobnicate'")

    def test_print_config(self) -> None:
        """-G prints ssh -G's lines for the destination and exits 0, without -R or keys."""
        import io

        options = self.options("Host t\n  HostName h.example\n  Port 2200\n  User u\n")
        options.stdout = io.StringIO()
        exit = self.assertRaises(
            SystemExit, options.parseOptions, ["-F", str(self.config), "-G", "t"]
        )
        self.assertEqual(exit.code, 0)
        lines = options.stdout.getvalue().splitlines()
        self.assertEqual(lines[:4], ["host t", "user u", "hostname h.example", "port 2200"])
        self.assertIn("identityfile ~/.ssh/id_ed25519", lines)

    def test_log_level_from_config(self) -> None:
        """LogLevel in the file sets the level unless -v or --log-level says otherwise."""
        from twisted.logger import LogLevel

        text = f"LogLevel DEBUG2\nIdentityFile {self.key_path}\n"
        options = self.options(text)
        options.parseOptions(["-F", str(self.config), "-R", "1:h:1", "h"])
        self.assertEqual(options["log-level"], LogLevel.debug)
        options = self.options(text)
        options.parseOptions(["--log-level", "warn", "-F", str(self.config), "-R", "1:h:1", "h"])
        self.assertEqual(options["log-level"], LogLevel.warn)
