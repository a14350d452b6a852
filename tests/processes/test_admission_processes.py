"""
rfwd-server's admission limits as a real process on loopback: MaxStartups and
PerSourceMaxStartups against idle unauthenticated connections, and the descriptor budget against
one user's forward spam, each under a low descriptor limit set with C{ulimit -n}.

Hostile connections come from 127.0.0.2 (all of 127/8 is loopback on Linux) and legitimate
clients from 127.0.0.1, so the per-source limit can tell them apart.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import ClientFactory, Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, TestCase

from harness.plugins import rfwd_server_argv
from tests.support.apps import start_app_server, wait_until_echo
from tests.support.keys import new_key, public_line, write_private_key
from tests.support.pairs import Keys, make_keys, start_rfwd_client
from tests.support.processes import ChildProcess, plugin_env, spawn
from twisted_rfwd.server.admission import DROP_MESSAGE

HOSTILE = "127.0.0.2"
DROP_LINES = r"Dropped new connections"


class Probe(Protocol):
    """One raw TCP connection that sends nothing: held (got the server's version line),
    dropped (closed by the server), or failed (never connected)."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.state = "pending"
        self.settled: Deferred[str] = Deferred()

    def _settle(self, state: str) -> None:
        if self.state == "pending":
            self.state = state
            self.settled.callback(state)

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if self.received.startswith(b"SSH-") and b"\n" in self.received:
            self._settle("held")

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.state == "held":
            self.state = "closed"
        self._settle("dropped")

    def close(self) -> None:
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]


class _ProbeFactory(ClientFactory):
    noisy = False

    def __init__(self, probe: Probe) -> None:
        self.probe = probe

    def buildProtocol(self, addr: object) -> Probe:
        return self.probe

    def clientConnectionFailed(self, connector: object, reason: Failure) -> None:
        self.probe._settle("failed")


class Probes:
    """Idle connections to one server from one source address, all closed at cleanup."""

    def __init__(self, test: TestCase, reactor: Any, port: int, source: str) -> None:
        self.reactor = reactor
        self.port = port
        self.source = source
        self.all: list[Probe] = []
        test.addCleanup(self.close_all)

    async def open(self, count: int, batch: int = 25) -> list[Probe]:
        """
        Open C{count} connections, C{batch} at a time (within the server's listen backlog, so
        the kernel drops none); returns them once each is held or dropped.
        """
        probes: list[Probe] = []
        while len(probes) < count:
            probes += await self._open(min(batch, count - len(probes)))
        return probes

    async def _open(self, count: int, timeout: float = 10.0) -> list[Probe]:
        probes = [Probe() for _ in range(count)]
        for probe in probes:
            self.reactor.connectTCP(
                "127.0.0.1", self.port, _ProbeFactory(probe), 10, bindAddress=(self.source, 0)
            )
        self.all += probes
        settled = defer.DeferredList([p.settled for p in probes], consumeErrors=True)
        await settled.addTimeout(timeout, self.reactor).addErrback(lambda _: None)
        states = [p.state for p in probes]
        if "pending" in states:
            raise AssertionError(
                f"{states.count('pending')} of {count} connections neither held nor dropped "
                f"after {timeout} s ({states.count('held')} held, "
                f"{states.count('dropped')} dropped)"
            )
        return probes

    def held(self) -> list[Probe]:
        return [p for p in self.all if p.state == "held"]

    async def until_held(self, attempts: int = 100) -> Probe:
        """Open one connection at a time until the server keeps one (a slot came free)."""
        for _ in range(attempts):
            (probe,) = await self.open(1)
            if probe.state == "held":
                return probe
        raise AssertionError(f"no connection held in {attempts} attempts")

    def close_all(self) -> None:
        for probe in self.all:
            probe.close()


def dropped(probes: list[Probe]) -> list[Probe]:
    return [p for p in probes if p.state == "dropped"]


async def start_server(
    test: TestCase, reactor: Any, keys: Keys, *extra: str, nofile: int | None = None
) -> tuple[ChildProcess, int]:
    """rfwd-server on a free loopback port, under C{ulimit -n nofile} (soft and hard) if given."""
    argv = rfwd_server_argv(keys, *extra)
    if nofile is not None:
        argv = ["/bin/sh", "-c", f'ulimit -n {nofile} && exec "$@"', "sh", *argv]
    server = spawn(test, reactor, "rfwd-server", argv, env=plugin_env())
    match = await server.wait_for(r"rfwd-server listening on 127\.0\.0\.1:(\d+)")
    return server, int(match.group(1))


def second_user(keys: Keys, workdir: Path) -> Keys:
    """Another key, in the same authorized_keys file, with its own known_hosts directory."""
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    key = new_key()
    with keys.authorized_keys.open("ab") as f:
        f.write(public_line(key) + b"\n")
    return replace(keys, workdir=workdir, user_key=write_private_key(key, workdir / "user_key"))


class AdmissionProcessTests(TestCase):
    timeout = 90

    def setUp(self) -> None:
        if not sys.platform.startswith("linux"):
            raise SkipTest("needs Linux: the tests connect from 127.0.0.2")
        self.keys = make_keys(Path(self.mktemp()))

    @property
    def reactor(self) -> Any:
        from twisted.internet import reactor

        return reactor

    async def app_port(self) -> int:
        _, port = await start_app_server(self.reactor)
        listening: IListeningPort = port
        self.addCleanup(listening.stopListening)
        number: int = listening.getHost().port  # type: ignore[attr-defined]
        return number

    async def login_and_forward(self, keys: Keys, port: int, user: str) -> ChildProcess:
        """rfwd-client logs in once (no retry) as C{user}; its forward carries an echo."""
        app = await self.app_port()
        client = start_rfwd_client(
            self, self.reactor, keys, port, [f"0:127.0.0.1:{app}"], "-l", user, "--no-reconnect"
        )
        match = await client.wait_for(r"Allocated port (\d+) for remote forward to")
        await wait_until_echo(self.reactor, int(match.group(1)))
        return client

    def assert_bounded_drop_log(self, server: ChildProcess, seconds: float) -> None:
        lines = [line for line in server.lines if "Dropped new connections" in line]
        self.assertGreater(len(lines), 0)
        self.assertLessEqual(len(lines), seconds + 2, "\n".join(lines))
        self.assertFalse(
            [line for line in server.lines if "Too many open files" in line or "EMFILE" in line],
            server.output(),
        )

    async def test_full_drops_and_slots_return_at_login_and_disconnect(self) -> None:
        """MaxStartups 3:100:3: a 4th unauthenticated connection gets sshd's line and is
        closed; a login frees its slot, and so does a connection that ends."""
        server, port = await start_server(
            self, self.reactor, self.keys, "--max-startups", "3:100:3"
        )
        idle = Probes(self, self.reactor, port, HOSTILE)
        self.assertEqual([p.state for p in await idle.open(2)], ["held", "held"])

        await self.login_and_forward(self.keys, port, self.keys.user)
        # Logged in: two unauthenticated, so a third fits and a fourth does not.
        (third,) = await idle.open(1)
        self.assertEqual(third.state, "held")
        over = await idle.open(2)
        self.assertEqual([p.state for p in over], ["dropped", "dropped"])
        self.assertEqual([bytes(p.received) for p in over], [DROP_MESSAGE, DROP_MESSAGE])

        idle.held()[0].close()
        await idle.until_held()
        self.assertEqual(len(idle.held()), 3)
        await server.wait_for(DROP_LINES)

    async def test_default_max_startups_drops_instead_of_running_out(self) -> None:
        """Defaults (10:30:100) under ulimit -n 160: of 200 idle connections at most 99 are
        kept and every other one gets sshd's line (none is left unanswered or closed for want
        of descriptors); the drops make a few log lines; then a login works."""
        server, port = await start_server(self, self.reactor, self.keys, nofile=160)
        started = self.reactor.seconds()
        idle = Probes(self, self.reactor, port, HOSTILE)
        probes = await idle.open(200)
        held = len(idle.held())
        self.assertGreaterEqual(held, 10)
        self.assertLessEqual(held, 99)
        self.assertEqual({bytes(p.received) for p in dropped(probes)}, {DROP_MESSAGE})
        self.assertEqual(held + len(dropped(probes)), 200)
        self.assert_bounded_drop_log(server, self.reactor.seconds() - started)

        idle.close_all()
        await idle.until_held()
        idle.close_all()
        await self.login_and_forward(self.keys, port, self.keys.user)

    async def test_login_succeeds_while_idle_connections_are_held(self) -> None:
        """Under ulimit -n 128, 150 idle connections from one address hold 8 slots
        (PerSourceMaxStartups 8) and the rest are dropped; a login from another address
        succeeds and its forward works while they are held."""
        server, port = await start_server(
            self, self.reactor, self.keys, "--per-source-max-startups", "8", nofile=128
        )
        started = self.reactor.seconds()
        idle = Probes(self, self.reactor, port, HOSTILE)
        probes = await idle.open(150)
        self.assertEqual(len(idle.held()), 8)
        self.assertEqual({bytes(p.received) for p in dropped(probes)}, {DROP_MESSAGE})
        await self.login_and_forward(self.keys, port, self.keys.user)
        self.assertEqual(len(idle.held()), 8)
        self.assert_bounded_drop_log(server, self.reactor.seconds() - started)

    async def test_one_users_forward_spam_does_not_lock_out_another(self) -> None:
        """Under ulimit -n 200, alice asks for 150 forwards (2 sockets each) until the server
        refuses them; bob then logs in and his forward works."""
        server, port = await start_server(self, self.reactor, self.keys, nofile=200)
        spam = [f"0:127.0.0.1:{n}" for n in range(1, 151)]
        start_rfwd_client(self, self.reactor, self.keys, port, spam, "-l", "alice")
        # One line per refusal, or (past the connection's log budget) a count of them.
        await server.wait_for(r"Refused remote forward for alice|more forward refusals", timeout=30)
        bob = second_user(self.keys, Path(self.mktemp()))
        await self.login_and_forward(bob, port, "bob")
        self.assertIsNone(server.find(r"Cannot read authorized keys"), server.output())
