"""
Real processes on loopback, three pairings, the same scenarios for each:
rfwd-client with rfwd-server, OpenSSH ssh with rfwd-server, rfwd-client with OpenSSH sshd.
"""

from __future__ import annotations

import hashlib
import socket
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IListeningPort
from twisted.trial.unittest import TestCase

from tests.support.apps import (
    AppServerFactory,
    Pusher,
    digest_line,
    echo_ok,
    exchange,
    finish_and_read,
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


@dataclass
class Pair:
    """A running server and client, and which of them are ours (to watch their memory)."""

    server: ChildProcess
    client: ChildProcess
    ours: list[ChildProcess] = field(default_factory=list)


class PairScenarios:
    """The scenarios; subclasses say how to start their pair."""

    timeout = 120
    keys: Keys
    app: AppServerFactory
    app_port: int

    # -- provided by the concrete classes -----------------------------------------------------

    async def start_pair(self, forwards: list[str]) -> Pair:
        raise NotImplementedError

    async def wait_ready(self, pair: Pair, listen_port: int) -> None:
        """The tunnel answers on C{listen_port}."""
        await wait_until_echo(self.reactor, listen_port)

    async def allocated_port(self, pair: Pair) -> int:
        match = await pair.client.wait_for(r"Allocated port (\d+) for remote forward to")
        return int(match.group(1))

    # -- shared setup ---------------------------------------------------------------------------

    @property
    def reactor(self) -> Any:
        from twisted.internet import reactor

        return reactor

    async def set_up_app(self) -> None:
        test: TestCase = self  # type: ignore[assignment]
        self.keys = make_keys(Path(test.mktemp()))
        self.app, port = await start_app_server(self.reactor)
        listening: IListeningPort = port
        test.addCleanup(listening.stopListening)
        self.app_port = listening.getHost().port  # type: ignore[attr-defined]

    async def forwarding(self) -> tuple[Pair, int]:
        """A pair with one forward of a free loopback port to the app server."""
        await self.set_up_app()
        listen = free_port()
        pair = await self.start_pair([f"127.0.0.1:{listen}:127.0.0.1:{self.app_port}"])
        await self.wait_ready(pair, listen)
        return pair, listen

    # -- scenarios ----------------------------------------------------------------------------

    async def test_bulk_both_ways(self) -> None:
        """8 MiB each way through one connection arrive intact."""
        _, port = await self.forwarding()
        upload = pattern(8 * MiB, seed=3)
        reply = await exchange(self.reactor, port, b"U" + upload)
        test: TestCase = self  # type: ignore[assignment]
        test.assertEqual(reply, digest_line(upload))
        download = await exchange(self.reactor, port, b"D" + struct.pack(">Q", 8 * MiB))
        test.assertEqual(len(download), 8 * MiB)
        test.assertEqual(
            hashlib.sha256(download).digest(), hashlib.sha256(pattern(8 * MiB)).digest()
        )

    async def test_half_close(self) -> None:
        """Send, shut down writing, and receive the reply the application sends after EOF."""
        _, port = await self.forwarding()
        test: TestCase = self  # type: ignore[assignment]
        data = pattern(100_000, seed=5)
        test.assertEqual(await exchange(self.reactor, port, b"U" + data), digest_line(data))
        # The application's own EOF comes back too: the echo ends with a clean close.
        test.assertEqual(await exchange(self.reactor, port, b"E" + data), b"E" + data)

    async def test_port_zero(self) -> None:
        """-R 0:host:port: the server picks a port, the client reports it, and it works."""
        await self.set_up_app()
        pair = await self.start_pair([f"0:127.0.0.1:{self.app_port}"])
        port = await self.allocated_port(pair)
        test: TestCase = self  # type: ignore[assignment]
        test.assertGreater(port, 0)
        await wait_until_echo(self.reactor, port)

    async def test_hundred_concurrent_connections(self) -> None:
        """100 connections at once, each with its own payload, all answered correctly."""
        _, port = await self.forwarding()
        payloads = [b"E" + pattern(10_000, seed=i) for i in range(100)]
        answers = await defer.gatherResults(
            [Deferred.fromCoroutine(exchange(self.reactor, port, p)) for p in payloads]
        )
        test: TestCase = self  # type: ignore[assignment]
        test.assertEqual(answers, payloads)

    async def test_application_not_running(self) -> None:
        """A dead destination: the connection is closed cleanly and the tunnel stays up."""
        await self.set_up_app()
        dead, live = free_port(), free_port()
        dead_destination = free_port()
        pair = await self.start_pair(
            [
                f"127.0.0.1:{dead}:127.0.0.1:{dead_destination}",
                f"127.0.0.1:{live}:127.0.0.1:{self.app_port}",
            ]
        )
        await self.wait_ready(pair, live)
        test: TestCase = self  # type: ignore[assignment]
        for _ in range(3):
            test.assertEqual(await exchange(self.reactor, dead, b"E hello", timeout=20), b"")
        test.assertTrue(await echo_ok(self.reactor, live))
        test.assertFalse(pair.server.ended, pair.server.output())
        test.assertFalse(pair.client.ended, pair.client.output())
        await self.check_refusal_logged(pair)

    async def check_refusal_logged(self, pair: Pair) -> None:
        """Where rfwd-client is the client, it logs the operating system's reason."""

    async def test_slow_reader(self) -> None:
        """A reader that stops reading stops the sender; memory stays bounded; nothing is lost."""
        pair, port = await self.forwarding()
        test: TestCase = self  # type: ignore[assignment]
        rss_before = {p.name: p.rss_kib() for p in pair.ours}
        sock = socket.create_connection(("127.0.0.1", port))
        test.addCleanup(sock.close)
        sock.setblocking(False)
        sock.send(b"H")
        await self.app.held_waiter.addTimeout(20, self.reactor)
        pusher = Pusher(sock)
        limit = 512 * MiB
        stalled = await pusher.push_until_stalled(self.reactor, limit)
        test.assertTrue(stalled, f"sent {pusher.sent} bytes without being stopped")
        # Kernel socket buffers on three loopback connections, two channel windows: tens of MiB.
        test.assertLess(pusher.sent, 96 * MiB)
        for process in pair.ours:
            growth = process.rss_kib() - rss_before[process.name]
            test.assertLess(growth, 32 * 1024, f"{process.name} grew by {growth} KiB")
        self.app.held[0].resume()
        reply = await finish_and_read(self.reactor, sock)
        # The application saw the "H" and then every byte pushed, in order.
        test.assertEqual(reply.split()[0], str(pusher.sent).encode())
        test.assertEqual(reply, pusher.digest_line())


class RfwdClientRfwdServerTests(PairScenarios, TestCase):
    """rfwd-client with rfwd-server."""

    async def start_pair(self, forwards: list[str]) -> Pair:
        server, ssh_port = await start_rfwd_server(self, self.reactor, self.keys)
        client = start_rfwd_client(self, self.reactor, self.keys, ssh_port, forwards)
        await client.wait_for(r"Connected to 127\.0\.0\.1 port \d+")
        return Pair(server, client, [server, client])

    async def check_refusal_logged(self, pair: Pair) -> None:
        await pair.client.wait_for(r"failed: Connection refused", timeout=5)


class OpenSSHClientRfwdServerTests(PairScenarios, TestCase):
    """OpenSSH's ssh -N -R with rfwd-server."""

    async def start_pair(self, forwards: list[str]) -> Pair:
        server, ssh_port = await start_rfwd_server(self, self.reactor, self.keys)
        client = start_ssh(self, self.reactor, self.keys, ssh_port, forwards)
        return Pair(server, client, [server])


class RfwdClientOpenSSHServerTests(PairScenarios, TestCase):
    """rfwd-client with OpenSSH's sshd."""

    async def start_pair(self, forwards: list[str]) -> Pair:
        server, ssh_port = await start_sshd(self, self.reactor, self.keys)
        client = start_rfwd_client(self, self.reactor, self.keys, ssh_port, forwards)
        await client.wait_for(r"Connected to 127\.0\.0\.1 port \d+")
        return Pair(server, client, [client])

    async def check_refusal_logged(self, pair: Pair) -> None:
        await pair.client.wait_for(r"failed: Connection refused", timeout=5)
