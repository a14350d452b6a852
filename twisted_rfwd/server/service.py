"""
The server as a Twisted service: listen when started, stop listening when stopped, and report a
failure to listen instead of running on with nothing to serve.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.application.service import Service
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure

from twisted_rfwd.protocol.addresses import describe_address
from twisted_rfwd.server.factory import ForwardingServerFactory
from twisted_rfwd.ssh.fingerprint import fingerprint

__all__ = ["ServerService"]

_log = Logger()


class ServerService(Service):
    """
    Listens with a L{ForwardingServerFactory}; C{on_error} hears if it cannot, and
    C{on_listening} (systemd's readiness, for one) once it does.
    """

    def __init__(
        self,
        endpoint: IStreamServerEndpoint,
        factory: ForwardingServerFactory,
        on_error: Callable[[str], None],
        on_listening: Callable[[IListeningPort], None] | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.factory = factory
        self.on_error = on_error
        self.on_listening = on_listening
        self.port: IListeningPort | None = None

    def startService(self) -> None:
        super().startService()
        for key in self.factory.config.host_keys:
            _log.info(
                "Host key {key_type} {fingerprint}",
                key_type=key.sshType().decode("ascii"),
                fingerprint=fingerprint(key),
            )
        self.endpoint.listen(self.factory).addCallbacks(self._listening, self._failed)

    def _listening(self, port: IListeningPort) -> None:
        self.port = port
        _log.info("rfwd-server listening on {address}", address=describe_address(port.getHost()))
        if self.on_listening is not None:
            self.on_listening(port)

    def _failed(self, failure: Failure) -> None:
        self.on_error(f"cannot listen for SSH connections: {failure.getErrorMessage()}")

    def stopService(self) -> Deferred[None]:
        """Stop accepting SSH connections, then drain the forwards (see L{drain})."""
        super().stopService()
        port, self.port = self.port, None
        stopped = maybeDeferred(port.stopListening) if port is not None else succeed(None)
        return stopped.addCallback(lambda _: self.drain())

    def drain(self) -> Deferred[None]:
        connections = len(self.factory.connections)
        timeout = self.factory.config.drain_time
        if connections:
            _log.info(
                "Shutting down: closing forwards of {count} connections, draining up to "
                "{timeout:g} s",
                count=connections,
                timeout=timeout,
            )
        return self.factory.drain(timeout)
