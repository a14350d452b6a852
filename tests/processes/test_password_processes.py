"""
Password logins to a real rfwd-server: OpenSSH's ssh typing the password through SSH_ASKPASS
(C{password} and C{keyboard-interactive}), a wrong password, and rfwd-client's C{--password-file}
with each method; the password file written by C{python -m twisted_rfwd.server.passwd}.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from twisted.trial.unittest import TestCase

from harness.openssh import ssh_argv
from tests.support.apps import start_app_server, wait_until_echo
from tests.support.pairs import (
    SSH_HOST,
    Keys,
    make_keys,
    ssh_config,
    start_rfwd_client,
    start_rfwd_server,
)
from tests.support.processes import ChildProcess, free_port, openssh_binary, plugin_env, spawn

PASSWORD = "correct horse battery staple"


def reactor() -> Any:
    from twisted.internet import reactor as r

    return r


class PasswordProcessTests(TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.keys: Keys = make_keys(Path(self.mktemp()))
        self.hashes = self.keys.workdir / "passwords"
        # As an admin adds a user: the package's command, the password on standard input.
        command = [sys.executable, "-m", "twisted_rfwd.server.passwd", str(self.hashes)]
        added = subprocess.run(
            [*command, self.keys.user, "--cost", "4"],
            input=f"{PASSWORD}\n".encode(),
            env={**os.environ, **plugin_env()},
            capture_output=True,
            timeout=30,
            check=False,
        )
        self.assertEqual(added.returncode, 0, added.stderr)

    async def server(self, method: str) -> tuple[ChildProcess, int]:
        """rfwd-server with only C{method} (password or keyboard-interactive) enabled."""
        return await start_rfwd_server(
            self,
            reactor(),
            self.keys,
            "--password-hashes",
            str(self.hashes),
            "--password-authentication",
            "yes" if method == "password" else "no",
            "--kbd-interactive-authentication",
            "yes" if method == "keyboard-interactive" else "no",
        )

    async def app_forward(self) -> tuple[str, int]:
        """An echo application, and a C{-R} spec that forwards a free port to it."""
        _, app_port = await start_app_server(reactor())
        self.addCleanup(app_port.stopListening)
        listen = free_port()
        destination = app_port.getHost().port  # type: ignore[attr-defined]
        return f"127.0.0.1:{listen}:127.0.0.1:{destination}", listen

    def ssh(self, port: int, spec: str, method: str, password: str) -> ChildProcess:
        """OpenSSH's ssh -N, its password typed by an askpass program, no key offered."""
        askpass = self.keys.workdir / "askpass"
        secret = self.keys.workdir / "askpass-secret"
        secret.write_text(password + "\n")
        askpass.write_text(f"#!/bin/sh\ncat '{secret}'\n")
        askpass.chmod(0o700)
        config = ssh_config(self.keys, port)
        argv = ssh_argv(
            openssh_binary("ssh"),
            config,
            SSH_HOST,
            [spec],
            "-o",
            "BatchMode=no",
            "-o",
            "PubkeyAuthentication=no",
            "-o",
            f"PreferredAuthentications={method}",
            "-o",
            "NumberOfPasswordPrompts=1",
        )
        env = {"SSH_ASKPASS": str(askpass), "SSH_ASKPASS_REQUIRE": "force"}
        return spawn(self, reactor(), "ssh", argv, env=env)

    async def assert_ssh_logs_in(self, method: str) -> None:
        server, port = await self.server(method)
        spec, listen = await self.app_forward()
        self.ssh(port, spec, method, PASSWORD)
        await wait_until_echo(reactor(), listen)
        user = self.keys.user
        # connection.py's line: "Accepted publickey for U from A: METHOD", or "Accepted METHOD
        # for U from A" once it names the method.
        await server.wait_for(
            rf"Accepted (\S+ for {user} from 127\.0\.0\.1:\d+: {method}|{method} for {user} from)"
        )
        self.assertNotIn(PASSWORD, server.output(1000))

    async def test_ssh_password(self) -> None:
        """ssh logs in with PreferredAuthentications=password and forwards."""
        await self.assert_ssh_logs_in("password")

    async def test_ssh_keyboard_interactive(self) -> None:
        """ssh answers the one keyboard-interactive question and forwards."""
        await self.assert_ssh_logs_in("keyboard-interactive")

    async def test_ssh_wrong_password(self) -> None:
        """A wrong password: ssh exits 255 with 'Permission denied'; the server logs who."""
        server, port = await self.server("password")
        spec, _ = await self.app_forward()
        ssh = self.ssh(port, spec, "password", "not the password")
        await ssh.wait_ended(30)
        self.assertEqual(ssh.exit_code, 255)
        self.assertIsNotNone(ssh.find(r"Permission denied"), ssh.output())
        await server.wait_for(
            rf"Failed password for {self.keys.user} from 127\.0\.0\.1:\d+: wrong password"
        )
        self.assertNotIn("not the password", server.output(1000))

    async def assert_client_logs_in(self, method: str) -> None:
        _, port = await self.server(method)
        spec, listen = await self.app_forward()
        password_file = self.keys.workdir / "password"
        password_file.write_text(PASSWORD + "\n")
        password_file.chmod(0o600)
        client = start_rfwd_client(
            self,
            reactor(),
            self.keys,
            port,
            [spec],
            "--password-file",
            str(password_file),
            identity=False,
        )
        await client.wait_for(rf"Authenticated as {self.keys.user} with {method}")
        await wait_until_echo(reactor(), listen)
        self.assertNotIn("Traceback", client.output(1000))

    async def test_rfwd_client_password(self) -> None:
        """rfwd-client --password-file logs in with password and forwards."""
        await self.assert_client_logs_in("password")

    async def test_rfwd_client_keyboard_interactive(self) -> None:
        """rfwd-client --password-file answers keyboard-interactive and forwards."""
        await self.assert_client_logs_in("keyboard-interactive")
