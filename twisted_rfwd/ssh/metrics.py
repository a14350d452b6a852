"""
What the server and the client report as it happens, for operators: the events behind the
Prometheus metrics (L{twisted_rfwd.tap.metrics}) and the server's status file
(L{twisted_rfwd.server.status}).

The code that sees an event calls one method of a L{Metrics}; the default does nothing, so the
SSH code never depends on C{prometheus_client}, and costs one empty call when metrics are off.
Every argument is one of a few fixed names (L{OUTCOMES}, L{DISCONNECT_REASONS},
L{AUTH_METHODS}): label sets stay bounded whatever the peers do.

L{StatusFile} writes either end's status file (a JSON snapshot, replaced atomically).
"""

from __future__ import annotations

from collections.abc import Iterable

from twisted.logger import Logger

__all__ = [
    "AUTH_METHODS",
    "DISCONNECT_REASONS",
    "NO_METRICS",
    "OUTCOMES",
    "FanOut",
    "Metrics",
    "auth_method",
    "combine",
]

_log = Logger()

# How an accepted TCP connection to the SSH port went: refused at once (MaxStartups, too few
# descriptors), logged in, or dropped before logging in.
OUTCOMES = ("logged_in", "refused", "dropped")

# Why an SSH connection ended.
DISCONNECT_REASONS = (
    "peer",  # the peer sent SSH_MSG_DISCONNECT
    "connection_lost",  # the socket closed with no SSH goodbye
    "protocol_error",
    "key_exchange_failed",
    "auth_failures",  # MaxAuthTries reached
    "login_grace_time",
    "keepalive_timeout",
    "shutdown",  # the server is stopping
    "by_application",  # any other disconnect of ours
)

# Authentication methods as labels; anything a peer invents is "other".
AUTH_METHODS = ("none", "publickey", "password", "keyboard-interactive", "other")


def auth_method(name: bytes | str) -> str:
    """C{name} if it is one of L{AUTH_METHODS}, else C{other}: a peer chooses the name."""
    text = name.decode("ascii", "replace") if isinstance(name, bytes) else name
    return text if text in AUTH_METHODS else "other"


class Metrics:
    """Receives events; this base ignores them all.  Subclasses override what they count."""

    # -- SSH connections (server) -------------------------------------------------------------

    def ssh_connection_opened(self) -> None:
        """An SSH connection was accepted (it may not log in)."""

    def ssh_connection_refused(self, max_startups: bool) -> None:
        """A TCP connection was closed at once: past MaxStartups, or too few descriptors."""

    def ssh_logged_in(self) -> None:
        """A connection logged in: its forwarding service started."""

    def ssh_logged_out(self) -> None:
        """A logged-in connection's forwarding service stopped."""

    def ssh_connection_closed(self, reason: str, logged_in: bool) -> None:
        """An accepted SSH connection ended; C{reason} is one of L{DISCONNECT_REASONS}."""

    def auth_failed(self, method: str) -> None:
        """A login attempt failed; C{method} is one of L{AUTH_METHODS}."""

    def rekeyed(self) -> None:
        """A key re-exchange (not the first exchange) completed."""

    # -- forwards -----------------------------------------------------------------------------

    def forward_opened(self) -> None:
        """A remote forward started listening."""

    def forward_closed(self) -> None:
        """A remote forward stopped listening."""

    def forwarded_connection_opened(self) -> None:
        """A connection arrived on a forward's port."""

    def forwarded_connection_closed(self, sent: int, received: int) -> None:
        """
        A forwarded connection ended, having sent C{sent} bytes into the tunnel and received
        C{received} from it.
        """

    # -- the client ---------------------------------------------------------------------------

    def client_state(self, state: str) -> None:
        """The client's state changed (a L{twisted_rfwd.client.service.TunnelState} value)."""

    def client_reconnecting(self) -> None:
        """The client will try to connect again."""

    def client_forwards_listening(self, count: int) -> None:
        """How many of the client's forwards the server listens for now."""


NO_METRICS = Metrics()


class FanOut(Metrics):
    """Passes every event to each of several receivers (metrics and the status file)."""

    def __init__(self, receivers: Iterable[Metrics]) -> None:
        self.receivers = list(receivers)

    def ssh_connection_opened(self) -> None:
        for r in self.receivers:
            r.ssh_connection_opened()

    def ssh_connection_refused(self, max_startups: bool) -> None:
        for r in self.receivers:
            r.ssh_connection_refused(max_startups)

    def ssh_logged_in(self) -> None:
        for r in self.receivers:
            r.ssh_logged_in()

    def ssh_logged_out(self) -> None:
        for r in self.receivers:
            r.ssh_logged_out()

    def ssh_connection_closed(self, reason: str, logged_in: bool) -> None:
        for r in self.receivers:
            r.ssh_connection_closed(reason, logged_in)

    def auth_failed(self, method: str) -> None:
        for r in self.receivers:
            r.auth_failed(method)

    def rekeyed(self) -> None:
        for r in self.receivers:
            r.rekeyed()

    def forward_opened(self) -> None:
        for r in self.receivers:
            r.forward_opened()

    def forward_closed(self) -> None:
        for r in self.receivers:
            r.forward_closed()

    def forwarded_connection_opened(self) -> None:
        for r in self.receivers:
            r.forwarded_connection_opened()

    def forwarded_connection_closed(self, sent: int, received: int) -> None:
        for r in self.receivers:
            r.forwarded_connection_closed(sent, received)

    def client_state(self, state: str) -> None:
        for r in self.receivers:
            r.client_state(state)

    def client_reconnecting(self) -> None:
        for r in self.receivers:
            r.client_reconnecting()

    def client_forwards_listening(self, count: int) -> None:
        for r in self.receivers:
            r.client_forwards_listening(count)


def combine(*receivers: Metrics | None) -> Metrics:
    """One receiver for those given (None and L{NO_METRICS} left out)."""
    present = [r for r in receivers if r is not None and r is not NO_METRICS]
    if not present:
        return NO_METRICS
    return present[0] if len(present) == 1 else FanOut(present)
