"""
rfwd-client's other ways to log in, with real processes: keys held by a real C{ssh-agent}
(against rfwd-server and OpenSSH's sshd), an encrypted key with its passphrase in a file, and
a password (and keyboard-interactive) against sshd for a throwaway system user.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from twisted.conch.ssh.keys import Key
from twisted.trial.unittest import SkipTest, TestCase

from tests.support.apps import start_app_server, wait_until_echo
from tests.support.keys import new_key, write_private_key
from tests.support.pairs import (
    SSHD_CONFIG,
    Keys,
    make_keys,
    start_rfwd_client,
    start_rfwd_server,
    start_sshd,
)
from tests.support.processes import ChildProcess, free_port, openssh_binary, spawn
from twisted_rfwd.ssh.fingerprint import fingerprint


def reactor() -> Any:
    from twisted.internet import reactor as r

    return r


class AuthTestCase(TestCase):
    timeout = 60

    def keys(self, kind: str = "ed25519") -> Keys:
        return make_keys(Path(self.mktemp()), kind)

    async def app_forward(self) -> tuple[str, int]:
        """An echo application, and a C{-R} spec that forwards a free port to it."""
        _, app_port = await start_app_server(reactor())
        self.addCleanup(app_port.stopListening)
        listen = free_port()
        destination = app_port.getHost().port  # type: ignore[attr-defined]
        return f"127.0.0.1:{listen}:127.0.0.1:{destination}", listen

    async def start_agent(self, *key_files: Path) -> str:
        """A real ssh-agent on a socket of its own, holding C{key_files}; its socket path."""
        agent_binary = openssh_binary("ssh-agent")
        # Short: a Unix socket path has a limit of about 100 bytes; trial's are longer.
        directory = tempfile.mkdtemp(prefix="rfwd-agent-")
        self.addCleanup(shutil.rmtree, directory, True)
        socket_path = os.path.join(directory, "agent.sock")
        agent = spawn(self, reactor(), "ssh-agent", [agent_binary, "-D", "-a", socket_path])
        await agent.wait_for(r"SSH_AUTH_SOCK=")
        for key_file in key_files:
            add = spawn(
                self,
                reactor(),
                "ssh-add",
                [openssh_binary("ssh-add"), str(key_file)],
                env={"SSH_AUTH_SOCK": socket_path},
            )
            await add.wait_ended(30)
            self.assertEqual(add.exit_code, 0, add.output())
        return socket_path

    async def assert_logs_in(self, client: ChildProcess, listen: int, pattern: str) -> None:
        """The client logged in as C{pattern} says, and the forward carries an echo."""
        await client.wait_for(r"Connected to 127\.0\.0\.1")
        self.assertIsNotNone(client.find(pattern), client.output())
        await wait_until_echo(reactor(), listen)
        self.assertNotIn("Traceback", client.output(1000))


class AgentTests(AuthTestCase):
    async def test_agent_key_logs_in_to_rfwd_server(self) -> None:
        """With SSH_AUTH_SOCK and no -i, the agent's key logs in to rfwd-server."""
        keys = self.keys()
        socket_path = await self.start_agent(keys.user_key)
        _, port = await start_rfwd_server(self, reactor(), keys)
        spec, listen = await self.app_forward()
        client = start_rfwd_client(
            self, reactor(), keys, port, [spec], identity=False, env={"SSH_AUTH_SOCK": socket_path}
        )
        await self.assert_logs_in(client, listen, r"Authenticated as \S+ with agent key")

    async def test_agent_rsa_key_logs_in_to_sshd(self) -> None:
        """An RSA key in the agent logs in to sshd: the agent signs with rsa-sha2-512."""
        keys = self.keys("rsa")
        socket_path = await self.start_agent(keys.user_key)
        sshd, port = await start_sshd(self, reactor(), keys)
        spec, listen = await self.app_forward()
        client = start_rfwd_client(
            self, reactor(), keys, port, [spec], identity=False, env={"SSH_AUTH_SOCK": socket_path}
        )
        await self.assert_logs_in(client, listen, r"Authenticated as \S+ with agent key .*ssh-rsa")
        await sshd.wait_for(r"Accepted publickey for \S+ .* RSA SHA256:")

    async def test_identity_agent_option_names_the_socket(self) -> None:
        """-o IdentityAgent=PATH finds the agent without SSH_AUTH_SOCK; =none ignores it."""
        keys = self.keys()
        socket_path = await self.start_agent(keys.user_key)
        _, port = await start_rfwd_server(self, reactor(), keys)
        spec, listen = await self.app_forward()
        client = start_rfwd_client(
            self,
            reactor(),
            keys,
            port,
            [spec],
            "-o",
            f"IdentityAgent={socket_path}",
            identity=False,
        )
        await self.assert_logs_in(client, listen, r"Authenticated as \S+ with agent key")
        await client.stop()
        refused = start_rfwd_client(
            self,
            reactor(),
            keys,
            port,
            [spec],
            "-o",
            "IdentityAgent=none",
            "-o",
            "IdentityFile=/nonexistent/key",
            identity=False,
            env={"SSH_AUTH_SOCK": socket_path},
        )
        await refused.wait_ended(30)
        self.assertIn("cannot load key /nonexistent/key", refused.output())

    async def test_encrypted_key_file_signed_by_the_agent(self) -> None:
        """
        IdentitiesOnly=yes and -i naming an encrypted key (no passphrase given) whose key the
        agent holds: the agent signs for it, and the agent's other key is not offered.
        """
        keys = self.keys()
        encrypted = keys.workdir / "encrypted_key"
        encrypted.write_bytes(
            Key.fromFile(str(keys.user_key)).toString("OPENSSH", passphrase=b"not given")
        )
        os.chmod(encrypted, 0o600)
        other = write_private_key(new_key(), keys.workdir / "other_key")
        socket_path = await self.start_agent(other, keys.user_key)
        sshd, port = await start_sshd(self, reactor(), keys)
        spec, listen = await self.app_forward()
        client = start_rfwd_client(
            self,
            reactor(),
            keys,
            port,
            [spec],
            "-i",
            str(encrypted),
            "-o",
            "IdentitiesOnly=yes",
            identity=False,
            env={"SSH_AUTH_SOCK": socket_path},
        )
        shown = re.escape(str(encrypted))
        await self.assert_logs_in(
            client, listen, rf"Authenticated as \S+ with {shown} .*from the agent"
        )
        user_fingerprint = fingerprint(Key.fromFile(str(keys.user_key)))
        await sshd.wait_for(r"Accepted publickey for \S+ .* ED25519 " + re.escape(user_fingerprint))
        # The agent's keys matching the files go first: the other key was not needed.
        self.assertNotIn(fingerprint(Key.fromFile(str(other))), sshd.output(1000))

    async def test_identities_only_keeps_agent_keys_back(self) -> None:
        """IdentitiesOnly=yes: the agent's key is not offered; only the -i key is (refused)."""
        keys = self.keys()
        socket_path = await self.start_agent(keys.user_key)
        stranger = write_private_key(new_key(), keys.workdir / "stranger_key")
        _, port = await start_rfwd_server(self, reactor(), keys)
        client = start_rfwd_client(
            self,
            reactor(),
            keys,
            port,
            ["0:127.0.0.1:9"],
            "-i",
            str(stranger),
            "-o",
            "IdentitiesOnly=yes",
            "--no-reconnect",
            identity=False,
            env={"SSH_AUTH_SOCK": socket_path},
        )
        await client.wait_ended(30)
        self.assertEqual(client.exit_code, 255)
        output = client.output()
        self.assertIn(f"tried {stranger} (ssh-ed25519 ", output)
        self.assertNotIn("agent key", output)


class PassphraseTests(AuthTestCase):
    async def test_encrypted_key_with_passphrase_file_logs_in_to_sshd(self) -> None:
        """A key encrypted by ssh-keygen (bcrypt KDF) and --passphrase-file log in to sshd."""
        keys = self.keys()
        encrypted = keys.workdir / "id_encrypted"
        keygen = spawn(
            self,
            reactor(),
            "ssh-keygen",
            [
                openssh_binary("ssh-keygen"),
                "-q",
                "-t",
                "ed25519",
                "-N",
                "correct horse",
                "-C",
                "encrypted",
                "-f",
                str(encrypted),
            ],
        )
        await keygen.wait_ended(30)
        self.assertEqual(keygen.exit_code, 0, keygen.output())
        keys.authorized_keys.write_bytes(Path(f"{encrypted}.pub").read_bytes())
        passphrase_file = keys.workdir / "passphrase"
        passphrase_file.write_text("correct horse\n")
        _, port = await start_sshd(self, reactor(), keys)
        spec, listen = await self.app_forward()
        client = start_rfwd_client(
            self,
            reactor(),
            keys,
            port,
            [spec],
            "-i",
            str(encrypted),
            "--passphrase-file",
            str(passphrase_file),
            identity=False,
        )
        shown = re.escape(str(encrypted))
        await self.assert_logs_in(client, listen, rf"Authenticated as \S+ with {shown} ")
        self.assertNotIn("correct horse", client.output(1000))


class ThrowawayUser:
    """A system user with a known password, removed again by the test's cleanup."""

    def __init__(self, test: TestCase) -> None:
        if os.geteuid() != 0:
            raise SkipTest("creating a system user needs root")
        for tool in ("useradd", "userdel", "usermod", "openssl"):
            if shutil.which(tool) is None:
                raise SkipTest(f"{tool} is not installed")
        self.name = f"rfwdtest{secrets.token_hex(4)}"
        self.password = f"pw-{secrets.token_urlsafe(12)}"
        subprocess.run(
            ["useradd", "-M", "-d", "/nonexistent", "-s", "/bin/sh", self.name],
            check=True,
            capture_output=True,
        )
        test.addCleanup(self.remove)
        hashed = subprocess.run(
            ["openssl", "passwd", "-6", "-stdin"],
            input=self.password + "\n",
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        subprocess.run(["usermod", "-p", hashed, self.name], check=True, capture_output=True)

    def remove(self) -> None:
        subprocess.run(["userdel", "-f", self.name], check=False, capture_output=True)


async def start_sshd_config(
    test: TestCase, keys: Keys, before: str, after: str
) -> tuple[ChildProcess, int]:
    """
    sshd with the usual test configuration, C{before} placed ahead of it (sshd keeps the
    first value of a keyword, so those win) and C{after} (Match blocks) at the end.
    """
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    config = keys.workdir / "sshd_config"
    template = SSHD_CONFIG.format(host_key=keys.host_key, authorized_keys=keys.authorized_keys)
    config.write_text(before + template + after)
    port = free_port()
    sshd = openssh_binary("sshd")
    server = spawn(test, reactor(), "sshd", [sshd, "-D", "-e", "-f", str(config), "-p", str(port)])
    await server.wait_for(r"Server listening on 127\.0\.0\.1 port")
    return server, port


class PasswordTests(AuthTestCase):
    def password_client(
        self,
        keys: Keys,
        port: int,
        forwards: list[str],
        user: ThrowawayUser,
        password_file: Path,
        *options: str,
    ) -> ChildProcess:
        """rfwd-client logging in as the throwaway user with --password-file."""
        return start_rfwd_client(
            self,
            reactor(),
            keys,
            port,
            forwards,
            "-l",
            user.name,
            "--password-file",
            str(password_file),
            *options,
        )

    async def start_sshd_for(
        self, keys: Keys, user: ThrowawayUser, pubkey: bool = False
    ) -> tuple[ChildProcess, int]:
        """sshd taking the user's password; with C{pubkey}, keys are tried (none is theirs)."""
        # sshd keeps the first value of a keyword: a Match block overrides the template's.
        extra = f"Match User {user.name}\n  PasswordAuthentication yes\n" + (
            "  AuthorizedKeysFile none\n" if pubkey else "  PubkeyAuthentication no\n"
        )
        return await start_sshd(self, reactor(), keys, extra)

    async def login_with_password(self, pubkey: bool) -> ChildProcess:
        """Log the throwaway user in with --password-file; the forward must carry an echo."""
        keys = self.keys()
        user = ThrowawayUser(self)
        password_file = keys.workdir / "password"
        password_file.write_text(user.password + "\n")
        sshd, port = await self.start_sshd_for(keys, user, pubkey)
        spec, listen = await self.app_forward()
        client = self.password_client(keys, port, [spec], user, password_file)
        await self.assert_logs_in(client, listen, rf"Authenticated as {user.name} with password")
        await sshd.wait_for(rf"Accepted password for {user.name} ")
        self.assertNotIn(user.password, client.output(1000))
        return sshd

    async def test_password_logs_in_to_sshd(self) -> None:
        """--password-file logs a system user in to sshd (password auth); the forward works."""
        await self.login_with_password(pubkey=False)

    async def test_key_refused_then_password(self) -> None:
        """The key is offered and refused first; then the password logs in."""
        sshd = await self.login_with_password(pubkey=True)
        self.assertIsNotNone(sshd.find(r"Failed publickey for rfwdtest\w+ .* ED25519 SHA256:"))

    async def test_wrong_password_is_refused_without_showing_it(self) -> None:
        """A wrong password ends with exit 255 listing what was tried, never the password."""
        keys = self.keys()
        user = ThrowawayUser(self)
        password_file = keys.workdir / "password"
        password_file.write_text("wrong-" + user.password + "\n")
        _, port = await self.start_sshd_for(keys, user, pubkey=True)
        client = self.password_client(
            keys, port, ["0:127.0.0.1:9"], user, password_file, "--no-reconnect"
        )
        await client.wait_ended(60)
        self.assertEqual(client.exit_code, 255)
        output = client.output(1000)
        self.assertIn(f"Permission denied for user '{user.name}'", output)
        self.assertIn(f"tried {keys.user_key} (ssh-ed25519 SHA256:", output)
        self.assertIn(", password;", output)
        self.assertNotIn(user.password, output)

    async def test_keyboard_interactive_password_prompt(self) -> None:
        """sshd with PAM asks 'Password:' through keyboard-interactive; the password answers."""
        if not os.path.exists("/etc/pam.d/sshd"):
            raise SkipTest("no PAM configuration for sshd")
        keys = self.keys()
        user = ThrowawayUser(self)
        password_file = keys.workdir / "password"
        password_file.write_text(user.password)  # no line ending at all: the same first line
        sshd, port = await start_sshd_config(
            self,
            keys,
            "UsePAM yes\n",
            f"Match User {user.name}\n"
            "  PubkeyAuthentication no\n"
            "  PasswordAuthentication no\n"
            "  KbdInteractiveAuthentication yes\n",
        )
        spec, listen = await self.app_forward()
        client = self.password_client(keys, port, [spec], user, password_file)
        await self.assert_logs_in(
            client, listen, rf"Authenticated as {user.name} with keyboard-interactive"
        )
        await sshd.wait_for(rf"Accepted keyboard-interactive/pam for {user.name} ")
