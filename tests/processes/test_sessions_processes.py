"""
The seed's command as typed: OpenSSH's C{ssh -R ... host} without C{-N}, and PuTTY's plink
without C{-N}, against a real rfwd-server.  The server holds the session open, running nothing,
shows the forwards with their bound ports, and lets the user leave with EOF, Ctrl-C, Ctrl-D or
ssh's C{~.}; the forwarded port is freed after.

The pty cases run ssh under a pseudo-terminal of its own (Twisted's C{usePTY}), as a user's
terminal would: ssh then asks for a pty and puts it in raw mode, so Ctrl-C reaches the server as
a byte.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IListeningPort
from twisted.trial.unittest import SkipTest, TestCase

from harness.openssh import find_program, ssh_argv
from tests.support.apps import echo_ok, start_app_server, wait_until_echo
from tests.support.pairs import (
    SSH_HOST,
    Keys,
    make_keys,
    ssh_config,
    start_rfwd_server,
    start_ssh,
)
from tests.support.processes import (
    ChildProcess,
    ProcessFailed,
    free_port,
    openssh_binary,
    spawn,
)


def plink_binary(name: str = "plink") -> str:
    """Path of a PuTTY program; skip if missing, unless CI requires it (as for OpenSSH)."""
    found = find_program(name)
    if found:
        return found
    message = f"PuTTY's {name} is not installed (Debian package putty-tools)"
    if os.environ.get("RFWD_REQUIRE_OPENSSH"):
        raise ProcessFailed(message + " (RFWD_REQUIRE_OPENSSH is set)")
    raise SkipTest(message)


def spawn_in_pty(test: TestCase, reactor: Any, name: str, argv: list[str]) -> ChildProcess:
    """Start C{argv} on a pseudo-terminal of its own; stopped by a cleanup of C{test}."""
    child = ChildProcess(name, reactor)
    environment = {**os.environ, "TERM": "xterm"}
    reactor.spawnProcess(child, argv[0], argv, env=environment, usePTY=True)
    test.addCleanup(lambda: defer.Deferred.fromCoroutine(child.stop()))
    return child


def press(child: ChildProcess, keys: bytes) -> None:
    """Type C{keys} on the child's terminal."""
    assert child.transport is not None
    child.transport.write(keys)


def end_input(child: ChildProcess) -> None:
    """Close the child's standard input: EOF."""
    assert child.transport is not None
    child.transport.closeStdin()


class SessionProcessTests(TestCase):
    timeout = 120

    @property
    def reactor(self) -> Any:
        from twisted.internet import reactor

        return reactor

    async def setup(self, *server_options: str) -> tuple[Keys, ChildProcess, int, int]:
        """Keys, an app server to forward to, and rfwd-server: (keys, server, ssh port, app)."""
        keys = make_keys(Path(self.mktemp()))
        _, app = await start_app_server(self.reactor)
        listening: IListeningPort = app
        self.addCleanup(listening.stopListening)
        app_port = listening.getHost().port  # type: ignore[attr-defined]
        server, ssh_port = await start_rfwd_server(self, self.reactor, keys, *server_options)
        return keys, server, ssh_port, app_port

    async def port_freed(self, server: ChildProcess, port: int) -> None:
        """The server closed the forward on C{port}, and nothing answers there any more."""
        await server.wait_for(rf"Remote forward for \S+ on 127\.0\.0\.1:{port}\b.* closed")
        self.assertFalse(await echo_ok(self.reactor, port))

    def ssh_in_pty(self, keys: Keys, ssh_port: int, forwards: list[str]) -> ChildProcess:
        config = ssh_config(keys, ssh_port)
        argv = ssh_argv(openssh_binary("ssh"), config, SSH_HOST, forwards, session=True)
        return spawn_in_pty(self, self.reactor, "ssh", argv)

    async def test_without_pty_eof_ends_with_status_zero(self) -> None:
        """
        ssh -T without -N: the text on stdout names the port bound for port 0, data crosses
        the forward while the session is held, and closing ssh's stdin ends ssh with status 0
        and frees the port.
        """
        keys, server, ssh_port, app_port = await self.setup()
        ssh = start_ssh(
            self, self.reactor, keys, ssh_port, [f"0:127.0.0.1:{app_port}"], "-T", session=True
        )
        allocated = int((await ssh.wait_for(r"Allocated port (\d+) for remote forward")).group(1))
        await ssh.wait_for(rf"^  127\.0\.0\.1:{allocated}\b")
        self.assertIsNotNone(ssh.find(r"^rfwd-server .*: port forwarding for"))
        await wait_until_echo(self.reactor, allocated)
        self.assertFalse(ssh.ended)
        end_input(ssh)
        await ssh.wait_ended(30)
        self.assertEqual(ssh.exit_code, 0, ssh.output())
        await self.port_freed(server, allocated)
        await server.wait_for(r"Session \d+ of \S+ from .*: ended: the client's input ended")

    async def test_pty_ctrl_c_ends_with_status_zero(self) -> None:
        """Through a pty: the text shows the bound port; Ctrl-C ends ssh with status 0."""
        keys, server, ssh_port, app_port = await self.setup()
        listen = free_port()
        ssh = self.ssh_in_pty(keys, ssh_port, [f"127.0.0.1:{listen}:127.0.0.1:{app_port}"])
        await ssh.wait_for(rf"^  127\.0\.0\.1:{listen}$")
        await server.wait_for(r"held open with a pty \(xterm\)")
        await wait_until_echo(self.reactor, listen)
        press(ssh, b"\x03")
        await ssh.wait_ended(30)
        self.assertEqual(ssh.exit_code, 0, ssh.output())
        await self.port_freed(server, listen)

    async def test_pty_ctrl_d_ends_with_status_zero(self) -> None:
        """Through a pty: Ctrl-D ends ssh with status 0 and frees the port."""
        keys, server, ssh_port, app_port = await self.setup()
        listen = free_port()
        ssh = self.ssh_in_pty(keys, ssh_port, [f"127.0.0.1:{listen}:127.0.0.1:{app_port}"])
        await ssh.wait_for(rf"^  127\.0\.0\.1:{listen}$")
        press(ssh, b"\x04")
        await ssh.wait_ended(30)
        self.assertEqual(ssh.exit_code, 0, ssh.output())
        await self.port_freed(server, listen)

    async def test_pty_tilde_dot_ends_ssh(self) -> None:
        """
        Through a pty: ~. makes ssh drop the connection; ssh itself then exits 255 whatever
        the server does (OpenSSH's rule), and the port is freed.
        """
        keys, server, ssh_port, app_port = await self.setup()
        listen = free_port()
        ssh = self.ssh_in_pty(keys, ssh_port, [f"127.0.0.1:{listen}:127.0.0.1:{app_port}"])
        await ssh.wait_for(rf"^  127\.0\.0\.1:{listen}$")
        press(ssh, b"\r~.")
        await ssh.wait_ended(30)
        self.assertEqual(ssh.exit_code, 255, ssh.output())
        await self.port_freed(server, listen)
        await server.wait_for(r"ended: the SSH connection ended")

    async def test_command_runs_nothing(self) -> None:
        """ssh host true: one line on stderr saying why, and ssh exits 1."""
        keys, server, ssh_port, _ = await self.setup()
        config = ssh_config(keys, ssh_port)
        argv = [openssh_binary("ssh"), "-F", str(config), SSH_HOST, "true"]
        ssh = spawn(self, self.reactor, "ssh", argv)
        await ssh.wait_ended(30)
        self.assertEqual(ssh.exit_code, 1, ssh.output())
        self.assertIsNotNone(ssh.find(r"^rfwd-server runs no commands: it only forwards ports"))
        await server.wait_for(r"asked for a command, which rfwd-server does not run")

    async def test_plink_without_n_holds_the_forward(self) -> None:
        """
        PuTTY's plink without -N opens a session the same way: the text shows the forward,
        data crosses it, and the end of plink's input ends plink with status 0.
        """
        plink = plink_binary()
        puttygen = plink_binary("puttygen")
        keys, server, ssh_port, app_port = await self.setup()
        fingerprint = (await server.wait_for(r"Host key ssh-ed25519 (SHA256:\S+)")).group(1)
        ppk = keys.workdir / "user_key.ppk"
        subprocess.run(
            [puttygen, str(keys.user_key), "-O", "private", "-o", str(ppk)],
            check=True,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=30,
        )
        listen = free_port()
        argv = [
            plink,
            "-batch",
            "-ssh",
            "-noagent",
            "-P",
            str(ssh_port),
            "-l",
            keys.user,
            "-i",
            str(ppk),
            "-hostkey",
            fingerprint,
            "-R",
            f"127.0.0.1:{listen}:127.0.0.1:{app_port}",
            "127.0.0.1",
        ]
        home = {"HOME": str(keys.workdir)}
        child = spawn(self, self.reactor, "plink", argv, env=home)
        await child.wait_for(r"rfwd-server .*: port forwarding for")
        await wait_until_echo(self.reactor, listen)
        self.assertTrue(any(re.search(rf"127\.0\.0\.1:{listen}\b", line) for line in child.lines))
        end_input(child)
        await child.wait_ended(30)
        self.assertEqual(child.exit_code, 0, child.output())
        await self.port_freed(server, listen)
