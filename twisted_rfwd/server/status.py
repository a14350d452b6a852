"""
rfwd-server's C{--status-file}: who is logged in and which ports they hold, for operators and
scripts; the same atomically replaced JSON file as the client's.

Shape::

    {"pid": 1234, "since": "2026-11-24T08:00:00Z",      # when the server started
     "updated": "2026-11-24T09:12:00Z",
     "connections": [
       {"user": "alice", "peer": "192.0.2.7:50122", "method": "publickey",
        "key": "ssh-ed25519 SHA256:...",                # or the certificate's, with its ID;
                                                        # null for a password login
        "since": "2026-11-24T09:00:00Z",
        "forwards": [
          {"address": "localhost", "port": 8080,         # as requested, port 0 resolved
           "bound": ["127.0.0.1:8080", "[::1]:8080"],   # a Unix-socket forward: "path" instead
                                                        # of address and port
           "connections_open": 1, "connections_total": 12,
           "bytes_sent": 1024, "bytes_received": 20480}]}]}   # into the tunnel / out of it

It is written when a connection logs in or ends, and when a forward or a forwarded connection
opens or closes; at most once a second (a busy server does not rewrite it per connection: a
change within the second is written when the second is up), and once more when the server stops.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from twisted.application.service import IService, MultiService
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from twisted_rfwd.ssh.metrics import Metrics
from twisted_rfwd.ssh.status_file import StatusFile, timestamp

if TYPE_CHECKING:
    from twisted_rfwd.server.connection import ForwardingServerConnection
    from twisted_rfwd.server.listeners import ForwardListener

__all__ = ["ServerStatus", "StatusFileService"]


class ServerStatus(Metrics):
    """
    Keeps the status file of the logged-in C{connections} (the factory's registry) up to date:
    the events of L{Metrics} that change it schedule a write, at most one per C{interval}.
    """

    def __init__(
        self,
        clock: IReactorTime,
        connections: Collection[ForwardingServerConnection],
        path: str,
        interval: float = 1.0,
    ) -> None:
        self.clock = clock
        self.connections = connections
        self.file = StatusFile(path)
        self.interval = interval
        self.started = clock.seconds()
        self.writes = 0
        self._last: float | None = None
        self._pending: IDelayedCall | None = None

    # -- when to write --------------------------------------------------------------------------

    def changed(self) -> None:
        """Something the file shows changed: write now, or when the interval is up."""
        if self._pending is not None:
            return
        now = self.clock.seconds()
        wait = 0.0 if self._last is None else self._last + self.interval - now
        if wait <= 0:
            self.write()
        else:
            self._pending = self.clock.callLater(wait, self._due)

    def _due(self) -> None:
        self._pending = None
        self.write()

    def flush(self) -> None:
        """Write now, whatever the interval says (the server is stopping)."""
        self.write()

    def write(self) -> None:
        if self._pending is not None:
            if self._pending.active():
                self._pending.cancel()
            self._pending = None
        self._last = self.clock.seconds()
        self.writes += 1
        self.file.write(self.snapshot())

    # -- what to write --------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """The status as a JSON-ready dict (the shape in this module's docstring)."""
        connections = sorted(self.connections, key=lambda c: c.since)
        return {
            "pid": os.getpid(),
            "since": timestamp(self.started),
            "updated": timestamp(self.clock.seconds()),
            "connections": [_connection(c) for c in connections],
        }

    # -- the events that change it ----------------------------------------------------------------

    def ssh_logged_in(self) -> None:
        self.changed()

    def ssh_logged_out(self) -> None:
        self.changed()

    def forward_opened(self) -> None:
        self.changed()

    def forward_closed(self) -> None:
        self.changed()

    def forwarded_connection_opened(self) -> None:
        self.changed()

    def forwarded_connection_closed(self, sent: int, received: int) -> None:
        self.changed()


def _connection(connection: ForwardingServerConnection) -> dict[str, Any]:
    login = connection.login
    key = f"{login.key_type} {login.fingerprint}" if login.fingerprint else None
    listeners = sorted(connection.listeners.values(), key=lambda f: (f.requested_address, f.port))
    sockets = sorted(connection.socket_listeners.items())
    return {
        "user": login.user,
        "peer": connection.peer_description(),
        "method": login.method,
        "key": key,
        "since": timestamp(connection.since),
        "forwards": [_forward(listener) for listener in listeners]
        + [
            {**_forward(listener), "address": None, "port": None, "path": path}
            for path, listener in sockets
        ],
    }


def _forward(listener: ForwardListener) -> dict[str, Any]:
    sent, received = listener.bytes_transferred()
    return {
        "address": listener.requested_address,
        "port": listener.port,
        "bound": list(listener.addresses),
        "connections_open": len(listener.open_connections),
        "connections_total": listener.connections,
        "bytes_sent": sent,
        "bytes_received": received,
    }


class StatusFileService(MultiService):
    """
    Runs C{service} (the server's) and keeps C{status} written: once at start, and once after
    C{service} has stopped, forwards drained and connections gone.
    """

    def __init__(self, service: IService, status: ServerStatus) -> None:
        super().__init__()
        self.status = status
        service.setServiceParent(self)

    def startService(self) -> None:
        super().startService()
        self.status.write()

    def stopService(self) -> Deferred[None]:
        stopped: Deferred[Any] = maybeDeferred(super().stopService)

        def last(result: object) -> object:
            self.status.flush()
            return result

        return stopped.addBoth(last)
