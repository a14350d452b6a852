"""
The pure parts of issue 11's "errors that say why": usage errors as one line with ssh's exit
status, C{--version}, C{--listen}, the connect-failure sentences, the plugin observer's silence
about ClientService's retries, and the embedding API's C{known_hosts}, C{load_host_key} and
cancelled forwards.
"""

from __future__ import annotations

import errno
import io
import sys
from pathlib import Path
from typing import Any

from twisted.internet import error
from twisted.logger import ILogObserver, LogEvent, LogLevel
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

import twisted_rfwd
from tests.support.keys import new_key, write_private_key
from twisted_rfwd.client.config import HostKeyPolicy
from twisted_rfwd.client.connect_errors import connect_failure
from twisted_rfwd.client.forwards import ForwardTable
from twisted_rfwd.client.known_hosts import KnownHosts, known_hosts_paths
from twisted_rfwd.errors import ConfigError
from twisted_rfwd.protocol.spec import parse_remote_forward
from twisted_rfwd.tap import client as client_tap
from twisted_rfwd.tap import server as server_tap
from twisted_rfwd.tap.logs import SafeObserver, usage_error_line, version_line


class Twistd(usage.Options):
    """Stands for twistd's own options: the plugins are its subcommands."""

    subCommands = [
        ["rfwd-client", None, client_tap.Options, "client"],
        ["rfwd-server", None, server_tap.Options, "server"],
    ]


class UsageErrorTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.stderr = io.StringIO()
        self.patch(sys, "stderr", self.stderr)

    def test_one_line_and_255_under_twistd(self) -> None:
        """Under twistd, a usage error writes one line (command, problem, see --help) and
        exits 255."""
        for argv, expected in [
            (
                ["rfwd-client", "-p", "70000", "-R", "1:h:2", "h"],
                "rfwd-client: bad port '70000' (see --help)\n",
            ),
            (
                ["rfwd-server", "--listen", "tcp:notaport"],
                "rfwd-server: --listen 'tcp:notaport': bad port 'notaport' (see --help)\n",
            ),
        ]:
            self.stderr.seek(0)
            self.stderr.truncate()
            exited = self.assertRaises(SystemExit, Twistd().parseOptions, argv)
            self.assertEqual(exited.code, 255)
            self.assertEqual(self.stderr.getvalue(), expected)

    def test_usage_error_outside_twistd(self) -> None:
        """Parsed on their own (no twistd parent), the options still raise UsageError."""
        self.assertRaises(
            usage.UsageError, client_tap.Options().parseOptions, ["-p", "0", "-R", "1:h:2", "h"]
        )
        self.assertEqual(self.stderr.getvalue(), "")

    def test_message_is_one_line(self) -> None:
        """A message spread over lines is joined into one."""
        self.assertEqual(
            usage_error_line("rfwd-client", "first\n  second"),
            "rfwd-client: first second (see --help)",
        )

    def test_version(self) -> None:
        """--version prints twisted-rfwd's, Twisted's and cryptography's versions, exit 0."""
        stdout = io.StringIO()
        self.patch(sys, "stdout", stdout)
        exited = self.assertRaises(SystemExit, Twistd().parseOptions, ["rfwd-server", "--version"])
        self.assertEqual(exited.code, 0)
        self.assertEqual(stdout.getvalue(), version_line("rfwd-server") + "\n")
        self.assertIn(f"(twisted-rfwd {twisted_rfwd.__version__}), Twisted ", stdout.getvalue())
        self.assertIn(", cryptography ", stdout.getvalue())


class ListenTests(SynchronousTestCase):
    def test_bare_port_is_tcp(self) -> None:
        """A bare port number means tcp:PORT; endpoint strings are kept as given."""
        self.assertEqual(server_tap.listen_endpoint("2222"), "tcp:2222")
        for given in ("tcp:0:interface=127.0.0.1", "tcp6:22", "unix:/run/rfwd.sock"):
            self.assertEqual(server_tap.listen_endpoint(given), given)

    def test_bad_listen(self) -> None:
        """A bad port, an unknown endpoint type or too many fields is a ConfigError."""
        for given, message in [
            ("tcp:notaport", "bad port 'notaport'"),
            ("70000", "bad port '70000'"),
            ("frob:1", "Unknown endpoint type: 'frob'"),
            ("tcp:1:2:3:4", "is not a server endpoint string"),
        ]:
            raised = self.assertRaises(ConfigError, server_tap.listen_endpoint, given)
            self.assertIn(message, str(raised))
            self.assertNotIn("\n", str(raised))


class ConnectFailureTests(SynchronousTestCase):
    def test_sentences(self) -> None:
        """Refused, timed out and unresolvable, in ssh's words."""
        cases = [
            (
                error.ConnectionRefusedError(errno.ECONNREFUSED, "x"),
                "connect to host h port 2022: Connection refused",
            ),
            (error.TimeoutError(), "connect to host h port 2022: Connection timed out"),
            (
                error.DNSLookupError("no results for hostname lookup: h"),
                "Could not resolve hostname h: Name or service not known",
            ),
        ]
        for exception, expected in cases:
            self.assertEqual(str(connect_failure("h", 2022, Failure(exception))), expected)


@implementer(ILogObserver)
class Seen(list[LogEvent]):
    """The events an observer passed on."""

    def __call__(self, event: LogEvent) -> None:
        self.append(event)


class RetryNoticeTests(SynchronousTestCase):
    def test_client_service_retry_line_dropped(self) -> None:
        """ClientService's "Scheduling retry" line is dropped; its warnings and ours pass."""
        seen = Seen()
        observer = SafeObserver(seen, LogLevel.debug)
        namespace = "twisted.application._client_service.ClientService"
        observer({"log_namespace": namespace, "log_level": LogLevel.info, "log_format": "x"})
        observer({"log_namespace": namespace, "log_level": LogLevel.warn, "log_format": "y"})
        observer(
            {"log_namespace": "twisted_rfwd.client.service", "log_level": LogLevel.info, "z": 1}
        )
        self.assertEqual([e["log_level"] for e in seen], [LogLevel.warn, LogLevel.info])


class EmbeddingTests(SynchronousTestCase):
    def test_known_hosts_path_or_paths(self) -> None:
        """One path (str or PathLike) is one file, never one file per character."""
        self.assertEqual(known_hosts_paths("/a/known_hosts"), ["/a/known_hosts"])
        self.assertEqual(known_hosts_paths(Path("/a/kh")), ["/a/kh"])
        self.assertEqual(known_hosts_paths(["/a", Path("/b")]), ["/a", "/b"])
        home: Any = known_hosts_paths("~/kh")[0]
        self.assertFalse(home.startswith("~"))
        known = KnownHosts("/a/known_hosts", HostKeyPolicy.YES, "h", 22)
        self.assertEqual(known.paths, ["/a/known_hosts"])
        self.assertRaises(ValueError, KnownHosts, [], HostKeyPolicy.YES, "h", 22)

    def test_load_host_key_exported(self) -> None:
        """twisted_rfwd.load_host_key reads a private host key, as ServerConfig wants."""
        self.assertIn("load_host_key", twisted_rfwd.__all__)
        path = write_private_key(new_key(), Path(self.mktemp()))
        key = twisted_rfwd.load_host_key(str(path))
        self.assertFalse(key.isPublic())

    def test_removed_forward_leaves_the_table(self) -> None:
        """A forward removed from the table is no longer listed; the others keep their order."""
        table = ForwardTable([parse_remote_forward(s) for s in ("1:h:1", "2:h:2", "3:h:3")])
        table.remove(table[1])
        self.assertEqual([s.spec.listen_port for s in table], [1, 3])
