"""
The client as a Twisted service that keeps its tunnel up: what makes autossh unnecessary.

Reconnection is Twisted's L{ClientService}; each connection gets a fresh L{Tunnel}.  A connection
attempt counts as a success only once it is authenticated and every forward has been answered
(L{ReadyTunnelEndpoint}), so ClientService's own count of failed attempts, which the backoff
grows with, restarts only then.

Every failed attempt is explained in one line, in ssh's words (C{connect to host H port P:
Connection refused}, C{Could not resolve hostname H: ...}, the server's disconnect message...),
and kept as the status file's C{last_error}; then "Next connection attempt in N s".

What retrying cannot fix ends the service through C{on_fatal}: an unknown or changed host key or
a refused login on the first attempt, and a refused forward under C{ExitOnForwardFailure}.
Without C{reconnect}, any failure ends it, the first connect included (as ssh exits 255).
A forward the server refuses otherwise (its port still held by our previous, vanished
connection, typically) is asked for again, with backoff, until it listens.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from enum import Enum
from typing import Any

from twisted.application.internet import ClientService, backoffPolicy
from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IStreamClientEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure

from twisted_rfwd.client.config import ClientConfig
from twisted_rfwd.client.connect_errors import connect_failure
from twisted_rfwd.client.forwards import ForwardState, ForwardStatus
from twisted_rfwd.client.ready_endpoint import ReadyTunnelEndpoint, tunnel_handles
from twisted_rfwd.client.status import StatusFile, timestamp
from twisted_rfwd.client.tunnel import Tunnel, client_endpoint
from twisted_rfwd.errors import ForwardRefused, RfwdError
from twisted_rfwd.ssh.metrics import NO_METRICS, Metrics

__all__ = ["TunnelService", "TunnelState"]

_log = Logger()


class TunnelState(Enum):
    """Where the service stands; the values are what the status file shows."""

    CONNECTING = "connecting"  # started, no tunnel ready yet
    CONNECTED = "connected"  # a tunnel is ready
    DISCONNECTED = "disconnected"  # the tunnel was lost: retrying
    STOPPED = "stopped"  # not started, or stopped
    FAILED = "failed"  # given up: what ended it went to on_fatal


class TunnelService(Service):
    """
    Keeps one tunnel up for as long as the service runs; C{on_fatal} hears what ends it, and
    is the one to tell the user (the service does not log it too).  C{on_status} hears every
    status the status file would show (L{snapshot}), written or not: systemd's notices.
    """

    def __init__(
        self,
        reactor: Any,
        config: ClientConfig,
        on_fatal: Callable[[RfwdError], None],
        endpoint: IStreamClientEndpoint | None = None,
        on_status: Callable[[dict[str, Any]], None] | None = None,
        metrics: Metrics = NO_METRICS,
    ) -> None:
        self.reactor = reactor
        self.metrics = metrics
        self.config = config
        self.on_fatal = on_fatal
        self.on_status = on_status
        self.endpoint = endpoint if endpoint is not None else client_endpoint(reactor, config)
        self.tunnel: Tunnel | None = None
        self.status = StatusFile(config.status_file) if config.status_file else None
        self.connections = 0
        # TCP connects that failed in a row: ConnectionAttempts allows that many under
        # --no-reconnect, as ssh retries connect() before giving up.
        self._connect_failures = 0
        self.last_error: str | None = None
        self.state = TunnelState.STOPPED
        self._since = reactor.seconds()
        self._backoff = backoffPolicy(config.reconnect_initial_delay, config.reconnect_max_delay)
        self._retries: dict[int, IDelayedCall] = {}
        self._client: ClientService | None = None
        self._ended = False

    # -- Service ----------------------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self._ended = False
        self._set_state(TunnelState.CONNECTING)
        endpoint = ReadyTunnelEndpoint(
            self.endpoint,
            self.new_tunnel,
            self._end_tunnel,
            self.reactor,
            self.config.connect_timeout,
            self._connect_failed,
        )
        self._client = ClientService(
            endpoint, tunnel_handles(), retryPolicy=self._next_delay, clock=self.reactor
        )
        self._client.startService()

    def stopService(self) -> Deferred[None]:
        """Drain the open forwarded connections (bounded), disconnect, and stop retrying."""
        super().stopService()
        self._ended = True
        self._cancel_retries()
        tunnel = self.tunnel
        client, self._client = self._client, None
        # ClientService ends the tunnel it holds, or the one being set up, with _end_tunnel.
        stopping = client.stopService() if client is not None else succeed(None)
        if tunnel is not None:
            # Cancelling a half-made tunnel's attempt does not wait for its connection to close.
            closed = tunnel.when_closed()
            stopping.addBoth(lambda _: closed)

        def stopped(_: object) -> None:
            # A service that gave up stays "failed" in the status file, with its last_error.
            if self.state is not TunnelState.FAILED:
                self._set_state(TunnelState.STOPPED)

        return stopping.addBoth(stopped)

    def _end_tunnel(self, tunnel: Tunnel) -> None:
        """Stopping: a logged-in tunnel is drained, one still being set up is hung up."""
        if tunnel.connection is not None:
            tunnel.drain(self.config.drain_time)
        else:
            tunnel.hang_up()

    # -- one connection attempt -------------------------------------------------------------

    def new_tunnel(self) -> Tunnel:
        """A TCP connection was made: give it a fresh tunnel, watched by this service."""
        tunnel = Tunnel(self.reactor, self.config)
        tunnel.on_change = self._write_status
        self.tunnel = tunnel
        tunnel.when_ready().addCallbacks(self._ready, lambda _: None)
        tunnel.when_closed().addCallback(self._closed, tunnel)
        return tunnel

    def _ready(self, tunnel: Tunnel) -> None:
        self.connections += 1
        self._connect_failures = 0
        self.last_error = None
        self._set_state(TunnelState.CONNECTED)
        for state in tunnel.forwards:
            if state.status is ForwardStatus.REFUSED:
                self._retry_later(tunnel, state, 0)

    def _closed(self, reason: RfwdError, tunnel: Tunnel) -> None:
        self._cancel_retries()
        if self.tunnel is tunnel:
            self.tunnel = None
        if self._ended:
            return
        fatal = tunnel.fatal_error
        give_up = fatal is not None and (isinstance(fatal, ForwardRefused) or self.connections == 0)
        self._failed(fatal or reason, give_up)

    def _connect_failed(self, failure: Failure) -> RfwdError:
        """No TCP connection (refused, unreachable, no such name): ssh's sentence for it."""
        error = connect_failure(self.config.host, self.config.port, failure)
        self._connect_failures += 1
        if not self._ended:
            another = self._connect_failures < self.config.connection_attempts
            self._failed(error, give_up=False, retry_anyway=another)
        return error

    def _failed(self, reason: RfwdError, give_up: bool, retry_anyway: bool = False) -> None:
        """One attempt, or a tunnel, has failed: say why once, then retry or give up."""
        self.last_error = str(reason)
        if give_up or not (self.config.reconnect or retry_anyway):
            self._ended = True
            self._set_state(TunnelState.FAILED)
            # Not logged here: on_fatal reports it (the plugin logs it once, then exits 255).
            # ClientService is stopped on the next turn: a connect can fail at once, from
            # inside its own connection attempt, where it takes no other input.
            if self._client is not None:
                self.reactor.callLater(0, self._stop_client, self._client)
            self.on_fatal(reason)
            return
        _log.warn("{reason}; reconnecting", reason=str(reason))
        self._set_state(TunnelState.DISCONNECTED)

    def _stop_client(self, client: ClientService) -> None:
        if self._client is client:
            client.stopService()

    def _next_delay(self, attempt: int) -> float:
        """
        ClientService's retry policy: C{attempt} counts the attempts since a tunnel was last
        ready (1 for the first retry, which waits the initial delay).
        """
        delay = float(self._backoff(attempt - 1))
        if not self._ended:
            if self.state is TunnelState.CONNECTED:
                self._set_state(TunnelState.DISCONNECTED)
            self.metrics.client_reconnecting()
            _log.info("Next connection attempt in {delay:.1f} s", delay=delay)
        return delay

    # -- forwards the server refused ----------------------------------------------------------

    def _retry_later(self, tunnel: Tunnel, state: ForwardState, attempt: int) -> None:
        delay = float(self._backoff(attempt))
        _log.info(
            "Will ask again for forward {spec} in {delay:.1f} s", spec=str(state.spec), delay=delay
        )
        self._retries[id(state)] = self.reactor.callLater(
            delay, self._retry, tunnel, state, attempt + 1
        )

    def _retry(self, tunnel: Tunnel, state: ForwardState, attempt: int) -> None:
        self._retries.pop(id(state), None)
        if self._ended or tunnel is not self.tunnel:
            return

        def answered(result: ForwardState) -> None:
            if result.status is ForwardStatus.REFUSED and tunnel is self.tunnel:
                self._retry_later(tunnel, result, attempt)
            elif result.status is ForwardStatus.LISTENING:
                _log.info("Forward {spec} is listening now", spec=str(result.spec))

        tunnel.retry_forward(state).addCallbacks(answered, lambda _: None)

    # -- status ------------------------------------------------------------------------------

    def _set_state(self, state: TunnelState) -> None:
        if state != self.state:
            self.state = state
            self._since = self.reactor.seconds()
            self.metrics.client_state(state.value)
        self._write_status()

    def snapshot(self) -> dict[str, Any]:
        """The status as a JSON-ready dict (see L{twisted_rfwd.client.status})."""
        tunnel = self.tunnel
        if tunnel is not None:
            forwards = [
                {
                    "spec": str(s.spec),
                    "state": s.status.value,
                    "port": s.port,
                    "last_error": s.error,
                }
                for s in tunnel.forwards
            ]
        else:
            forwards = [
                {"spec": str(spec), "state": "requested", "port": None, "last_error": None}
                for spec in self.config.forwards
            ]
        return {
            "state": self.state.value,
            "server": f"{self.config.host}:{self.config.port}",
            "user": self.config.user,
            "pid": os.getpid(),
            "since": timestamp(self._since),
            "connections": self.connections,
            "last_error": self.last_error,
            "forwards": forwards,
        }

    def _write_status(self) -> None:
        tunnel = self.tunnel
        self.metrics.client_forwards_listening(
            0
            if tunnel is None
            else sum(1 for s in tunnel.forwards if s.status is ForwardStatus.LISTENING)
        )
        if self.status is None and self.on_status is None:
            return
        snapshot = self.snapshot()
        if self.status is not None:
            self.status.write(snapshot)
        if self.on_status is not None:
            self.on_status(snapshot)

    def _cancel_retries(self) -> None:
        retries, self._retries = self._retries, {}
        for call in retries.values():
            if call.active():
                call.cancel()
