"""
The client as a Twisted service: connect when started, disconnect when stopped, and report the
end of the tunnel to whoever runs it (the twistd plugin turns that into an exit status).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from twisted_rfwd.client.config import ClientConfig
from twisted_rfwd.client.tunnel import Tunnel, connect
from twisted_rfwd.errors import ConnectionClosed, RfwdError

__all__ = ["TunnelService"]

_log = Logger()


class TunnelService(Service):
    """Keeps one tunnel for as long as the service runs; C{on_end} hears why it ended."""

    def __init__(
        self, reactor: Any, config: ClientConfig, on_end: Callable[[RfwdError], None]
    ) -> None:
        self.reactor = reactor
        self.config = config
        self.on_end = on_end
        self.tunnel: Tunnel | None = None
        self._connecting: Deferred[Tunnel] | None = None

    def startService(self) -> None:
        super().startService()
        self._connecting = connect(self.reactor, self.config)
        self._connecting.addCallbacks(self._ready, self._failed)

    def stopService(self) -> Deferred[None]:
        super().stopService()
        if self._connecting is not None:
            self._connecting.cancel()
        if self.tunnel is not None:
            return self.tunnel.close().addCallback(lambda _: None)
        return succeed(None)

    def _ready(self, tunnel: Tunnel) -> None:
        self._connecting = None
        self.tunnel = tunnel
        tunnel.when_closed().addCallback(self._closed)

    def _failed(self, failure: Failure) -> None:
        self._connecting = None
        if not self.running:
            return
        error = failure.value
        if not isinstance(error, RfwdError):
            _log.failure("Unexpected error while connecting", failure=failure)
            error = ConnectionClosed(failure.getErrorMessage())
        self.on_end(error)

    def _closed(self, reason: RfwdError) -> None:
        if self.running:
            self.on_end(reason)
