"""
C{--metrics ENDPOINT}: Prometheus metrics of either plugin, served over HTTP on an endpoint of
its own (loopback unless the endpoint names an interface).

Built on C{prometheus_client}, the optional extra C{twisted-rfwd[metrics]}: it is imported only
when C{--metrics} is given, so the plugins run without it.  Each process has its own registry
(not prometheus_client's global one), so that tests can build several.  Labels take a few fixed
values (L{twisted_rfwd.ssh.metrics}): nothing per connection, user or port.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger

from twisted_rfwd.errors import ConfigError
from twisted_rfwd.protocol.addresses import describe_address
from twisted_rfwd.ssh.metrics import AUTH_METHODS, DISCONNECT_REASONS, OUTCOMES, Metrics

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

__all__ = ["MetricsService", "PrometheusMetrics", "metrics_endpoint", "serve_metrics"]

_log = Logger()

EXTRA_HINT = "--metrics needs prometheus_client: pip install 'twisted-rfwd[metrics]'"

# The client's states, as TunnelState's values (kept here: the client need not be imported).
CLIENT_STATES = ("connecting", "connected", "disconnected", "stopped", "failed")

# Stands in for the reactor while an endpoint string is only parsed (nothing is listening).
_PARSE_ONLY: Any = object()


def metrics_endpoint(text: str) -> str:
    """
    C{--metrics}: a server endpoint string (a bare number is C{tcp:N}); a TCP endpoint that
    names no interface gets the loopback one, so metrics are never public by accident.

    @raise ConfigError: prometheus_client is missing, or C{text} is not an endpoint string.
    """
    if importlib.util.find_spec("prometheus_client") is None:
        raise ConfigError(EXTRA_HINT)
    description = text.strip()
    if description.isascii() and description.isdigit():
        description = f"tcp:{description}"
    kind = description.partition(":")[0].lower()
    if kind in ("tcp", "tcp6") and "interface=" not in description:
        loopback = "\\:\\:1" if kind == "tcp6" else "127.0.0.1"
        description = f"{description}:interface={loopback}"
    try:
        serverFromString(_PARSE_ONLY, description)
    except (ValueError, TypeError, KeyError, IndexError, ImportError, OSError) as e:
        reason = " ".join(str(e).split()) or type(e).__name__
        raise ConfigError(f"--metrics '{text}' is not a server endpoint string: {reason}") from None
    return description


def serve_metrics(
    reactor: Any, description: str, registry: CollectorRegistry
) -> Deferred[IListeningPort]:
    """Serve C{registry} over HTTP on C{description}; logs C{Metrics on ADDRESS} once listening."""
    from prometheus_client.twisted import MetricsResource
    from twisted.web.resource import Resource
    from twisted.web.server import Site

    class _QuietSite(Site):
        """No access log: a line per scrape (every 15 s or so) would bury the useful ones."""

        noisy = False

        def log(self, request: Any) -> None:
            pass

    root = Resource()
    metrics = MetricsResource(registry=registry)
    # /metrics, as Prometheus scrapes by default, and / for a person with curl.
    root.putChild(b"metrics", metrics)
    root.putChild(b"", metrics)
    site = _QuietSite(root)
    site.displayTracebacks = False

    def listening(port: IListeningPort) -> IListeningPort:
        _log.info("Metrics on {address}", address=describe_address(port.getHost()))
        return port

    listened: Deferred[IListeningPort] = serverFromString(reactor, description).listen(site)
    return listened.addCallback(listening)


class MetricsService(Service):
    """Serves C{registry} on C{description} while running; C{on_error} hears if it cannot."""

    def __init__(
        self,
        reactor: Any,
        description: str,
        registry: CollectorRegistry,
        on_error: Callable[[str], None],
    ) -> None:
        self.reactor = reactor
        self.description = description
        self.registry = registry
        self.on_error = on_error
        self.port: IListeningPort | None = None

    def startService(self) -> None:
        super().startService()
        listening = serve_metrics(self.reactor, self.description, self.registry)
        listening.addCallbacks(self._listening, self._failed)

    def _listening(self, port: IListeningPort) -> None:
        if self.running:
            self.port = port
        else:
            port.stopListening()

    def _failed(self, failure: Any) -> None:
        self.on_error(f"cannot serve metrics on {self.description}: {failure.getErrorMessage()}")

    def stopService(self) -> Deferred[None]:
        super().stopService()
        port, self.port = self.port, None
        if port is None:
            return succeed(None)
        return maybeDeferred(port.stopListening).addCallback(lambda _: None)


class PrometheusMetrics(Metrics):
    """The events of L{Metrics} as Prometheus counters and gauges, in a registry of its own."""

    def __init__(self, side: str) -> None:
        """@param side: C{server} or C{client}: which metrics this process has."""
        from prometheus_client import CollectorRegistry, Counter, Gauge
        from prometheus_client import Enum as EnumMetric

        self.registry = registry = CollectorRegistry(auto_describe=True)
        self.side = side
        if side == "server":
            self._ssh_open = Gauge(
                "rfwd_ssh_connections_open", "SSH connections open now.", registry=registry
            )
            self._ssh_total = Counter(
                "rfwd_ssh_connections",
                "SSH connections accepted on the SSH port, by outcome.",
                ["outcome"],
                registry=registry,
            )
            self._auth_failures = Counter(
                "rfwd_auth_failures",
                "Failed authentication attempts, by method.",
                ["method"],
                registry=registry,
            )
            self._disconnects = Counter(
                "rfwd_disconnects",
                "SSH connections ended, by reason.",
                ["reason"],
                registry=registry,
            )
            self._max_startups = Counter(
                "rfwd_max_startups_refusals",
                "Connections dropped by MaxStartups or PerSourceMaxStartups.",
                registry=registry,
            )
            self._forwards = Gauge(
                "rfwd_forwards_open", "Remote forwards listening now.", registry=registry
            )
            self._forwarded_open = Gauge(
                "rfwd_forwarded_connections_open",
                "Forwarded connections open now.",
                registry=registry,
            )
            self._forwarded_total = Counter(
                "rfwd_forwarded_connections",
                "Connections accepted on forwarded ports.",
                registry=registry,
            )
            self._bytes = Counter(
                "rfwd_forwarded_bytes",
                "Bytes of forwarded connections, counted as each ends: sent into the tunnel "
                "(to the client) or received from it.",
                ["direction"],
                registry=registry,
            )
            self._rekeys = Counter("rfwd_rekeys", "Key re-exchanges completed.", registry=registry)
            for outcome in OUTCOMES:
                self._ssh_total.labels(outcome=outcome)
            for method in AUTH_METHODS:
                self._auth_failures.labels(method=method)
            for reason in DISCONNECT_REASONS:
                self._disconnects.labels(reason=reason)
            for direction in ("sent", "received"):
                self._bytes.labels(direction=direction)
        else:
            self._state = EnumMetric(
                "rfwd_client_state",
                "The client's state.",
                states=list(CLIENT_STATES),
                registry=registry,
            )
            self._state.state("stopped")
            self._reconnects = Counter(
                "rfwd_client_reconnects",
                "Connection attempts after a failure or a lost connection.",
                registry=registry,
            )
            self._listening = Gauge(
                "rfwd_client_forwards_listening",
                "The client's forwards the server listens for now.",
                registry=registry,
            )

    # -- server ---------------------------------------------------------------------------------

    def ssh_connection_opened(self) -> None:
        self._ssh_open.inc()

    def ssh_connection_refused(self, max_startups: bool) -> None:
        self._ssh_total.labels(outcome="refused").inc()
        if max_startups:
            self._max_startups.inc()

    def ssh_logged_in(self) -> None:
        self._ssh_total.labels(outcome="logged_in").inc()

    def ssh_connection_closed(self, reason: str, logged_in: bool) -> None:
        self._ssh_open.dec()
        if not logged_in:
            self._ssh_total.labels(outcome="dropped").inc()
        reason = reason if reason in DISCONNECT_REASONS else "by_application"
        self._disconnects.labels(reason=reason).inc()

    def auth_failed(self, method: str) -> None:
        method = method if method in AUTH_METHODS else "other"
        self._auth_failures.labels(method=method).inc()

    def rekeyed(self) -> None:
        if self.side == "server":
            self._rekeys.inc()

    def forward_opened(self) -> None:
        self._forwards.inc()

    def forward_closed(self) -> None:
        self._forwards.dec()

    def forwarded_connection_opened(self) -> None:
        self._forwarded_open.inc()
        self._forwarded_total.inc()

    def forwarded_connection_closed(self, sent: int, received: int) -> None:
        self._forwarded_open.dec()
        self._bytes.labels(direction="sent").inc(sent)
        self._bytes.labels(direction="received").inc(received)

    # -- client ---------------------------------------------------------------------------------

    def client_state(self, state: str) -> None:
        if state in CLIENT_STATES:
            self._state.state(state)

    def client_reconnecting(self) -> None:
        self._reconnects.inc()

    def client_forwards_listening(self, count: int) -> None:
        self._listening.set(count)
