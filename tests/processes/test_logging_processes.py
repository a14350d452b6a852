"""
The plugins' logs from real processes: the default text format, JSON, --logfile, and what a
flood of hostile packets or connections makes rfwd-server write.
"""

from __future__ import annotations

import select
import socket
import struct
import time
from pathlib import Path
from typing import Any

from twisted.internet.threads import deferToThread
from twisted.logger import (
    LogLevel,
    eventFromJSON,
    formatEvent,
)
from twisted.trial.unittest import TestCase

from harness.plugins import rfwd_server_argv
from tests.support.pairs import make_keys, start_rfwd_server
from tests.support.processes import plugin_env, spawn, twistd_argv


def reactor() -> Any:
    from twisted.internet import reactor as r

    return r


PAYLOAD_MARK = b"PAYLOAD-MARK-\x00\xff-"


def packet(message_type: int, payload: bytes) -> bytes:
    """A plaintext binary packet (RFC 4253 section 6): a multiple of 8, 4 to 11 bytes of padding."""
    body = bytes([message_type]) + payload
    padding = 8 - (4 + 1 + len(body)) % 8
    if padding < 4:
        padding += 8
    return struct.pack(">IB", 1 + len(body) + padding, padding) + body + b"\0" * padding


def flood(port: int, total: int, deadline: float, connections: int = 64) -> tuple[int, int]:
    """
    A peer that sends a version line, then packets of unassigned type 200 with 32 KiB payloads,
    reading what the server sends; when the server disconnects it connects again.  It stops
    after C{total} bytes, C{deadline} s or C{connections} connections, then half-closes and
    waits for the server to close, so that the server has handled every byte sent.  Returns
    the bytes sent and the connections made.
    """
    end = time.monotonic() + deadline
    sent = made = 0
    while sent < total and made < connections and time.monotonic() < end:
        made += 1
        sent += _flood_one(port, total - sent, end)
    return sent, made


def _flood_one(port: int, total: int, end: float) -> int:
    one = packet(200, PAYLOAD_MARK * 2048)
    pending = b"SSH-2.0-flood\r\n"
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.setblocking(False)
        try:
            while time.monotonic() < end:
                if not pending and sent < total:
                    pending = one
                readable, writable, _ = select.select([s], [s] if pending else [], [], 0.2)
                if readable and not s.recv(65536):
                    return sent
                if writable:
                    try:
                        n = s.send(pending)
                    except BlockingIOError:
                        n = 0
                    sent, pending = sent + n, pending[n:]
                if not pending and sent >= total:
                    break
            s.shutdown(socket.SHUT_WR)
            while time.monotonic() < end:
                readable, _, _ = select.select([s], [], [], 0.2)
                if readable and not s.recv(65536):
                    break
        except (ConnectionResetError, BrokenPipeError):
            pass
    return sent


def churn(port: int, connections: int, deadline: float) -> int:
    """
    C{connections} connections one after the other, each sending a version line and one
    packet of an unassigned type, then reading until the server closes it.  Returns how many
    the server closed.
    """
    end = time.monotonic() + deadline
    closed = 0
    for _ in range(connections):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"SSH-2.0-churn\r\n" + packet(200, b"x" * 1000))
            try:
                while s.recv(65536):
                    if time.monotonic() > end:
                        return closed
            except TimeoutError:
                return closed
            except ConnectionResetError:
                pass
            closed += 1
    return closed


def before_stop(child_lines: list[str]) -> list[str]:
    """The lines up to twistd's stop (the shutdown lines are not the peer's doing)."""
    stop = [i for i, line in enumerate(child_lines) if "Received SIGTERM" in line]
    return child_lines[: stop[0]] if stop else child_lines


def output_bytes(lines: list[str]) -> int:
    """What the lines took in the process's output."""
    return sum(len(line.encode("utf-8")) + 1 for line in lines)


class ProcessTests(TestCase):
    timeout = 60

    async def test_text_by_default(self) -> None:
        """rfwd-server's default output is twistd's text lines, at info: the listening line,
        and no debug line."""
        server, port = await start_rfwd_server(self, reactor(), make_keys(Path(self.mktemp())))
        await server.stop()
        self.assertIn(
            f"[twisted_rfwd.server.service#info] rfwd-server listening on 127.0.0.1:{port}",
            server.output(),
        )
        self.assertNotIn("#debug]", server.output())

    async def test_json(self) -> None:
        """With --log-format json every line rfwd-server writes is one JSON event, the
        listening event among them."""
        keys = make_keys(Path(self.mktemp()))
        argv = rfwd_server_argv(keys, "--log-format", "json")
        server = spawn(self, reactor(), "rfwd-server", argv, env=plugin_env())
        await server.wait_for(r'"log_format": "rfwd-server listening on \{address\}"')
        await server.stop()
        events = [eventFromJSON(line) for line in server.lines if line]
        self.assertTrue(events)
        self.assertTrue(
            any(formatEvent(e).startswith("rfwd-server listening on 127.0.0.1:") for e in events)
        )

    async def test_client_json(self) -> None:
        """rfwd-client writes JSON too: its fatal error (an unknown host key) is one critical
        event, and every line is a JSON event."""
        keys = make_keys(Path(self.mktemp()))
        _, port = await start_rfwd_server(self, reactor(), keys)
        argv = twistd_argv(
            "rfwd-client",
            "--log-format=json",
            "-i",
            str(keys.user_key),
            "-p",
            str(port),
            "-o",
            f"UserKnownHostsFile={keys.workdir / 'known_hosts'}",
            "-R",
            "0:localhost:80",
            "127.0.0.1",
        )
        client = spawn(self, reactor(), "rfwd-client", argv, env=plugin_env())
        await client.wait_ended(30)
        self.assertEqual(client.exit_code, 255, client.output())
        events = [eventFromJSON(line) for line in client.lines if line]
        critical = [formatEvent(e) for e in events if e["log_level"] == LogLevel.critical]
        self.assertEqual(len(critical), 1, critical)
        self.assertIn("127.0.0.1", critical[0])

    async def test_logfile_is_respected(self) -> None:
        """twistd's --logfile still says where the log goes."""
        keys = make_keys(Path(self.mktemp()))
        logfile = keys.workdir / "server.log"
        argv = rfwd_server_argv(keys)
        argv.insert(argv.index("rfwd-server"), f"--logfile={logfile}")
        server = spawn(self, reactor(), "rfwd-server", argv, env=plugin_env())
        deadline = time.monotonic() + 20
        while "rfwd-server listening on" not in _read(logfile):
            self.assertLess(time.monotonic(), deadline, "no listening line in --logfile")
            self.assertFalse(server.ended, server.output())
            await _tick()
        await server.stop()
        self.assertNotIn("listening", server.output())

    async def test_log_flood(self) -> None:
        """A peer that floods rfwd-server with large packets of an unassigned type, before any
        key exchange, makes it log less than 1% of the bytes it sent (even at -v)."""
        for extra in ((), ("-v",)):
            server, port = await start_rfwd_server(
                self, reactor(), make_keys(Path(self.mktemp())), *extra
            )
            start = server.mark()
            sent, made = await deferToThread(flood, port, 4 << 20, 15.0)
            await server.stop()
            # The flood waited for the server to close the connection, so every line it caused
            # came before the stop.
            logged = before_stop(server.lines[start:])
            self.assertGreaterEqual(sent, 1 << 20, f"the flood hardly started ({made} connections)")
            self.assertLess(
                output_bytes(logged),
                sent / 100,
                f"{output_bytes(logged)} bytes of log for {sent} bytes sent in {made} "
                f"connections ({extra}):\n" + "\n".join(logged[:20]),
            )

    async def test_connection_churn(self) -> None:
        """Connections that each send one bad packet cost at most two lines each, at the default
        level and at -v: none of Conch's per-connection lines (the moduli file, "connection
        lost", key exchange details), no payload."""
        for extra in ((), ("-v",)):
            server, port = await start_rfwd_server(
                self, reactor(), make_keys(Path(self.mktemp())), *extra
            )
            start = server.mark()
            closed = await deferToThread(churn, port, 20, 15.0)
            await server.stop()
            self.assertEqual(closed, 20)
            logged = before_stop(server.lines[start:])
            self.assertLessEqual(len(logged), 2 * 20, "\n".join(logged[:12]))
            self.assertNotIn("moduli", "\n".join(logged))
            self.assertNotIn("b'", "\n".join(logged))


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


async def _tick() -> None:
    from twisted.internet.task import deferLater

    await deferLater(reactor(), 0.05, lambda: None)
