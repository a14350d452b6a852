"""
Why a connection failed, as rfwd-client says it: one line per attempt in ssh's words, the same
sentence as the status file's C{last_error}; ssh's exit status 255 under C{--no-reconnect} and
for usage errors (both plugins, one line); C{--version}.

Real processes on loopback, except the unknown host name: a name in the reserved C{.invalid}
domain would still be sent to the system's DNS server, so that case runs in memory, with a
resolver stub that knows no names, through the same service the plugin runs.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from twisted.internet.interfaces import IHostnameResolver, IHostResolution, IResolutionReceiver
from twisted.internet.task import deferLater
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

from tests.support.keys import new_key, public_line
from tests.support.link import Link
from tests.support.logs import CapturedLog
from tests.support.pairs import Keys, make_keys, start_rfwd_client, start_rfwd_server
from tests.support.processes import ChildProcess, free_port, plugin_env, spawn, twistd_argv
from twisted_rfwd.client.config import ClientConfig
from twisted_rfwd.client.service import TunnelService, TunnelState
from twisted_rfwd.errors import RfwdError
from twisted_rfwd.protocol.spec import parse_remote_forward

CONNECTED = r"Connected to 127\.0\.0\.1 port \d+"


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


class FailureReasonTests(TestCase):
    """Each failure, in the log and in the status file."""

    timeout = 60

    def setUp(self) -> None:
        self.keys: Keys = make_keys(Path(self.mktemp()))
        self.status_path = self.keys.workdir / "status.json"

    def client(self, port: int, *options: str, forward: str = "0:127.0.0.1:9") -> ChildProcess:
        return start_rfwd_client(
            self,
            reactor(),
            self.keys,
            port,
            [forward],
            "--status-file",
            str(self.status_path),
            *options,
        )

    def status(self) -> dict[str, Any]:
        try:
            loaded: dict[str, Any] = json.loads(self.status_path.read_text())
        except (OSError, ValueError):
            return {}
        return loaded

    async def failed_once(self, client: ChildProcess, reason: str) -> None:
        """
        C{client} (under C{--no-reconnect}) exits 255 having logged C{reason} once, which the
        status file keeps as its C{last_error}, in the state C{failed}.
        """
        await client.wait_ended(30)
        self.assertEqual(client.exit_code, 255, client.output())
        said = [line for line in client.lines if reason in line]
        self.assertEqual(len(said), 1, client.output())
        status = self.status()
        self.assertIn(reason, status["last_error"])
        self.assertEqual(status["state"], "failed")
        self.assertNotIn("Traceback", client.output(1000))

    async def test_closed_port(self) -> None:
        """Every attempt against a closed port says "Connection refused" as ssh does, once,
        then when the next attempt is; ClientService's own retry line is not shown."""
        port = free_port()
        client = self.client(port, "--reconnect-delay", "0.1", "--reconnect-max-delay", "0.2")
        refused = f"connect to host 127.0.0.1 port {port}: Connection refused"
        await poll(
            lambda: sum(refused in line for line in client.lines) >= 2, 20, "two refused attempts"
        )
        await poll(lambda: self.status().get("last_error") == refused, 10, "last_error")
        self.assertEqual(self.status()["connections"], 0)
        lines = client.lines[:]
        self.assertFalse([line for line in lines if "Scheduling retry" in line], lines)
        first = next(i for i, line in enumerate(lines) if refused in line)
        self.assertRegex(lines[first + 1], r"Next connection attempt in \d+\.\d s$")

    async def test_closed_port_no_reconnect(self) -> None:
        """Under --no-reconnect the first refused connect ends the client: exit 255."""
        port = free_port()
        client = self.client(port, "--no-reconnect")
        await self.failed_once(client, f"connect to host 127.0.0.1 port {port}: Connection refused")

    async def test_connection_attempts(self) -> None:
        """
        -o ConnectionAttempts=3 under --no-reconnect: three refused connects, then exit 255,
        as ssh tries connect() that many times before giving up.
        """
        port = free_port()
        client = self.client(
            port, "--no-reconnect", "--reconnect-delay", "0.1", "-o", "ConnectionAttempts=3"
        )
        await client.wait_ended(30)
        self.assertEqual(client.exit_code, 255, client.output())
        refused = f"connect to host 127.0.0.1 port {port}: Connection refused"
        self.assertEqual(sum(refused in line for line in client.lines), 3, client.output())

    async def test_timeout_through_blackholed_link(self) -> None:
        """A link that goes silent is a keepalive timeout, named as ssh names it."""
        _, port = await start_rfwd_server(self, reactor(), self.keys)
        link = await Link(reactor(), port).start()
        self.addCleanup(link.stop)
        client = self.client(
            link.port,
            "--no-reconnect",
            "-o",
            "ServerAliveInterval=1",
            "-o",
            "ServerAliveCountMax=1",
        )
        await client.wait_for(CONNECTED)
        link.blackhole()
        await self.failed_once(client, "Timeout, server 127.0.0.1 not responding")

    async def test_wrong_user_key(self) -> None:
        """A key the server does not accept: the refused login, named, ends the client."""
        _, port = await start_rfwd_server(self, reactor(), self.keys)
        self.keys.authorized_keys.write_bytes(public_line(new_key()) + b"\n")
        client = self.client(port)
        await self.failed_once(client, f"Permission denied for user '{self.keys.user}'")

    async def test_wrong_host_key(self) -> None:
        """A host key other than the one recorded: host key verification fails, named."""
        _, port = await start_rfwd_server(self, reactor(), self.keys)
        other = new_key().public().toString("OPENSSH")
        known_hosts = self.keys.workdir / "known_hosts"
        known_hosts.write_bytes(b"[127.0.0.1]:%d " % port + other + b"\n")
        client = self.client(port)
        await self.failed_once(client, f"HOST KEY FOR [127.0.0.1]:{port} HAS CHANGED")

    async def test_refused_forward(self) -> None:
        """A forward the server refuses, under ExitOnForwardFailure: named, exit 255."""
        _, port = await start_rfwd_server(self, reactor(), self.keys, "--permit-listen", "1")
        client = self.client(port, "-o", "ExitOnForwardFailure=yes", forward="2:127.0.0.1:9")
        await self.failed_once(
            client, "remote port forwarding failed for listen port 2:127.0.0.1:9"
        )

    async def test_server_disconnect_reason(self) -> None:
        """The server's disconnect message (it is shutting down) is the reason given."""
        server, port = await start_rfwd_server(self, reactor(), self.keys, "--drain-time", "0")
        client = self.client(port, "--no-reconnect")
        await client.wait_for(CONNECTED)
        await server.stop()
        await self.failed_once(
            client, f"Disconnected from 127.0.0.1 port {port}: the server is shutting down"
        )


@implementer(IHostnameResolver)
class NoNames:
    """A resolver that knows no host name (as the DNS says of C{.invalid}), asked nothing."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def resolveHostName(
        self,
        resolutionReceiver: IResolutionReceiver,
        hostName: str,
        portNumber: int = 0,
        addressTypes: Any = None,
        transportSemantics: str = "TCP",
    ) -> IHostResolution:
        self.asked.append(hostName)

        @implementer(IHostResolution)
        class Resolution:
            name = hostName

            def cancel(self) -> None:
                pass

        resolution = Resolution()
        resolutionReceiver.resolutionBegan(resolution)
        resolutionReceiver.resolutionComplete()
        return resolution


class UnknownHostNameTests(SynchronousTestCase):
    """An unknown host name, in memory: the service the plugin runs, a resolver stub."""

    def service(self, reconnect: bool) -> tuple[TunnelService, list[RfwdError], NoNames]:
        clock = MemoryReactorClock()
        resolver = NoNames()
        clock.installNameResolver(resolver)
        config = ClientConfig(
            host="nosuchhost.invalid",
            user="me",
            forwards=[parse_remote_forward("0:127.0.0.1:9")],
            known_hosts=[self.mktemp()],
            reconnect=reconnect,
            status_file=self.mktemp(),
        )
        fatal: list[RfwdError] = []
        service = TunnelService(clock, config, fatal.append)
        self.addCleanup(service.stopService)
        return service, fatal, resolver

    def test_logged_and_in_status(self) -> None:
        """ssh's "Could not resolve hostname" line, and the status file's last_error."""
        log = CapturedLog(self)
        service, fatal, resolver = self.service(reconnect=True)
        service.startService()
        expected = "Could not resolve hostname nosuchhost.invalid: Name or service not known"
        self.assertEqual(resolver.asked, ["nosuchhost.invalid"])
        self.assertEqual(log.matching(expected), [f"{expected}; reconnecting"])
        self.assertEqual(len(log.matching("Next connection attempt in")), 1)
        assert service.status is not None
        with open(service.status.path) as f:
            status = json.load(f)
        self.assertEqual(status["last_error"], expected)
        self.assertEqual(status["state"], TunnelState.DISCONNECTED.value)
        self.assertEqual(fatal, [])

    def test_no_reconnect_ends_the_service(self) -> None:
        """Without reconnection, the unknown name ends the service through on_fatal."""
        service, fatal, _ = self.service(reconnect=False)
        service.startService()
        self.assertEqual(
            [str(e) for e in fatal],
            ["Could not resolve hostname nosuchhost.invalid: Name or service not known"],
        )
        self.assertEqual(service.state, TunnelState.FAILED)


class ExitStatusTests(TestCase):
    """Usage errors (one line, exit 255), --help (the whole usage), --version."""

    timeout = 60

    async def run_plugin(self, plugin: str, *arguments: str) -> ChildProcess:
        child = spawn(self, reactor(), plugin, twistd_argv(plugin, *arguments), env=plugin_env())
        await child.wait_ended(30)
        return child

    async def test_usage_errors_are_one_line(self) -> None:
        """A usage error is one line naming the problem, then "see --help"; exit 255.  --help
        still prints the whole usage, and exits 0."""
        cases = [
            ("rfwd-client", ["-p", "70000", "-R", "1:h:2", "h"], "bad port '70000'"),
            ("rfwd-client", ["--frobnicate"], "option --frobnicate not recognized"),
            ("rfwd-server", ["--listen", "tcp:notaport"], "bad port 'notaport'"),
            ("rfwd-server", ["--listen", "2222x"], "is not a server endpoint string"),
            ("rfwd-server", ["--gateway-ports", "sometimes"], "sometimes"),
        ]
        for plugin, arguments, problem in cases:
            child = await self.run_plugin(plugin, *arguments)
            self.assertEqual(child.exit_code, 255, (plugin, arguments, child.output()))
            self.assertEqual(len(child.lines), 1, child.output())
            self.assertRegex(
                child.lines[0], f"^{plugin}: .*{re.escape(problem)}.* \\(see --help\\)$"
            )
        for plugin, option in (("rfwd-client", "--remote-forward"), ("rfwd-server", "--listen")):
            child = await self.run_plugin(plugin, "--help")
            self.assertEqual(child.exit_code, 0, child.output())
            self.assertTrue(child.find(option), child.output())
            self.assertGreater(len(child.lines), 10)

    async def test_version(self) -> None:
        """--version names twisted-rfwd's version, Twisted's and cryptography's."""
        import cryptography

        import twisted
        import twisted_rfwd

        for plugin in ("rfwd-client", "rfwd-server"):
            child = await self.run_plugin(plugin, "--version")
            self.assertEqual(child.exit_code, 0, child.output())
            self.assertEqual(
                child.lines,
                [
                    f"{plugin} (twisted-rfwd {twisted_rfwd.__version__}), "
                    f"Twisted {twisted.__version__}, cryptography {cryptography.__version__}"
                ],
            )
