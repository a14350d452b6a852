"""
OpenSSH's Unix-socket remote forwards (its "streamlocal" extension) between real processes:
C{-R /remote.sock:host:port}, C{-R port:/local.sock} and C{-R /remote.sock:/local.sock}, for
rfwd-client with OpenSSH's sshd, OpenSSH's ssh with rfwd-server, and rfwd with rfwd.
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
import tempfile
from pathlib import Path
from typing import Any

from twisted.internet.defer import gatherResults
from twisted.internet.endpoints import UNIXClientEndpoint
from twisted.internet.interfaces import IListeningPort
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from harness.plugins import twistd_argv
from tests.support.apps import (
    AppServerFactory,
    digest_line,
    exchange,
    exchange_over,
    pattern,
    start_app_server,
    wait_until_echo,
)
from tests.support.pairs import (
    Keys,
    make_keys,
    start_rfwd_client,
    start_rfwd_server,
    start_ssh,
    start_sshd,
)
from tests.support.processes import ChildProcess, free_port, openssh_binary, plugin_env, spawn

MiB = 1024 * 1024


async def socket_exchange(reactor: Any, path: str, request: bytes, timeout: float = 30.0) -> bytes:
    """Connect to the Unix socket C{path}, send C{request}, shut down writing, read to EOF."""
    return await exchange_over(
        reactor, UNIXClientEndpoint(reactor, path, timeout=10), request, timeout
    )


async def wait_until_socket_echo(reactor: Any, path: str, deadline: float = 30.0) -> None:
    """Poll the socket C{path} with echoes until one comes back, or fail after C{deadline} s."""
    start = reactor.seconds()
    while reactor.seconds() - start < deadline:
        try:
            if await socket_exchange(reactor, path, b"Eping", timeout=5) == b"Eping":
                return
        except Exception:
            pass
        await deferLater(reactor, 0.1, lambda: None)
    raise AssertionError(f"no working tunnel at {path} after {deadline}s")


async def wait_until_gone(reactor: Any, path: str, deadline: float = 30.0) -> None:
    """Poll until the file C{path} no longer exists, or fail after C{deadline} s."""
    start = reactor.seconds()
    while reactor.seconds() - start < deadline:
        if not os.path.lexists(path):
            return
        await deferLater(reactor, 0.05, lambda: None)
    raise AssertionError(f"{path} still exists after {deadline}s")


class StreamLocalScenarios:
    """The scenarios; subclasses say how to start their pair."""

    timeout = 90
    keys: Keys
    app: AppServerFactory
    app_port: int
    sockets: Path
    removes_socket_file = True

    async def start_pair(self, forwards: list[str]) -> tuple[ChildProcess, ChildProcess]:
        raise NotImplementedError

    @property
    def reactor(self) -> Any:
        from twisted.internet import reactor

        return reactor

    @property
    def test(self) -> TestCase:
        return self  # type: ignore[return-value]

    async def set_up(self) -> None:
        """Keys, a TCP app server, and a short directory for sockets (sun_path is short)."""
        self.keys = make_keys(Path(self.test.mktemp()))
        self.app, port = await start_app_server(self.reactor)
        listening: IListeningPort = port
        self.test.addCleanup(listening.stopListening)
        self.app_port = listening.getHost().port  # type: ignore[attr-defined]
        self.sockets = Path(tempfile.mkdtemp(prefix="rfwd-sl-"))
        self.test.addCleanup(shutil.rmtree, self.sockets, True)

    def unix_app(self, name: str) -> str:
        """The app server also listening on a Unix socket in the test's directory."""
        path = str(self.sockets / name)
        port = self.reactor.listenUNIX(path, self.app)
        self.test.addCleanup(port.stopListening)
        return path

    async def test_remote_socket_to_port(self) -> None:
        """-R /remote.sock:host:port: data both ways, half-close; the socket file mode 0600."""
        await self.set_up()
        remote = str(self.sockets / "remote.sock")
        await self.start_pair([f"{remote}:127.0.0.1:{self.app_port}"])
        await wait_until_socket_echo(self.reactor, remote)
        upload = pattern(1 * MiB, seed=7)
        self.test.assertEqual(
            await socket_exchange(self.reactor, remote, b"U" + upload), digest_line(upload)
        )
        echo = b"E" + pattern(300_000, seed=8)
        self.test.assertEqual(await socket_exchange(self.reactor, remote, echo), echo)
        self.test.assertEqual(stat.S_IMODE(os.stat(remote).st_mode), 0o600)

    async def test_port_to_local_socket(self) -> None:
        """-R [bind:]port:/local.sock: connections on the server's port reach the Unix socket."""
        await self.set_up()
        local = self.unix_app("local.sock")
        listen = free_port()
        await self.start_pair([f"127.0.0.1:{listen}:{local}"])
        await wait_until_echo(self.reactor, listen)
        upload = pattern(1 * MiB, seed=9)
        self.test.assertEqual(
            await exchange(self.reactor, listen, b"U" + upload), digest_line(upload)
        )

    async def test_socket_to_socket(self) -> None:
        """-R /remote.sock:/local.sock; the server's socket file goes when the client leaves."""
        await self.set_up()
        local = self.unix_app("local.sock")
        remote = str(self.sockets / "remote.sock")
        _, client = await self.start_pair([f"{remote}:{local}"])
        await wait_until_socket_echo(self.reactor, remote)
        echo = b"E" + pattern(100_000, seed=10)
        self.test.assertEqual(await socket_exchange(self.reactor, remote, echo), echo)
        await client.stop()
        if self.removes_socket_file:
            await wait_until_gone(self.reactor, remote)


class RfwdClientSshdTests(StreamLocalScenarios, TestCase):
    """rfwd-client with OpenSSH's sshd (which leaves its socket files behind)."""

    removes_socket_file = False

    async def start_pair(self, forwards: list[str]) -> tuple[ChildProcess, ChildProcess]:
        server, ssh_port = await start_sshd(self, self.reactor, self.keys)
        client = start_rfwd_client(self, self.reactor, self.keys, ssh_port, forwards)
        await client.wait_for(r"Connected to 127\.0\.0\.1 port \d+: 1 of 1 forwards listening")
        return server, client


class SshRfwdServerTests(StreamLocalScenarios, TestCase):
    """OpenSSH's ssh with rfwd-server."""

    async def start_pair(self, forwards: list[str]) -> tuple[ChildProcess, ChildProcess]:
        server, ssh_port = await start_rfwd_server(self, self.reactor, self.keys)
        client = start_ssh(self, self.reactor, self.keys, ssh_port, forwards)
        await server.wait_for(r"Remote forward for \S+: listening on")
        return server, client


class RfwdRfwdTests(StreamLocalScenarios, TestCase):
    """rfwd-client with rfwd-server."""

    async def start_pair(self, forwards: list[str]) -> tuple[ChildProcess, ChildProcess]:
        server, ssh_port = await start_rfwd_server(self, self.reactor, self.keys)
        client = start_rfwd_client(self, self.reactor, self.keys, ssh_port, forwards)
        await client.wait_for(r"Connected to 127\.0\.0\.1 port \d+: 1 of 1 forwards listening")
        return server, client

    async def test_remote_forward_in_config_file(self) -> None:
        """C{RemoteForward /remote.sock host:port} in an ssh_config file (-F) works too."""
        await self.set_up()
        remote = str(self.sockets / "remote.sock")
        config = self.keys.workdir / "client_config"
        config.write_text(f"RemoteForward {remote} 127.0.0.1:{self.app_port}\n")
        _, ssh_port = await start_rfwd_server(self, self.reactor, self.keys)
        start_rfwd_client(self, self.reactor, self.keys, ssh_port, [], "-F", str(config))
        await wait_until_socket_echo(self.reactor, remote)


class RfwdServerPolicyTests(TestCase):
    """rfwd-server's sshd settings for Unix-socket forwards, seen from OpenSSH's ssh."""

    timeout = 60

    @property
    def reactor(self) -> Any:
        from twisted.internet import reactor

        return reactor

    def setUp(self) -> None:
        self.keys = make_keys(Path(self.mktemp()))
        self.sockets = Path(tempfile.mkdtemp(prefix="rfwd-sl-"))
        self.addCleanup(shutil.rmtree, self.sockets, True)

    async def server(self, config: str) -> tuple[ChildProcess, int]:
        path = self.keys.workdir / "rfwd-server.conf"
        path.write_text(config)
        return await start_rfwd_server(self, self.reactor, self.keys, "--config", str(path))

    async def test_refused_when_disabled(self) -> None:
        """AllowStreamLocalForwarding no: ssh is refused (and says so); no socket file."""
        server, port = await self.server("AllowStreamLocalForwarding no\n")
        remote = str(self.sockets / "remote.sock")
        ssh = start_ssh(
            self,
            self.reactor,
            self.keys,
            port,
            [f"{remote}:127.0.0.1:{free_port()}"],
            "-o",
            "ExitOnForwardFailure=yes",
        )
        await ssh.wait_for(rf"remote port forwarding failed for listen path {remote}")
        await server.wait_for(r"Refused remote forward .*Unix socket .*AllowStreamLocalForwarding")
        await ssh.wait_ended()
        self.assertFalse(os.path.lexists(remote))

    def stale_socket_file(self, name: str) -> str:
        """A socket file nothing listens on, as a crashed program leaves behind."""
        path = str(self.sockets / name)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.bind(path)
        return path

    async def test_existing_socket_file_refused(self) -> None:
        """By default (StreamLocalBindUnlink no) an existing socket file is not replaced."""
        remote = self.stale_socket_file("remote.sock")
        server, port = await self.server("")
        ssh = start_ssh(
            self,
            self.reactor,
            self.keys,
            port,
            [f"{remote}:127.0.0.1:{free_port()}"],
            "-o",
            "ExitOnForwardFailure=yes",
        )
        await ssh.wait_for(r"remote port forwarding failed for listen path")
        await server.wait_for(r"Unix socket .*: cannot listen there: Address already in use")
        await ssh.wait_ended()
        self.assertTrue(os.path.lexists(remote))

    async def test_unlink_and_mask(self) -> None:
        """StreamLocalBindUnlink yes replaces a stale socket; StreamLocalBindMask sets the mode."""
        remote = self.stale_socket_file("remote.sock")
        _, listening = await start_app_server(self.reactor)
        self.addCleanup(listening.stopListening)
        app_port = listening.getHost().port  # type: ignore[attr-defined]
        _, port = await self.server("StreamLocalBindUnlink yes\nStreamLocalBindMask 0117\n")
        ssh = start_ssh(self, self.reactor, self.keys, port, [f"{remote}:127.0.0.1:{app_port}"])
        # Nothing listened on the stale file: an echo means the server's socket replaced it.
        await wait_until_socket_echo(self.reactor, remote)
        found = os.stat(remote)
        self.assertEqual(stat.S_IMODE(found.st_mode), 0o660)
        await ssh.stop()
        await wait_until_gone(self.reactor, remote)


class DumpTests(TestCase):
    """C{-G}: the Unix-socket forwards printed as OpenSSH's ssh prints them."""

    timeout = 60

    async def test_remote_forwards_like_ssh(self) -> None:
        """ssh -G and rfwd-client -G print the same remoteforward lines for the socket forms."""
        from twisted.internet import reactor

        forms = ["/r.sock:localhost:80", "8080:/l.sock", "/r2.sock:/l.sock", "[::1]:8081:/l.sock"]
        arguments = [part for form in forms for part in ("-R", form)]
        env = {**plugin_env(), "SSH_AUTH_SOCK": ""}
        ssh = spawn(
            self, reactor, "ssh", [openssh_binary("ssh"), "-G", "-F", "none", *arguments, "h"]
        )
        rfwd = spawn(
            self,
            reactor,
            "rfwd-client",
            twistd_argv("rfwd-client", "-G", "-F", "none", *arguments, "h"),
            env=env,
        )
        await gatherResults([ssh.wait_ended(30), rfwd.wait_ended(30)])

        def forwards(child: ChildProcess) -> list[str]:
            return [line for line in child.lines if line.startswith("remoteforward ")]

        self.assertEqual(len(forwards(ssh)), 4, ssh.output())
        self.assertEqual(forwards(rfwd), forwards(ssh), rfwd.output())
