"""
C{--metrics} on both plugins and rfwd-server's C{--status-file}: real processes on loopback,
scraped over HTTP and parsed with prometheus_client's own parser.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.task import deferLater
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, readBody

from tests.support.apps import digest_line, exchange, pattern, start_app_server, wait_until_echo
from tests.support.keys import new_key, public_line
from tests.support.memory import MemoryRig
from tests.support.pairs import make_keys, start_rfwd_client, start_rfwd_server
from tests.support.processes import free_port
from twisted_rfwd.errors import ConfigError
from twisted_rfwd.protocol.spec import parse_remote_forward
from twisted_rfwd.tap.metrics import EXTRA_HINT, PrometheusMetrics, metrics_endpoint

METRICS_ON = r"Metrics on 127\.0\.0\.1:(\d+)"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


async def scrape(reactor: Any, port: int) -> Samples:
    """GET /metrics and parse it: sample name and labels to value."""
    from prometheus_client.parser import text_string_to_metric_families

    response = await Agent(reactor).request(b"GET", f"http://127.0.0.1:{port}/metrics".encode())
    body: bytes = await readBody(response)
    samples: Samples = {}
    for family in text_string_to_metric_families(body.decode("utf-8")):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), -1.0)


class MetricsProcessTests(TestCase):
    timeout = 90

    async def test_scrape_server_and_client(self) -> None:
        """
        After one forwarded connection, the server's metrics count the login, the forward, the
        forwarded connection and its bytes; the client's show it connected with one forward;
        the server's status file lists the connection, its key and its forward.
        """
        reactor = _reactor()
        keys = make_keys(Path(self.mktemp()))
        _, app = await start_app_server(reactor)
        self.addCleanup(app.stopListening)
        app_port = app.getHost().port  # type: ignore[attr-defined]
        status_path = keys.workdir / "server-status.json"
        server, ssh_port = await start_rfwd_server(
            self, reactor, keys, "--metrics", "tcp:0", "--status-file", str(status_path)
        )
        server_metrics = int((await server.wait_for(METRICS_ON)).group(1))
        listen = free_port()
        client = start_rfwd_client(
            self,
            reactor,
            keys,
            ssh_port,
            [f"127.0.0.1:{listen}:127.0.0.1:{app_port}"],
            "--metrics",
            "tcp:0",
        )
        client_metrics = int((await client.wait_for(METRICS_ON)).group(1))
        await wait_until_echo(reactor, listen)

        before = await scrape(reactor, server_metrics)
        total_before = value(before, "rfwd_forwarded_connections_total")
        sent_before = value(before, "rfwd_forwarded_bytes_total", direction="sent")
        upload = pattern(100_000, seed=7)
        self.assertEqual(await exchange(reactor, listen, b"U" + upload), digest_line(upload))

        # The server counts the bytes when its end of the connection closes: poll for it.
        deadline = reactor.seconds() + 20
        while True:
            after = await scrape(reactor, server_metrics)
            if value(after, "rfwd_forwarded_connections_open") == 0 or (
                reactor.seconds() > deadline
            ):
                break
            await deferLater(reactor, 0.1, lambda: None)
        self.assertEqual(value(after, "rfwd_forwarded_connections_total"), total_before + 1)
        self.assertEqual(value(after, "rfwd_forwarded_connections_open"), 0)
        self.assertGreaterEqual(
            value(after, "rfwd_forwarded_bytes_total", direction="sent") - sent_before,
            len(upload) + 1,
        )
        self.assertGreater(value(after, "rfwd_forwarded_bytes_total", direction="received"), 0)
        self.assertEqual(value(after, "rfwd_ssh_connections_total", outcome="logged_in"), 1)
        self.assertEqual(value(after, "rfwd_ssh_connections_open"), 1)
        self.assertEqual(value(after, "rfwd_forwards_open"), 1)
        self.assertEqual(value(after, "rfwd_disconnects_total", reason="peer"), 0)

        client_samples = await scrape(reactor, client_metrics)
        self.assertEqual(
            value(client_samples, "rfwd_client_state", rfwd_client_state="connected"), 1
        )
        self.assertEqual(value(client_samples, "rfwd_client_forwards_listening"), 1)
        self.assertEqual(value(client_samples, "rfwd_client_reconnects_total"), 0)

        # Rate-limited: a write from before the exchange may be there at first.
        status = await self._status_with_forward(reactor, status_path, total_before + 1)
        [connection] = status["connections"]
        self.assertEqual(connection["user"], keys.user)
        self.assertEqual(connection["method"], "publickey")
        self.assertRegex(connection["key"], r"^ssh-ed25519 SHA256:")
        self.assertRegex(connection["peer"], r"^127\.0\.0\.1:\d+$")
        [forward] = connection["forwards"]
        self.assertEqual(forward["port"], listen)
        self.assertEqual(forward["bound"], [f"127.0.0.1:{listen}"])
        self.assertEqual(forward["connections_open"], 0)
        self.assertEqual(forward["connections_total"], total_before + 1)
        self.assertGreaterEqual(forward["bytes_sent"], len(upload) + 1)

    async def _status_with_forward(self, reactor: Any, path: Path, total: float) -> dict[str, Any]:
        """The status file once it shows a forward with C{total} connections, none open."""
        deadline = reactor.seconds() + 20
        status: dict[str, Any] = {}
        while reactor.seconds() < deadline:
            try:
                status = json.loads(path.read_text())
            except (OSError, ValueError):
                status = {}
            connections = status.get("connections", [])
            forwards = [f for c in connections for f in c["forwards"]]
            if [(f["connections_open"], f["connections_total"]) for f in forwards] == [(0, total)]:
                return status
            await deferLater(reactor, 0.1, lambda: None)
        self.fail(f"the status file never listed the connection and its forward: {status}")


class MetricsEndpointTests(SynchronousTestCase):
    def test_loopback_by_default(self) -> None:
        """A TCP endpoint that names no interface listens on loopback only."""
        self.assertEqual(metrics_endpoint("tcp:9100"), "tcp:9100:interface=127.0.0.1")
        self.assertEqual(metrics_endpoint("9100"), "tcp:9100:interface=127.0.0.1")
        self.assertEqual(
            metrics_endpoint("tcp:9100:interface=0.0.0.0"), "tcp:9100:interface=0.0.0.0"
        )

    def test_bad_endpoint(self) -> None:
        """A string that is no endpoint is one line naming the option."""
        with self.assertRaises(ConfigError) as caught:
            metrics_endpoint("nonsense:1")
        self.assertIn("--metrics 'nonsense:1'", str(caught.exception))

    def test_missing_extra(self) -> None:
        """Without prometheus_client, --metrics says which extra to install."""
        real = importlib.util.find_spec

        def find_spec(name: str, *args: Any) -> Any:
            return None if name == "prometheus_client" else real(name, *args)

        self.patch(importlib.util, "find_spec", find_spec)
        with self.assertRaises(ConfigError) as caught:
            metrics_endpoint("tcp:0")
        self.assertEqual(str(caught.exception), EXTRA_HINT)
        self.assertIn("twisted-rfwd[metrics]", EXTRA_HINT)


class ServerWiringTests(SynchronousTestCase):
    """The server's events reach its metrics: a whole connection in memory, no sockets."""

    def rig(self, **server_options: Any) -> tuple[MemoryRig, PrometheusMetrics]:
        tmp = Path(self.mktemp())
        tmp.mkdir()
        rig = MemoryRig(tmp, [parse_remote_forward("8080:127.0.0.1:80")], **server_options)
        metrics = PrometheusMetrics("server")
        rig.factory.metrics = metrics
        return rig, metrics

    def test_login_forward_connection_and_end(self) -> None:
        """
        A login, its forward, one forwarded connection with its bytes, and the end of the SSH
        connection are counted; the gauges come back to zero.
        """
        rig, metrics = self.rig()
        self.successResultOf(rig.connect())
        get = metrics.registry.get_sample_value
        self.assertEqual(get("rfwd_ssh_connections_total", {"outcome": "logged_in"}), 1)
        self.assertEqual(get("rfwd_ssh_connections_open"), 1)
        self.assertEqual(get("rfwd_forwards_open"), 1)

        app = rig.app_connects(8080)
        destination = rig.destination_accepts()
        app.receive(b"hello")
        rig.flush()
        destination.receive(b"world!")
        rig.flush()
        self.assertEqual(get("rfwd_forwarded_connections_open"), 1)
        app.reset()
        rig.flush()
        self.assertEqual(get("rfwd_forwarded_connections_open"), 0)
        self.assertEqual(get("rfwd_forwarded_connections_total"), 1)
        self.assertEqual(get("rfwd_forwarded_bytes_total", {"direction": "sent"}), 5)
        self.assertEqual(get("rfwd_forwarded_bytes_total", {"direction": "received"}), 6)

        rig.disconnect()
        self.assertEqual(get("rfwd_ssh_connections_open"), 0)
        self.assertEqual(get("rfwd_forwards_open"), 0)
        self.assertEqual(get("rfwd_disconnects_total", {"reason": "connection_lost"}), 1)
        self.assertEqual(get("rfwd_ssh_connections_total", {"outcome": "dropped"}), 0)

    def test_refused_key_counts_an_authentication_failure(self) -> None:
        """A key the server does not accept is a publickey failure; the connection is dropped."""
        rig, metrics = self.rig(authorized_line=public_line(new_key()))
        self.failureResultOf(rig.connect())
        rig.disconnect()
        get = metrics.registry.get_sample_value
        self.assertGreaterEqual(get("rfwd_auth_failures_total", {"method": "publickey"}) or 0, 1)
        self.assertEqual(get("rfwd_ssh_connections_total", {"outcome": "logged_in"}), 0)
        self.assertEqual(get("rfwd_ssh_connections_total", {"outcome": "dropped"}), 1)

    def test_max_startups_refusal(self) -> None:
        """A connection past MaxStartups is refused and counted as such."""
        rig, metrics = self.rig(max_startups=(1, 100, 1))
        address = IPv4Address("TCP", "127.0.0.1", 2222)
        rig.factory.buildProtocol(address)
        rig.factory.buildProtocol(address)
        get = metrics.registry.get_sample_value
        self.assertEqual(get("rfwd_max_startups_refusals_total"), 1)
        self.assertEqual(get("rfwd_ssh_connections_total", {"outcome": "refused"}), 1)

    def test_rekey_counted(self) -> None:
        """A key re-exchange after login is counted; the first exchange is not."""
        rig, metrics = self.rig(rekey_bytes=64 * 1024)
        self.successResultOf(rig.connect())
        get = metrics.registry.get_sample_value
        self.assertEqual(get("rfwd_rekeys_total"), 0)
        app = rig.app_connects(8080)
        rig.destination_accepts()
        app.receive(b"x" * 200_000)
        rig.flush()
        self.assertGreaterEqual(get("rfwd_rekeys_total") or 0, 1)
