"""
rfwd-client's authentication options, parsed in-process: IdentityAgent and IdentitiesOnly as
ssh reads them, passphrases from a file or the environment, the password file, and the keys
that end up in the config (default identities included).
"""

from __future__ import annotations

import os
from pathlib import Path
from unittest import mock

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from tests.support.keys import new_key, write_encrypted_key, write_private_key
from twisted_rfwd.client.config import ClientConfig
from twisted_rfwd.client.identity import PublicOnlyIdentity
from twisted_rfwd.tap import client as client_tap

PASSPHRASE = b"open sesame"


class ClientAuthOptionsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.directory = Path(self.mktemp()).resolve()
        self.directory.mkdir(parents=True)
        self.home = self.directory / "home"
        (self.home / ".ssh").mkdir(parents=True)
        self.key_path = str(write_private_key(new_key(), self.directory / "id"))
        self.environ({"HOME": str(self.home), "SSH_AUTH_SOCK": ""})

    def environ(self, values: dict[str, str]) -> None:
        """Set environment variables for the rest of the test."""
        patcher = mock.patch.dict(os.environ, values)
        patcher.start()
        self.addCleanup(patcher.stop)

    def parse(self, *argv: str) -> ClientConfig:
        options = client_tap.Options()
        options.parseOptions([*argv, "-R", "8080:localhost:80", "hostb"])
        config = options["config"]
        assert isinstance(config, ClientConfig)
        return config

    def write(self, name: str, data: bytes) -> str:
        path = self.directory / name
        path.write_bytes(data)
        return str(path)

    def encrypted(self, name: str = "encrypted") -> str:
        path = self.directory / name
        write_encrypted_key(path, PASSPHRASE)
        return str(path)

    def usage_error(self, *argv: str) -> str:
        return str(self.assertRaises(usage.UsageError, self.parse, *argv))

    # -- IdentityAgent, IdentitiesOnly --------------------------------------------------------

    def test_agent_from_ssh_auth_sock(self) -> None:
        """SSH_AUTH_SOCK names the agent by default; empty or unset means none."""
        self.assertIsNone(self.parse("-i", self.key_path).agent_socket)
        self.environ({"SSH_AUTH_SOCK": "/run/agent.sock"})
        self.assertEqual(self.parse("-i", self.key_path).agent_socket, "/run/agent.sock")

    def test_identity_agent_option(self) -> None:
        """IdentityAgent: a path (~ expanded), none, SSH_AUTH_SOCK, $VAR and ${VAR}."""
        self.environ({"SSH_AUTH_SOCK": "/run/env.sock", "MY_AGENT": "/run/mine.sock"})
        cases = {
            "IdentityAgent=/run/other.sock": "/run/other.sock",
            "IdentityAgent=~/agent.sock": f"{self.home}/agent.sock",
            "IdentityAgent=none": None,
            "identityagent NONE": None,
            "IdentityAgent=SSH_AUTH_SOCK": "/run/env.sock",
            "IdentityAgent=$MY_AGENT": "/run/mine.sock",
            "IdentityAgent=$UNSET_AGENT_VARIABLE": None,
            "IdentityAgent=${MY_AGENT}.d": "/run/mine.sock.d",
        }
        for option, expected in cases.items():
            config = self.parse("-o", option, "-i", self.key_path)
            self.assertEqual(config.agent_socket, expected, option)

    def test_identity_agent_unset_variable(self) -> None:
        """${VAR} of an unset variable is an error naming it, as in ssh."""
        message = self.usage_error("-o", "IdentityAgent=${NO_SUCH_AGENT_VAR}", "-i", self.key_path)
        self.assertIn("environment variable NO_SUCH_AGENT_VAR is not set", message)

    def test_identities_only(self) -> None:
        """IdentitiesOnly=yes is kept; the default is no; other values are refused."""
        self.assertFalse(self.parse("-i", self.key_path).identities_only)
        self.assertTrue(self.parse("-o", "IdentitiesOnly=yes", "-i", self.key_path).identities_only)
        self.assertIn(
            "IdentitiesOnly must be yes or no",
            self.usage_error("-o", "IdentitiesOnly=maybe", "-i", self.key_path),
        )

    # -- passphrases -------------------------------------------------------------------------

    def test_passphrase_file(self) -> None:
        """--passphrase-file: the first line (its newline stripped) decrypts the key."""
        path = self.write("passphrase", PASSPHRASE + b"\r\nsecond line\n")
        config = self.parse("-i", self.encrypted(), "--passphrase-file", path)
        self.assertFalse(config.identities[0].key.isPublic())

    def test_passphrase_env(self) -> None:
        """--passphrase-env NAME: the variable's value decrypts the key."""
        self.environ({"KEY_PASSPHRASE": PASSPHRASE.decode()})
        config = self.parse("-i", self.encrypted(), "--passphrase-env", "KEY_PASSPHRASE")
        self.assertFalse(config.identities[0].key.isPublic())
        self.assertNotIn("open sesame", repr(config))

    def test_wrong_passphrase_names_the_file(self) -> None:
        """A wrong passphrase is a usage error naming the key file, not the passphrase."""
        key = self.encrypted()
        path = self.write("passphrase", b"open sesamE\n")
        message = self.usage_error("-i", key, "--passphrase-file", path)
        self.assertIn(f"cannot load key {key}: wrong passphrase", message)
        self.assertNotIn("sesamE", message)

    def test_encrypted_key_without_passphrase(self) -> None:
        """No passphrase and no agent: an explicit encrypted key is a usage error saying so."""
        key = self.encrypted()
        message = self.usage_error("-i", key)
        self.assertIn(f"cannot load key {key}: the key is encrypted", message)
        self.assertIn("--passphrase-file", message)

    def test_encrypted_key_left_to_the_agent(self) -> None:
        """With an agent, an encrypted key without passphrase keeps its public half."""
        self.environ({"SSH_AUTH_SOCK": "/run/agent.sock"})
        config = self.parse("-i", self.encrypted(), "-o", "IdentitiesOnly=yes")
        self.assertIsInstance(config.identities[0], PublicOnlyIdentity)
        self.assertTrue(config.identities_only)

    def test_passphrase_errors(self) -> None:
        """Both sources, an unset variable or an unreadable file: usage errors."""
        key = self.encrypted()
        passphrase = self.write("passphrase", PASSPHRASE)
        cases = {
            ("--passphrase-file", passphrase, "--passphrase-env", "X"): "not both",
            ("--passphrase-env", "NO_SUCH_PASSPHRASE_VAR"): "NO_SUCH_PASSPHRASE_VAR is not set",
            ("--passphrase-file", "/nonexistent/pw"): "cannot read passphrase file /nonexistent",
        }
        for argv, expected in cases.items():
            self.assertIn(expected, self.usage_error("-i", key, *argv), argv)

    def test_default_identities(self) -> None:
        """Encrypted ~/.ssh/id_*: decrypted with a passphrase, else skipped or left to an agent."""
        write_encrypted_key(self.home / ".ssh" / "id_ed25519", PASSPHRASE)
        passphrase = self.write("passphrase", PASSPHRASE + b"\n")
        config = self.parse("--passphrase-file", passphrase)
        self.assertEqual(
            [i.source for i in config.identities], [str(self.home / ".ssh" / "id_ed25519")]
        )
        self.assertFalse(config.identities[0].key.isPublic())
        self.assertIn("no identity", self.usage_error())
        self.environ({"SSH_AUTH_SOCK": "/run/agent.sock"})
        self.assertIsInstance(self.parse().identities[0], PublicOnlyIdentity)

    # -- password ----------------------------------------------------------------------------

    def test_password_file(self) -> None:
        """--password-file: the first line is the password; repr(config) never shows it."""
        path = self.write("password", "pässword\nrest\n".encode())
        config = self.parse("-i", self.key_path, "--password-file", path)
        self.assertEqual(config.password, "pässword")
        self.assertNotIn("pässword", repr(config))
        self.assertIsNone(self.parse("-i", self.key_path).password)

    def test_password_or_agent_instead_of_keys(self) -> None:
        """No key file at all is fine with a password or an agent; with neither, an error."""
        self.assertIn("no identity", self.usage_error())
        path = self.write("password", b"pw\n")
        self.assertEqual(self.parse("--password-file", path).identities, [])
        self.environ({"SSH_AUTH_SOCK": "/run/agent.sock"})
        self.assertEqual(self.parse().identities, [])

    def test_password_file_errors(self) -> None:
        """An unreadable or non-UTF-8 password file is a usage error naming it."""
        bad = self.write("password", b"\xff\xfe\n")
        self.assertIn(
            "cannot read password file /nonexistent/pw",
            self.usage_error("-i", self.key_path, "--password-file", "/nonexistent/pw"),
        )
        self.assertIn(
            f"password file {bad}: the password is not UTF-8",
            self.usage_error("-i", self.key_path, "--password-file", bad),
        )
