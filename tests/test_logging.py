"""
Logs an attacker cannot inflate: the per-connection L{LogBudget}, the plugins' log options, the
observer that keeps payload bytes and Conch's chatter out at every level, and the real
processes (text and JSON output, and a flood of unknown messages that must not become a flood
of log).
"""

from __future__ import annotations

import select
import socket
import struct
import time
from pathlib import Path
from typing import Any

from twisted.application.service import Application, IService, Service
from twisted.conch.ssh.transport import SSHTransportBase
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.internet.threads import deferToThread
from twisted.logger import (
    ILogObserver,
    LogEvent,
    Logger,
    LogLevel,
    eventFromJSON,
    formatEvent,
    globalLogPublisher,
)
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.scripts._twistd_unix import ServerOptions
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

from tests.support.keys import new_key, write_private_key
from tests.support.pairs import make_keys, start_rfwd_server
from tests.support.processes import plugin_env, spawn, twistd_argv
from twisted_rfwd.server.config import ServerConfig
from twisted_rfwd.server.factory import ForwardingServerFactory
from twisted_rfwd.ssh.log_budget import LogBudget
from twisted_rfwd.tap import client as client_tap
from twisted_rfwd.tap import server as server_tap
from twisted_rfwd.tap.logs import MAX_FIELD, LoggedService, SafeObserver, conch_formats


def reactor() -> Any:
    from twisted.internet import reactor as r

    return r


@implementer(ILogObserver)
class Collector:
    """Keeps the events it sees."""

    def __init__(self) -> None:
        self.events: list[LogEvent] = []

    def __call__(self, event: LogEvent) -> None:
        self.events.append(event)

    def text(self) -> list[str]:
        return [formatEvent(event) for event in self.events]


# -- the budget ------------------------------------------------------------------------------


class LogBudgetTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.collected = Collector()
        self.log = Logger(namespace="test", observer=self.collected)
        self.budget = LogBudget(self.clock, "192.0.2.7:51000", burst=10, interval=5.0)

    def refuse(self, n: int, what: str = "refusals", level: LogLevel = LogLevel.warn) -> int:
        written = 0
        for i in range(n):
            written += self.budget.emit(what, self.log, level, "Refused forward {n}", n=i)
        return written

    def test_burst_then_one_summary_when_refilled(self) -> None:
        """A burst of lines passes; the rest become one line with their count once a token is
        due, at the level of the lines held back."""
        self.assertEqual(self.refuse(67), 10)
        self.assertEqual(len(self.collected.events), 10)
        self.assertEqual(self.budget.held, 57)
        self.clock.advance(4.9)
        self.assertEqual(len(self.collected.events), 10)
        self.clock.advance(0.1)
        summary = self.collected.events[-1]
        self.assertEqual(
            formatEvent(summary), "... and 57 more refusals from 192.0.2.7:51000 in the last 5 s"
        )
        self.assertEqual(summary["log_level"], LogLevel.warn)
        self.assertEqual(summary["suppressed"], {"refusals": 57})
        self.assertEqual(self.budget.held, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_flush_reports_what_is_held_at_the_end(self) -> None:
        """flush() (the connection ends) writes the count at once and leaves no timer."""
        self.refuse(12)
        self.clock.advance(2)
        self.budget.flush()
        self.assertEqual(
            self.collected.text()[-1],
            "... and 2 more refusals from 192.0.2.7:51000 in the last 2 s",
        )
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.budget.flush()
        self.assertEqual(len(self.collected.events), 11)

    def test_nothing_held_nothing_summarised(self) -> None:
        """Lines within the budget are written as they are, with no summary and no timer."""
        self.assertEqual(self.refuse(10), 10)
        self.budget.flush()
        self.assertEqual(self.collected.text(), [f"Refused forward {i}" for i in range(10)])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_flood_is_bounded(self) -> None:
        """100 lines a second for 100 s: at most burst + 100 s / interval lines, summaries
        included, and every line accounted for in a count."""
        attempted = 0
        for _ in range(1000):
            self.refuse(10)
            attempted += 10
            self.clock.advance(0.1)
        self.budget.flush()
        self.assertLessEqual(len(self.collected.events), 10 + 100 / 5 + 1)
        written = sum(1 for e in self.collected.events if "suppressed" not in e)
        held = sum(
            sum(e["suppressed"].values()) for e in self.collected.events if "suppressed" in e
        )
        self.assertEqual(written + held, attempted)

    def test_refills_to_a_full_burst(self) -> None:
        """After a quiet time as long as burst x interval, a whole burst passes again."""
        self.refuse(10)
        self.clock.advance(50)
        self.assertEqual(self.refuse(10), 10)
        self.assertEqual(self.refuse(1), 0)

    def test_kinds_share_one_line_at_the_highest_level(self) -> None:
        """Held lines of several kinds are summarised in one line, at the most severe level."""
        self.refuse(10)
        self.refuse(3, "refusals", LogLevel.info)
        self.refuse(2, "unexpected messages", LogLevel.error)
        self.clock.advance(5)
        summary = self.collected.events[-1]
        self.assertEqual(
            formatEvent(summary),
            "... and 3 more refusals, 2 more unexpected messages from 192.0.2.7:51000 "
            "in the last 5 s",
        )
        self.assertEqual(summary["log_level"], LogLevel.error)

    def test_allow(self) -> None:
        """allow() answers for lines the caller writes itself, and counts those refused."""
        self.assertTrue(all(self.budget.allow("probes") for _ in range(10)))
        self.assertFalse(self.budget.allow("probes", LogLevel.info, self.log))
        self.budget.flush()
        self.assertEqual(
            self.collected.text(), ["... and 1 more probes from 192.0.2.7:51000 in the last 1 s"]
        )

    def test_bad_parameters(self) -> None:
        """A budget with no burst or no refill is a programming error."""
        self.assertRaises(ValueError, LogBudget, self.clock, "p", burst=0)
        self.assertRaises(ValueError, LogBudget, self.clock, "p", interval=0)


# -- options ---------------------------------------------------------------------------------


class LogOptionTests(SynchronousTestCase):
    def setUp(self) -> None:
        directory = Path(self.mktemp())
        directory.mkdir()
        self.key_path = str(write_private_key(new_key(), directory / "id"))

    def parse(self, plugin: str, *argv: str) -> usage.Options:
        options: usage.Options
        if plugin == "server":
            options = server_tap.Options()
            options.parseOptions(list(argv))
        else:
            options = client_tap.Options()
            options.parseOptions(["-i", self.key_path, *argv, "-R", "8080:localhost:80", "h"])
        return options

    def test_defaults(self) -> None:
        """Both plugins log at info, as twistd's text lines, unless told otherwise."""
        for plugin in ("server", "client"):
            options = self.parse(plugin)
            self.assertEqual(options["log-level"], LogLevel.info, plugin)
            self.assertEqual(options["log-format"], "text", plugin)

    def test_verbose(self) -> None:
        """-v, once or repeated, and --verbose mean debug."""
        for plugin in ("server", "client"):
            for argv in (["-v"], ["-vv"], ["-v", "-v"], ["--verbose"]):
                self.assertEqual(self.parse(plugin, *argv)["log-level"], LogLevel.debug, argv)

    def test_log_level_names(self) -> None:
        """--log-level takes the five level names, any case, and warning for warn."""
        cases = {
            "critical": LogLevel.critical,
            "error": LogLevel.error,
            "warn": LogLevel.warn,
            "warning": LogLevel.warn,
            "INFO": LogLevel.info,
            "debug": LogLevel.debug,
        }
        for plugin in ("server", "client"):
            for name, level in cases.items():
                options = self.parse(plugin, "--log-level", name)
                self.assertEqual(options["log-level"], level, (plugin, name))

    def test_log_format(self) -> None:
        """--log-format is text or json."""
        for plugin in ("server", "client"):
            self.assertEqual(self.parse(plugin, "--log-format", "json")["log-format"], "json")
            self.assertEqual(self.parse(plugin, "--log-format", "text")["log-format"], "text")

    def test_bad_values_are_one_line_usage_errors(self) -> None:
        """A bad level or format is a usage error of one line that names the value."""
        cases = {
            ("--log-level", "loud"): (
                "--log-level must be critical, error, warn, info or debug, not 'loud'"
            ),
            ("--log-format", "xml"): "--log-format must be text or json, not 'xml'",
        }
        for plugin in ("server", "client"):
            for argv, message in cases.items():
                error = self.assertRaises(usage.UsageError, self.parse, plugin, *argv)
                self.assertEqual(str(error), message)


# -- the observer ----------------------------------------------------------------------------

PAYLOAD_MARK = b"PAYLOAD-MARK-\x00\xff-"


class SafeObserverTests(SynchronousTestCase):
    def observe(self, level: LogLevel) -> tuple[Collector, Collector]:
        """Everything logged from now on: as published, and as our observer passes it on."""
        raw, safe = Collector(), Collector()
        observer = SafeObserver(safe, level)
        globalLogPublisher.addObserver(raw)
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, raw)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        return raw, safe

    def test_conch_payload_reprs_never_pass_at_debug(self) -> None:
        """An unknown message before the key exchange makes Conch log its payload's repr at
        debug level (and the moduli line on every connection): none of it is written, even at
        debug."""
        raw, safe = self.observe(LogLevel.debug)
        factory = ForwardingServerFactory(
            reactor(), ServerConfig(host_keys=[new_key()], authorized_keys="/dev/null")
        )
        factory.doStart()
        self.addCleanup(factory.doStop)
        server = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 2222))
        assert server is not None
        server.makeConnection(StringTransport())
        payload = PAYLOAD_MARK * 100
        # Conch's own dispatch (ours may refuse sooner): what Conch logs for such a message.
        SSHTransportBase.dispatchMessage(server, 200, payload)
        server.connectionLost(Failure(ConnectionError("test over")))
        self.assertTrue(any(repr(PAYLOAD_MARK)[2:-1] in line for line in raw.text()))
        written = "\n".join(safe.text()) + repr(safe.events)
        self.assertNotIn("PAYLOAD-MARK", written)
        self.assertNotIn("b'", written)
        self.assertNotIn("moduli", written)
        self.assertNotIn("connection lost", written)

    def test_levels(self) -> None:
        """Our own debug lines are written at debug and not at info; warnings at both."""
        for level in (LogLevel.debug, LogLevel.info):
            safe = Collector()
            log = Logger(namespace="twisted_rfwd.ssh.transport", observer=SafeObserver(safe, level))
            log.debug("Re-exchanging keys with {peer}: {why}", peer="192.0.2.7:1", why="1 GiB")
            log.warn("Refused {what}", what="something")
            expected = ["Refused something"]
            if level is LogLevel.debug:
                expected.insert(0, "Re-exchanging keys with 192.0.2.7:1: 1 GiB")
            self.assertEqual(safe.text(), expected)

    def test_bytes_and_long_strings_are_bounded(self) -> None:
        """bytes in any event become their length; a long string is cut, with its length."""
        safe = Collector()
        observer = SafeObserver(safe, LogLevel.debug)
        log = Logger(namespace="twisted_rfwd.server", observer=observer)
        log.info("got {data!r} for {address}", data=PAYLOAD_MARK, address="x" * 5000)
        (line,) = safe.text()
        self.assertEqual(line, f"got <16 bytes> for {'x' * MAX_FIELD}... (5000 characters)")

    def test_failures_are_kept(self) -> None:
        """A logged failure (a bug) is written, even with a format Conch uses."""
        safe = Collector()
        observer = SafeObserver(safe, LogLevel.info)
        log = Logger(namespace="twisted.conch.ssh.userauth", observer=observer)
        self.assertIn("Error checking auth for user {user}", conch_formats())
        try:
            raise ValueError("a bug")
        except ValueError:
            log.failure("Error checking auth for user {user}", user=b"alice")
        (event,) = safe.events
        self.assertEqual(formatEvent(event), "Error checking auth for user <5 bytes>")
        self.assertIn("a bug", event["log_failure"].getTraceback())

    def test_installed_on_the_application(self) -> None:
        """The plugin's service, added to twistd's application, makes our observer the
        application's ILogObserver, writing twistd's --logfile in the chosen format."""
        path = Path(self.mktemp())
        twistd = ServerOptions()
        twistd.parseOptions(["--nodaemon", f"--logfile={path}", "rfwd-server", "--log-format=json"])
        options = twistd.subOptions
        self.assertIsInstance(options, server_tap.Options)
        application = Application("rfwd-server")
        inner = Service()
        wrapper = LoggedService(inner, options)
        wrapper.setServiceParent(application)
        self.assertIs(inner.parent, wrapper)
        self.assertIs(wrapper.parent, IService(application))
        observer = application.getComponent(ILogObserver)
        self.assertIsInstance(observer, SafeObserver)
        Logger(namespace="twisted_rfwd.x", observer=observer).info("hello {who}", who="you")
        Logger(namespace="twisted_rfwd.x", observer=observer).debug("not at info")
        observer.observer._outFile.close()
        (line,) = path.read_text().splitlines()
        self.assertEqual(formatEvent(eventFromJSON(line)), "hello you")


# -- real processes --------------------------------------------------------------------------


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
        argv = twistd_argv(
            "rfwd-server",
            "--log-format",
            "json",
            "--listen",
            "tcp:0:interface=127.0.0.1",
            "--host-key",
            str(keys.host_key),
            "--authorized-keys",
            str(keys.authorized_keys),
        )
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
        argv = twistd_argv(
            "rfwd-server",
            "--listen",
            "tcp:0:interface=127.0.0.1",
            "--host-key",
            str(keys.host_key),
            "--authorized-keys",
            str(keys.authorized_keys),
        )
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
