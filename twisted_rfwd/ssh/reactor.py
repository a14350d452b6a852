"""
The reactor both plugins run on unless twistd's C{--reactor} picks another: Twisted's epoll
reactor, without the per-event log context.

Twisted's reactor wraps every readiness event in C{log.callWithLogger}, which asks the
descriptor for its log prefix and pushes it as the legacy log context ("system") for the
handler's duration: a dozen Python calls and a dictionary copy per event.  A forwarded
connection is six or seven events at each end, and the tunnel's lines are logged through
C{twisted.logger} with their own namespace, so the context pays for nothing.  Events are handled
by the same L{_doReadOrWrite}, which logs any exception the handler raises and disconnects that
descriptor, as before.
"""

from __future__ import annotations

import errno
import sys

from twisted.internet.epollreactor import EPollReactor
from twisted.internet.main import installReactor

__all__ = ["TunnelReactor", "install_unless_chosen"]


class TunnelReactor(EPollReactor):
    """L{EPollReactor} whose events run without C{log.callWithLogger}."""

    def doPoll(self, timeout: float | None) -> None:
        try:
            events = self._poller.poll(-1 if timeout is None else timeout, len(self._selectables))
        except OSError as e:
            if e.errno == errno.EINTR:
                return
            raise
        selectables = self._selectables
        handle = self._doReadOrWrite
        for fd, event in events:
            selectable = selectables.get(fd)
            if selectable is not None:
                handle(selectable, fd, event)

    doIteration = doPoll


def install_unless_chosen() -> None:
    """
    Install L{TunnelReactor}, unless a reactor is installed already (twistd's C{--reactor}, or a
    program that chose its own), or epoll is missing (not Linux).
    """
    if "twisted.internet.reactor" in sys.modules:
        return
    try:
        reactor = TunnelReactor()
    except (AttributeError, OSError):  # no select.epoll
        return
    installReactor(reactor)
