"""
Detecting a peer that stopped answering: OpenSSH's C{ServerAliveInterval}/C{ServerAliveCountMax}
(client) and C{ClientAliveInterval}/C{ClientAliveCountMax} (server).

When nothing has arrived for C{interval} seconds, a C{keepalive@openssh.com} request that wants
a reply is sent; any reply (OpenSSH answers "failure") or any other traffic proves the peer
alive.  When C{count_max} requests in a row got no answer, the peer is declared dead: a
blackholed link is noticed within C{interval * (count_max + 1)} seconds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime

__all__ = ["KeepAlive"]


class KeepAlive:
    """One connection's liveness check; the owner says how to probe and what dead means."""

    def __init__(
        self,
        clock: IReactorTime,
        interval: float,
        count_max: int,
        traffic: Callable[[], int],
        probe: Callable[[], Deferred[Any]],
        dead: Callable[[float], None],
    ) -> None:
        """
        @param traffic: a counter of packets received so far (read, never reset).
        @param probe: sends a keepalive request; fires (or fails) when the peer answers.
        @param dead: called with the seconds since the peer was last heard from.
        """
        self._clock = clock
        self.interval = interval
        self.count_max = count_max
        self._traffic = traffic
        self._probe = probe
        self._dead = dead
        self._seen = -1
        self._heard_at = 0.0
        self.unanswered = 0
        self._call: IDelayedCall | None = None

    def start(self) -> None:
        if self.interval > 0 and self._call is None:
            self._seen = self._traffic()
            self._heard_at = self._clock.seconds()
            self._call = self._clock.callLater(self.interval, self._check)

    def stop(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def _check(self) -> None:
        self._call = None
        now = self._clock.seconds()
        seen = self._traffic()
        if seen != self._seen:
            self._seen = seen
            self._heard_at = now
            self.unanswered = 0
        elif self.unanswered >= self.count_max:
            self._dead(now - self._heard_at)
            return
        else:
            self.unanswered += 1
            self._probe().addBoth(self._answered)
        self._call = self._clock.callLater(self.interval, self._check)

    def _answered(self, _: object) -> None:
        self.unanswered = 0
