"""
The real pairs with OpenSSH 10.0 (from bookworm-backports, unpacked by C{.ci/openssh10.sh})
instead of the system's 9.2: OpenSSH 10's ssh with rfwd-server, rfwd-client with OpenSSH 10's
sshd.  Bulk data both ways and half-close, as test_pairs checks with 9.2, and the post-quantum
key exchange OpenSSH 10 prefers, as both ends log it.
"""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path
from typing import Any

from twisted.internet.interfaces import IListeningPort
from twisted.trial.unittest import TestCase

from harness.openssh import OPENSSH_10
from tests.support.apps import (
    digest_line,
    exchange,
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
from tests.support.processes import ChildProcess, free_port

MiB = 1024 * 1024

POST_QUANTUM = "mlkem768x25519-sha256"
"""OpenSSH 10's default key exchange."""

RFWD_KEX = r"Key exchange with .+?: (\S+), host key "
"""What rfwd logs (at info) once a key exchange is agreed; group 1 is its name."""

OPENSSH_KEX = r"kex: algorithm: (\S+)"
"""What ssh -v and sshd at LogLevel DEBUG1 log once a key exchange is agreed."""

OPENSSH_10_VERSION = r"Local version string SSH-2\.0-OpenSSH_10\.0"
"""What ssh -v and sshd at LogLevel DEBUG1 log when they are OpenSSH 10.0."""


class OpenSSH10Scenarios:
    """The scenarios; subclasses start the pair, and say which processes log what."""

    timeout = 120
    keys: Keys
    app_port: int

    @property
    def reactor(self) -> Any:
        from twisted.internet import reactor

        return reactor

    async def start_pair(self, forwards: list[str]) -> tuple[ChildProcess, ChildProcess]:
        """Start the pair with C{forwards}; returns (rfwd's process, OpenSSH's process)."""
        raise NotImplementedError

    async def forwarding(self) -> tuple[ChildProcess, ChildProcess, int]:
        """A pair with one forward of a free loopback port to the app server, answering."""
        test: TestCase = self  # type: ignore[assignment]
        self.keys = make_keys(Path(test.mktemp()))
        _, port = await start_app_server(self.reactor)
        listening: IListeningPort = port
        test.addCleanup(listening.stopListening)
        self.app_port = listening.getHost().port  # type: ignore[attr-defined]
        listen = free_port()
        rfwd, openssh = await self.start_pair([f"127.0.0.1:{listen}:127.0.0.1:{self.app_port}"])
        await wait_until_echo(self.reactor, listen)
        # The system's 9.2 must not have been run in its place.
        await openssh.wait_for(OPENSSH_10_VERSION, timeout=10)
        return rfwd, openssh, listen

    async def test_bulk_both_ways(self) -> None:
        """8 MiB each way through one forwarded connection arrive intact with OpenSSH 10.0."""
        _, _, port = await self.forwarding()
        test: TestCase = self  # type: ignore[assignment]
        upload = pattern(8 * MiB, seed=3)
        test.assertEqual(await exchange(self.reactor, port, b"U" + upload), digest_line(upload))
        download = await exchange(self.reactor, port, b"D" + struct.pack(">Q", 8 * MiB))
        test.assertEqual(len(download), 8 * MiB)
        test.assertEqual(
            hashlib.sha256(download).digest(), hashlib.sha256(pattern(8 * MiB)).digest()
        )

    async def test_half_close(self) -> None:
        """
        With OpenSSH 10.0, a connection that shuts down writing still gets the reply the
        application sends after EOF, and then the application's own EOF.
        """
        _, _, port = await self.forwarding()
        test: TestCase = self  # type: ignore[assignment]
        data = pattern(100_000, seed=5)
        test.assertEqual(await exchange(self.reactor, port, b"U" + data), digest_line(data))
        test.assertEqual(await exchange(self.reactor, port, b"E" + data), b"E" + data)

    async def test_post_quantum_key_exchange(self) -> None:
        """
        rfwd and OpenSSH 10.0 agree on mlkem768x25519-sha256 (OpenSSH 10's default), as both
        ends' logs say.
        """
        rfwd, openssh, _ = await self.forwarding()
        test: TestCase = self  # type: ignore[assignment]
        rfwd_kex = await rfwd.wait_for(RFWD_KEX, timeout=10)
        openssh_kex = await openssh.wait_for(OPENSSH_KEX, timeout=10)
        test.assertEqual((rfwd_kex.group(1), openssh_kex.group(1)), (POST_QUANTUM, POST_QUANTUM))


class OpenSSH10ClientRfwdServerTests(OpenSSH10Scenarios, TestCase):
    """OpenSSH 10.0's ssh -N -R with rfwd-server."""

    async def start_pair(self, forwards: list[str]) -> tuple[ChildProcess, ChildProcess]:
        server, ssh_port = await start_rfwd_server(self, self.reactor, self.keys)
        # -v: ssh logs the agreed key exchange and its own version at debug1.
        client = start_ssh(
            self, self.reactor, self.keys, ssh_port, forwards, "-v", version=OPENSSH_10
        )
        return server, client


class RfwdClientOpenSSH10ServerTests(OpenSSH10Scenarios, TestCase):
    """rfwd-client with OpenSSH 10.0's sshd."""

    async def start_pair(self, forwards: list[str]) -> tuple[ChildProcess, ChildProcess]:
        # LogLevel DEBUG1 (on the command line, which wins over the file): sshd logs the
        # agreed key exchange.
        server, ssh_port = await start_sshd(
            self, self.reactor, self.keys, version=OPENSSH_10, options=["-o", "LogLevel=DEBUG1"]
        )
        client = start_rfwd_client(self, self.reactor, self.keys, ssh_port, forwards)
        await client.wait_for(r"Connected to 127\.0\.0\.1 port \d+")
        return client, server
