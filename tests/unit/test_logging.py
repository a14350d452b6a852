"""
Logs an attacker cannot inflate: the per-connection L{LogBudget}, the plugins' log options, the
observer that keeps payload bytes and Conch's chatter out at every level, and the real
processes (text and JSON output, and a flood of unknown messages that must not become a flood
of log).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.application.service import Application, IService, Service
from twisted.conch.ssh.transport import SSHTransportBase
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
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
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from tests.support.keys import new_key, write_private_key
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
