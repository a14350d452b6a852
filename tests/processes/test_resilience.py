"""
A tunnel that stays up: rfwd-client against rfwd-server and against OpenSSH's sshd, through a
link the test can cut or blackhole (L{tests.support.link}).  Reconnection, keepalives on both
ends, the stale-listener case, server restarts with the status file, rekeying under load, and
stopping with a transfer in flight.
"""

from __future__ import annotations

import json
import os
import signal
import socket
from pathlib import Path
from typing import Any

from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from tests.support.apps import (
    AppServerFactory,
    Pusher,
    digest_line,
    exchange,
    finish_and_read,
    pattern,
    refused_or_unanswered,
    start_app_server,
    wait_until_echo,
)
from tests.support.keys import new_key, public_line
from tests.support.link import Link
from tests.support.pairs import Keys, make_keys, start_rfwd_client, start_rfwd_server, start_sshd
from tests.support.processes import ChildProcess, descendants, free_port

MiB = 1 << 20
# Keepalives in these tests: probe after 1 s of silence, give up after 2 unanswered probes, so a
# dead link must be noticed within 1 * (2 + 1) = 3 s (plus a little for scheduling).
INTERVAL, COUNT = 1, 2
SLACK = 2.0


def reactor() -> Any:
    from twisted.internet import reactor as r

    return r


async def poll(condition: Any, deadline: float, what: str) -> None:
    """Wait until C{condition()} is true, checking every 50 ms, for at most C{deadline} s."""
    start = reactor().seconds()
    while not condition():
        if reactor().seconds() - start > deadline:
            raise AssertionError(f"not within {deadline} s: {what}")
        await deferLater(reactor(), 0.05, lambda: None)


class ResilienceScenarios:
    """The scenarios; subclasses start their kind of server."""

    timeout = 120
    keys: Keys
    app: AppServerFactory
    app_port: int
    server_port: int
    server: ChildProcess

    async def start_server(self, alive: tuple[int, int], *extra: str, port: int = 0) -> None:
        raise NotImplementedError

    def server_saw_dead_client(self) -> str:
        """The pattern the server logs when it gives up on a silent client."""
        raise NotImplementedError

    async def stop_server(self) -> None:
        """Take the server away, connections and all (as a reboot would)."""
        await self.server.stop()

    def server_detection_factor(self) -> float:
        """How much longer than interval * (count + 1) the server may take to notice."""
        return 1.0

    @property
    def test(self) -> TestCase:
        return self  # type: ignore[return-value]

    async def set_up(
        self,
        client_alive: tuple[int, int] = (INTERVAL, COUNT),
        server_alive: tuple[int, int] = (INTERVAL, COUNT),
        client_options: tuple[str, ...] = (),
        server_options: tuple[str, ...] = (),
    ) -> tuple[ChildProcess, Link, int]:
        self.keys = make_keys(Path(self.test.mktemp()))
        self.app, app_port = await start_app_server(reactor())
        self.test.addCleanup(app_port.stopListening)
        self.app_port = app_port.getHost().port  # type: ignore[attr-defined]
        await self.start_server(client_alive, *server_options)
        link = await Link(reactor(), self.server_port).start()
        self.test.addCleanup(link.stop)
        listen = free_port()
        client = start_rfwd_client(
            self.test,
            reactor(),
            self.keys,
            link.port,
            [f"127.0.0.1:{listen}:127.0.0.1:{self.app_port}"],
            "--status-file",
            str(self.status_path),
            "--reconnect-delay",
            "0.2",
            "--reconnect-max-delay",
            "1",
            "-o",
            f"ServerAliveInterval={server_alive[0]}",
            "-o",
            f"ServerAliveCountMax={server_alive[1]}",
            *client_options,
        )
        await client.wait_for(r"Connected to 127\.0\.0\.1")
        await wait_until_echo(reactor(), listen)
        return client, link, listen

    @property
    def status_path(self) -> Path:
        return self.keys.workdir / "status.json"

    def status(self) -> dict[str, Any]:
        try:
            loaded: dict[str, Any] = json.loads(self.status_path.read_text())
        except (OSError, ValueError):
            return {}
        return loaded

    # -- scenarios ----------------------------------------------------------------------------

    async def test_link_cut_reconnects(self) -> None:
        """A cut link: the client reconnects by itself and the forward works again."""
        client, link, listen = await self.set_up()
        mark = client.mark()
        cut_at = reactor().seconds()
        link.cut()
        await client.wait_for(r"Connected to 127\.0\.0\.1", after=mark, timeout=20)
        # Backoff starts at 0.2 s, at most 1 s plus 1 s of jitter: well under 5 s.
        self.test.assertLess(reactor().seconds() - cut_at, 5.0, client.output())
        await wait_until_echo(reactor(), listen, deadline=20)
        status = self.status()
        self.test.assertEqual(status["state"], "connected")
        self.test.assertEqual(status["connections"], 2)
        self.test.assertEqual(status["forwards"][0]["port"], listen)

    async def test_blackhole_is_detected_on_both_ends(self) -> None:
        """Swallowed traffic: each end notices within interval * (count + 1) seconds, the
        server frees the port, and the client gets the same port back."""
        client, link, listen = await self.set_up()
        mark_client, mark_server = client.mark(), self.server.mark()
        start = reactor().seconds()
        link.blackhole()
        bound = INTERVAL * (COUNT + 1) + SLACK
        await client.wait_for(r"not responding", after=mark_client, timeout=bound)
        client_noticed = reactor().seconds() - start
        await self.server.wait_for(
            self.server_saw_dead_client(),
            after=mark_server,
            timeout=self.server_detection_factor() * bound,
        )
        server_noticed = reactor().seconds() - start
        self.test.assertLess(client_noticed, bound)
        self.test.assertLess(server_noticed, self.server_detection_factor() * bound)
        await client.wait_for(r"Connected to 127\.0\.0\.1", after=mark_client, timeout=20)
        await wait_until_echo(reactor(), listen, deadline=20)
        await poll(
            lambda: self.status().get("forwards", [{}])[0].get("state") == "listening",
            10,
            "the forward listening again",
        )
        self.test.assertEqual(self.status()["forwards"][0]["port"], listen)

    async def test_stale_listener_is_retried(self) -> None:
        """The client is back before the server freed its port: the forward is refused,
        retried, and listens once the server let go of the old connection."""
        client, link, listen = await self.set_up(client_alive=(INTERVAL, 5), server_alive=(1, 1))
        mark = client.mark()
        link.blackhole()
        await client.wait_for(r"Connected to 127\.0\.0\.1", after=mark, timeout=20)
        await client.wait_for(r"remote port forwarding failed", after=mark, timeout=5)
        await poll(
            lambda: self.status().get("forwards", [{}])[0].get("state") == "refused",
            5,
            "the status file showing the refusal",
        )
        self.test.assertIn("failed", self.status()["forwards"][0]["last_error"])
        await client.wait_for(r"is listening now", after=mark, timeout=20)
        await wait_until_echo(reactor(), listen, deadline=10)
        self.test.assertEqual(self.status()["forwards"][0]["state"], "listening")

    async def test_server_restart(self) -> None:
        """The server goes away and comes back: the client follows, and the status file
        shows each transition."""
        client, _, listen = await self.set_up()
        states: list[str] = []

        def record() -> bool:
            state = self.status().get("state")
            if state and (not states or states[-1] != state):
                states.append(state)
            return False

        record()
        mark = client.mark()
        await self.stop_server()
        await poll(lambda: record() or "disconnected" in states, 15, "a disconnected status")
        await self.start_server((INTERVAL, COUNT), port=self.server_port)
        await client.wait_for(r"Connected to 127\.0\.0\.1", after=mark, timeout=30)
        await poll(lambda: record() or states[-1] == "connected", 15, "connected again")
        self.test.assertEqual(states[0], "connected")
        self.test.assertIn("disconnected", states)
        self.test.assertEqual(states[-1], "connected")
        await wait_until_echo(reactor(), listen, deadline=20)

    async def test_rekey_with_data_flowing(self) -> None:
        """RekeyLimit 1M: 16 MiB each way, verified, across many key re-exchanges."""
        client, _, listen = await self.set_up(client_options=("-o", "RekeyLimit=1M"))
        upload = pattern(16 * MiB, seed=31)
        self.test.assertEqual(await exchange(reactor(), listen, b"U" + upload), digest_line(upload))
        download = await exchange(reactor(), listen, b"D" + (16 * MiB).to_bytes(8, "big"))
        self.test.assertEqual(download, pattern(16 * MiB))
        exchanges = [line for line in client.lines if "Key exchange with" in line]
        self.test.assertGreater(len(exchanges), 10)

    async def test_sigterm_lets_a_transfer_finish(self) -> None:
        """SIGTERM with a connection mid-transfer: it completes, and the client exits 0."""
        client, _, listen = await self.set_up()
        sock = socket.create_connection(("127.0.0.1", listen))
        self.test.addCleanup(sock.close)
        sock.setblocking(False)
        sock.send(b"H")
        await self.app.held_waiter.addTimeout(10, reactor())
        pusher = Pusher(sock, seed=7)
        self.test.assertTrue(await pusher.push_until_stalled(reactor(), 256 * MiB))
        mark = client.mark()
        client.signal(signal.SIGTERM)
        await client.wait_for(r"Draining 1 forwarded connections", after=mark, timeout=5)
        # New connections are no longer taken: refused once the server has cancelled the
        # forward, closed unanswered if one comes before.
        self.test.assertTrue(await refused_or_unanswered(reactor(), listen, b"E new"))
        self.app.held[0].resume()
        self.test.assertEqual(await finish_and_read(reactor(), sock), pusher.digest_line())
        await client.wait_ended(15)
        self.test.assertEqual(client.exit_code, 0, client.output())
        self.test.assertEqual(self.status()["state"], "stopped")


class RfwdServerResilienceTests(ResilienceScenarios, TestCase):
    """rfwd-client with rfwd-server."""

    async def start_server(self, alive: tuple[int, int], *extra: str, port: int = 0) -> None:
        self.server, self.server_port = await start_rfwd_server(
            self,
            reactor(),
            self.keys,
            "--client-alive-interval",
            str(alive[0]),
            "--client-alive-count-max",
            str(alive[1]),
            "--rekey-limit",
            "1M",
            *extra,
            port=port,
        )

    def server_saw_dead_client(self) -> str:
        return r"is not responding: no answer to \d+ keepalives"

    async def test_server_sigterm_drains(self) -> None:
        """SIGTERM to rfwd-server mid-transfer: listeners close, the transfer finishes, the
        client is told the server is going away, and the server exits 0."""
        client, _, listen = await self.set_up()
        sock = socket.create_connection(("127.0.0.1", listen))
        self.addCleanup(sock.close)
        sock.setblocking(False)
        sock.send(b"H")
        await self.app.held_waiter.addTimeout(10, reactor())
        pusher = Pusher(sock, seed=8)
        self.assertTrue(await pusher.push_until_stalled(reactor(), 256 * MiB))
        mark = client.mark()
        self.server.signal(signal.SIGTERM)
        await self.server.wait_for(r"Shutting down: closing forwards of 1 connections")
        self.app.held[0].resume()
        self.assertEqual(await finish_and_read(reactor(), sock), pusher.digest_line())
        await self.server.wait_ended(15)
        self.assertEqual(self.server.exit_code, 0, self.server.output())
        await client.wait_for(r"the server is shutting down", after=mark, timeout=10)

    async def test_login_grace_time(self) -> None:
        """A connection that never logs in is dropped after the login grace time."""
        self.keys = make_keys(Path(self.mktemp()))
        await self.start_server((INTERVAL, COUNT), "--login-grace-time", "1")
        sock = socket.create_connection(("127.0.0.1", self.server_port))
        self.addCleanup(sock.close)
        sock.setblocking(False)
        start = reactor().seconds()
        received = bytearray()

        def closed() -> bool:
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                return False
            except ConnectionResetError:
                return True
            received.extend(data)
            return not data

        await poll(closed, 5, "the server closing an idle login")
        self.assertLess(reactor().seconds() - start, 1 + SLACK)
        self.assertTrue(received.startswith(b"SSH-2.0-rfwd_"))


class OpenSSHServerResilienceTests(ResilienceScenarios, TestCase):
    """rfwd-client with OpenSSH's sshd."""

    async def start_server(self, alive: tuple[int, int], *extra: str, port: int = 0) -> None:
        config = f"ClientAliveInterval {alive[0]}\nClientAliveCountMax {alive[1]}\n"
        self.server, self.server_port = await start_sshd(
            self, reactor(), self.keys, config, port=port
        )

    def server_saw_dead_client(self) -> str:
        return r"Timeout, client not responding"

    async def stop_server(self) -> None:
        # Stopping sshd's listener leaves each connection's own sshd running (a restarted
        # sshd keeps sessions); a server that goes away, as in a crash, takes those along.
        for pid in descendants(self.server.pid):
            os.kill(pid, signal.SIGKILL)
        await self.server.stop()

    def server_detection_factor(self) -> float:
        # Measured here: sshd 9.2 gives up after about twice interval * (count + 1); that is
        # OpenSSH's own timing, not something the client controls.
        return 2.0


class FirstAttemptTests(TestCase):
    """What retrying cannot fix ends the client at once; what it can, it retries."""

    timeout = 60

    async def test_refused_login_is_fatal(self) -> None:
        """A key the server does not accept: exit 255 with 'Permission denied'."""
        keys = make_keys(Path(self.mktemp()))
        _, port = await start_rfwd_server(self, reactor(), keys)
        keys.authorized_keys.write_bytes(public_line(new_key()) + b"\n")
        client = start_rfwd_client(self, reactor(), keys, port, ["0:127.0.0.1:9"])
        await client.wait_ended(30)
        self.assertEqual(client.exit_code, 255)
        self.assertIn("Permission denied for user", client.output())

    async def test_connect_timeout_covers_the_handshake(self) -> None:
        """A server that accepts TCP but never speaks SSH: each attempt is abandoned after
        ConnectTimeout and retried."""
        silent = socket.socket()
        self.addCleanup(silent.close)
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        keys = make_keys(Path(self.mktemp()))
        client = start_rfwd_client(
            self,
            reactor(),
            keys,
            silent.getsockname()[1],
            ["0:127.0.0.1:9"],
            "-o",
            "ConnectTimeout=1",
            "--reconnect-delay",
            "0.1",
            "--reconnect-max-delay",
            "0.5",
        )
        start = reactor().seconds()
        await client.wait_for(r"no tunnel within ConnectTimeout \(1 s\)", timeout=5)
        self.assertLess(reactor().seconds() - start, 1 + SLACK)
        await poll(
            lambda: len([ln for ln in client.lines if "within ConnectTimeout" in ln]) >= 2,
            6,
            "a second attempt abandoned",
        )
        self.assertFalse(client.ended)
