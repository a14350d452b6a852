"""
Tests for L{twisted_rfwd.client.config}: C{StrictHostKeyChecking} and OpenSSH C{-o} options.
"""

from __future__ import annotations

import os

from twisted.trial.unittest import SynchronousTestCase

from twisted_rfwd.client.config import ClientConfig, HostKeyPolicy, SSHOptions
from twisted_rfwd.errors import ConfigError


class HostKeyPolicyTests(SynchronousTestCase):
    """Parsing C{StrictHostKeyChecking}."""

    def test_values(self) -> None:
        """The three policies parse from their OpenSSH names, case-insensitively."""
        self.assertIs(HostKeyPolicy.parse("yes"), HostKeyPolicy.YES)
        self.assertIs(HostKeyPolicy.parse("accept-new"), HostKeyPolicy.ACCEPT_NEW)
        self.assertIs(HostKeyPolicy.parse("Accept-New"), HostKeyPolicy.ACCEPT_NEW)
        self.assertIs(HostKeyPolicy.parse("no"), HostKeyPolicy.NO)
        self.assertIs(HostKeyPolicy.parse("NO"), HostKeyPolicy.NO)

    def test_aliases(self) -> None:
        """C{ask} means C{yes} (no prompting); C{off} means C{no}; true/false are accepted."""
        self.assertIs(HostKeyPolicy.parse("ask"), HostKeyPolicy.YES)
        self.assertIs(HostKeyPolicy.parse("off"), HostKeyPolicy.NO)
        self.assertIs(HostKeyPolicy.parse("true"), HostKeyPolicy.YES)
        self.assertIs(HostKeyPolicy.parse("false"), HostKeyPolicy.NO)

    def test_bad(self) -> None:
        """Anything else is a L{ConfigError} quoting the value as given."""
        error = self.assertRaises(ConfigError, HostKeyPolicy.parse, "Maybe")
        self.assertEqual(
            str(error), "StrictHostKeyChecking must be yes, accept-new or no, not 'Maybe'"
        )
        self.assertRaises(ConfigError, HostKeyPolicy.parse, "")
        self.assertRaises(ConfigError, HostKeyPolicy.parse, "accept_new")


class SSHOptionsSyntaxTests(SynchronousTestCase):
    """How one C{-o} argument is split into a name and a value."""

    def options(self, *texts: str) -> SSHOptions:
        """An L{SSHOptions} given each of C{texts} in turn."""
        options = SSHOptions()
        for text in texts:
            options.add(text)
        return options

    def test_name_equals_value(self) -> None:
        """C{Name=Value} sets the option."""
        self.assertEqual(self.options("Port=2222").get("Port"), "2222")

    def test_name_space_value(self) -> None:
        """C{Name Value} sets the option too."""
        self.assertEqual(self.options("User alice").get("User"), "alice")

    def test_spaces_around_equals(self) -> None:
        """Whitespace around C{=} and around the whole argument is ignored."""
        self.assertEqual(self.options("  User = alice  ").get("User"), "alice")
        self.assertEqual(self.options("User\t=bob").get("User"), "bob")

    def test_case_insensitive_names(self) -> None:
        """Names match whatever their case and are stored under OpenSSH's spelling."""
        options = self.options("stricthostkeychecking=no", "EXITONFORWARDFAILURE yes")
        self.assertEqual(options.get("StrictHostKeyChecking"), "no")
        self.assertEqual(options.get("ExitOnForwardFailure"), "yes")
        self.assertIsNone(options.get("stricthostkeychecking"))

    def test_value_keeps_inner_text(self) -> None:
        """Only the first separator splits; the value keeps its own spaces and C{=}."""
        options = self.options("UserKnownHostsFile=/a b /c", "User=x=y")
        self.assertEqual(options.get("UserKnownHostsFile"), "/a b /c")
        self.assertEqual(options.get("User"), "x=y")

    def test_value_case_preserved(self) -> None:
        """Values are not lower-cased."""
        self.assertEqual(self.options("User=Alice").get("User"), "Alice")

    def test_missing_value(self) -> None:
        """C{Name=}, C{Name =}, a bare name, C{=Value} and nothing at all are not options."""
        for text in ["Port=", "Port =", "Port", "=22", "", "   ", "Port=   "]:
            error = self.assertRaises(ConfigError, SSHOptions().add, text)
            self.assertEqual(str(error), f"option '{text}' is not Name=Value")

    def test_unknown_option(self) -> None:
        """An option rfwd-client does not implement is an error naming it and the known ones."""
        error = self.assertRaises(ConfigError, SSHOptions().add, "Compression=yes")
        message = str(error)
        self.assertTrue(message.startswith("unsupported option 'Compression'; "), message)
        self.assertIn("StrictHostKeyChecking", message)
        self.assertIn("RemoteForward", message)

    def test_unknown_option_keeps_case(self) -> None:
        """The unknown name is quoted as the user typed it."""
        error = self.assertRaises(ConfigError, SSHOptions().add, "forwardagent yes")
        self.assertIn("'forwardagent'", str(error))

    def test_unknown_option_not_stored(self) -> None:
        """A rejected option leaves nothing behind."""
        options = SSHOptions()
        self.assertRaises(ConfigError, options.add, "Compression=yes")
        self.assertIsNone(options.get("Compression"))
        self.assertEqual(options.get_all("Compression"), [])


class SSHOptionsValueTests(SynchronousTestCase):
    """Which value wins, and typed access to values."""

    def test_first_value_wins(self) -> None:
        """For ordinary options the first value given is kept, as in OpenSSH."""
        options = SSHOptions()
        options.add("User=first")
        options.add("user=second")
        options.add("USER third")
        self.assertEqual(options.get("User"), "first")
        self.assertEqual(options.get_all("User"), ["first"])

    def test_identity_file_accumulates(self) -> None:
        """Every C{IdentityFile} is kept, in order."""
        options = SSHOptions()
        options.add("IdentityFile=~/.ssh/a")
        options.add("identityfile ~/.ssh/b")
        self.assertEqual(options.get_all("IdentityFile"), ["~/.ssh/a", "~/.ssh/b"])
        self.assertEqual(options.get("IdentityFile"), "~/.ssh/a")

    def test_remote_forward_accumulates(self) -> None:
        """Every C{RemoteForward} is kept, in order."""
        options = SSHOptions()
        options.add("RemoteForward=8080 localhost:80")
        options.add("RemoteForward 9090 localhost:90")
        self.assertEqual(
            options.get_all("RemoteForward"), ["8080 localhost:80", "9090 localhost:90"]
        )

    def test_get_all_is_a_copy(self) -> None:
        """Changing the list returned by C{get_all} does not change the options."""
        options = SSHOptions()
        options.add("IdentityFile=k")
        options.get_all("IdentityFile").append("other")
        self.assertEqual(options.get_all("IdentityFile"), ["k"])

    def test_unset(self) -> None:
        """Unset options read as C{None} or an empty list."""
        options = SSHOptions()
        self.assertIsNone(options.get("User"))
        self.assertEqual(options.get_all("IdentityFile"), [])
        self.assertIsNone(options.flag("BatchMode"))
        self.assertIsNone(options.number("Port", 1, 65535))

    def test_flag(self) -> None:
        """C{yes}/C{true} are true and C{no}/C{false} false, in any case."""
        for text, expected in [("yes", True), ("True", True), ("NO", False), ("false", False)]:
            options = SSHOptions()
            options.add(f"ExitOnForwardFailure={text}")
            self.assertIs(options.flag("ExitOnForwardFailure"), expected, text)

    def test_flag_bad(self) -> None:
        """Any other flag value is a L{ConfigError} naming the option and value."""
        options = SSHOptions()
        options.add("BatchMode=maybe")
        error = self.assertRaises(ConfigError, options.flag, "BatchMode")
        self.assertEqual(str(error), "BatchMode must be yes or no, not 'maybe'")

    def test_number(self) -> None:
        """A number within range is returned as an int, limits included."""
        for text, expected in [("1", 1), ("2222", 2222), ("65535", 65535)]:
            options = SSHOptions()
            options.add(f"Port={text}")
            self.assertEqual(options.number("Port", 1, 65535), expected)

    def test_number_out_of_range(self) -> None:
        """Numbers outside the range, and non-numbers, are L{ConfigError}s."""
        for text in ["0", "65536", "-1", "+5", "1.5", "twenty", "0x10", "\u00b2", "\u0668"]:
            options = SSHOptions()
            options.add(f"Port={text}")
            error = self.assertRaises(ConfigError, options.number, "Port", 1, 65535)
            self.assertEqual(str(error), f"Port must be a number from 1 to 65535, not '{text}'")

    def test_number_other_range(self) -> None:
        """The range is the caller's: C{ConnectTimeout} may allow what C{Port} does not."""
        options = SSHOptions()
        options.add("ConnectTimeout=86400")
        self.assertEqual(options.number("ConnectTimeout", 1, 86400), 86400)
        self.assertRaises(ConfigError, options.number, "ConnectTimeout", 1, 60)


class ClientConfigTests(SynchronousTestCase):
    """Defaults of the client settings."""

    def test_defaults(self) -> None:
        """A config needs only host and user; the rest defaults as OpenSSH would."""
        config = ClientConfig(host="example.com", user="alice")
        self.assertEqual(config.port, 22)
        self.assertEqual(config.forwards, [])
        self.assertIs(config.strict_host_key_checking, HostKeyPolicy.YES)
        self.assertEqual(config.known_hosts, [os.path.expanduser("~/.ssh/known_hosts")])
        self.assertFalse(config.exit_on_forward_failure)
        # ConnectTimeout covers the whole handshake and defaults to 30 s (issue 4).
        self.assertEqual(config.connect_timeout, 30.0)

    def test_defaults_not_shared(self) -> None:
        """Mutable defaults are fresh for each config."""
        a = ClientConfig(host="a", user="u")
        b = ClientConfig(host="b", user="u")
        assert isinstance(a.known_hosts, list)
        a.known_hosts.append("/tmp/x")
        self.assertNotIn("/tmp/x", b.known_hosts)
