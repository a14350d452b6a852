"""
Readiness and status for systemd (sd_notify(3)), so the units in C{examples/systemd} can be
C{Type=notify}: a unit is "started" once rfwd-server listens, or once rfwd-client's forwards
are answered, rather than as soon as twistd runs.

The protocol is one datagram of C{KEY=VALUE} lines sent to the C{AF_UNIX} socket named by
C{$NOTIFY_SOCKET} (a path, or C{@name} in the abstract namespace); it is written here rather
than taken from libsystemd so that it costs no dependency.  Without C{$NOTIFY_SOCKET} (not run
by systemd, or not C{Type=notify}) nothing is sent.  A send that fails is logged and dropped:
the service runs on, as it would under a unit that is not C{Type=notify}.

Nothing is sent before the reactor runs.  twistd starts the services first, and rfwd-server's
port listens at once, but SIGTERM is handled (the forwards drained) only once the reactor runs:
systemd, told READY=1 earlier, could stop the service in a moment when SIGTERM still kills it.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from typing import Any

from twisted.application.service import Service
from twisted.internet.interfaces import IListeningPort, IReactorCore
from twisted.logger import Logger

from twisted_rfwd.protocol.addresses import describe_address

__all__ = ["Notifier", "StoppingNotice", "TunnelNotifier", "server_listening", "tunnel_status"]

_log = Logger()

# A STATUS= line is shown by `systemctl status`: one line, short, printable.
MAX_STATUS = 200


class Notifier:
    """
    Sends notifications to one systemd notification socket, or nowhere; with a C{reactor},
    holds them until it runs.
    """

    def __init__(self, address: str | None, reactor: IReactorCore | None = None) -> None:
        self.address = _socket_address(address)
        self.reactor = reactor

    @classmethod
    def from_environment(
        cls, reactor: IReactorCore | None = None, environ: Mapping[str, str] = os.environ
    ) -> Notifier:
        """The notifier C{$NOTIFY_SOCKET} asks for: silent when it is unset or empty."""
        return cls(environ.get("NOTIFY_SOCKET") or None, reactor)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *assignments: str) -> None:
        """One datagram with these C{KEY=VALUE} lines."""
        if self.address is None or not assignments:
            return
        data = "\n".join(assignments).encode("utf-8") + b"\n"
        if self.reactor is not None and not self.reactor.running:
            self.reactor.callWhenRunning(self._send, self.address, data)
        else:
            self._send(self.address, data)

    def _send(self, address: str | bytes, data: bytes) -> None:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
                s.setblocking(False)  # never hold the reactor: a full queue drops the notice
                s.sendto(data, address)
        except OSError as e:
            _log.warn(
                "Cannot notify systemd at {address}: {error}",
                address=_printable(address),
                error=e.strerror or str(e),
            )

    def ready(self, status: str) -> None:
        self.send("READY=1", status_line(status))

    def status(self, status: str) -> None:
        self.send(status_line(status))

    def stopping(self) -> None:
        self.send("STOPPING=1")


def status_line(text: str) -> str:
    """C{STATUS=text}, kept to one short printable line (it may quote a peer)."""
    cleaned = "".join(c if c.isprintable() else " " for c in text)
    if len(cleaned) > MAX_STATUS:
        cleaned = cleaned[: MAX_STATUS - 3] + "..."
    return f"STATUS={cleaned}"


def _socket_address(address: str | None) -> str | bytes | None:
    """Where to send: a path, or an abstract name (C{@} becomes the leading NUL byte)."""
    if not address:
        return None
    if address.startswith("@"):
        return b"\0" + os.fsencode(address[1:])
    if address.startswith("/"):
        return address
    # sd_notify(3) also names vsock: addresses; a unit running this code never gets one.
    _log.warn(
        "NOTIFY_SOCKET {address} is not a path or an @name: not notifying systemd",
        address=_printable(address),
    )
    return None


def _printable(address: str | bytes) -> str:
    if isinstance(address, bytes):
        return "@" + address[1:].decode("utf-8", "replace")
    return address


# -- the two plugins' notices -------------------------------------------------------------------


def server_listening(notifier: Notifier, port: IListeningPort) -> None:
    """rfwd-server accepts connections: ready."""
    notifier.ready(f"listening on {describe_address(port.getHost())}")


def tunnel_status(snapshot: Mapping[str, Any]) -> str:
    """
    One line for the client's status (the dict its status file holds, see
    L{twisted_rfwd.client.service.TunnelService.snapshot}).
    """
    state, server = snapshot["state"], snapshot["server"]
    if state == "connected":
        forwards = snapshot["forwards"]
        listening = sum(1 for f in forwards if f["state"] == "listening")
        count = f"{listening}" if listening == len(forwards) else f"{listening} of {len(forwards)}"
        noun = "forward" if len(forwards) == 1 else "forwards"
        return f"connected to {server}, {count} {noun} listening"
    if state == "connecting":
        return f"connecting to {server}"
    error = snapshot.get("last_error")
    if state == "disconnected":
        reason = f": {error}" if error else ""
        return f"not connected to {server}{reason}; retrying"
    if state == "failed":
        return f"failed: {error}" if error else "failed"
    return str(state)


class TunnelNotifier:
    """
    Follows rfwd-client's status: C{READY=1} the first time the tunnel is connected (every
    forward answered), and a C{STATUS=} line whenever the line changes.  Reconnecting later
    does not take the readiness back: systemd has no such notice, and the unit is running.
    """

    def __init__(self, notifier: Notifier) -> None:
        self.notifier = notifier
        self.is_ready = False
        self._last: str | None = None

    def __call__(self, snapshot: Mapping[str, Any]) -> None:
        if not self.notifier.enabled or snapshot["state"] == "stopped":
            return
        text = tunnel_status(snapshot)
        if not self.is_ready and snapshot["state"] == "connected":
            self.is_ready = True
            self._last = text
            self.notifier.ready(text)
        elif text != self._last:
            self._last = text
            self.notifier.status(text)


class StoppingNotice(Service):
    """
    Sends C{STOPPING=1} when the application stops.  Added after the plugin's service in the
    same L{MultiService}, it is stopped first (a MultiService stops its children in reverse),
    so systemd hears of the stop before the forwards drain.
    """

    def __init__(self, notifier: Notifier) -> None:
        self.notifier = notifier

    def stopService(self) -> None:
        super().stopService()
        self.notifier.stopping()
