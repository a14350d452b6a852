"""
What one connection can make the process log, bounded.

A peer that can make the server write a line per message it sends can make the server write
more log than it sends traffic (a refusal per request, a warning per bad message).  A
L{LogBudget} belongs to one connection and lets its lines through a token bucket: a burst of
C{burst} lines, then one line per C{interval} seconds.  Lines over budget are counted, not
written, and the count becomes a single line once the budget refills or the connection ends::

    ... and 57 more refusals from 192.0.2.7:51000 in the last 10 s

Example, in a connection's code::

    from twisted.logger import Logger, LogLevel
    from twisted_rfwd.ssh.log_budget import LogBudget

    _log = Logger()

    class Connection:
        def connectionMade(self) -> None:
            self.budget = LogBudget(self.clock, peer="192.0.2.7:51000")

        def refuse(self, user: str, port: int, why: str) -> None:
            self.budget.emit(
                "refusals", _log, LogLevel.warn,
                "Refused remote forward for {user}: port {port}: {why}",
                user=user, port=port, why=why,
            )

        def connectionLost(self, reason: object) -> None:
            self.budget.flush()  # the count of what was held back, if anything

Lines a connection causes once (login, close) need no budget; put every line a peer can
repeat at will through one.  All levels share one bucket: a line costs a token even when the
process's log level hides it, so send only lines the peer can repeat, at any level, through it.

The budget never interpolates anything itself: what reaches the log is the caller's format and
fields, and the summary's counts, names of kinds (the caller's C{what}) and the peer.
"""

from __future__ import annotations

from dataclasses import dataclass

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger, LogLevel

__all__ = ["LogBudget"]

_log = Logger()

_ORDER = [LogLevel.debug, LogLevel.info, LogLevel.warn, LogLevel.error, LogLevel.critical]


@dataclass
class _Held:
    """Lines of one kind held back: how many, at which (highest) level, for which logger."""

    count: int
    level: LogLevel
    logger: Logger


class LogBudget:
    """
    A token bucket of log lines for one connection (see the module docstring).

    At most C{burst + elapsed / interval} lines go out through it, the summaries of held-back
    lines included, plus one summary from L{flush}.
    """

    def __init__(
        self,
        clock: IReactorTime,
        peer: str,
        burst: int = 10,
        interval: float = 5.0,
    ) -> None:
        if burst < 1 or interval <= 0:
            raise ValueError("a log budget needs burst >= 1 and interval > 0")
        self.clock = clock
        self.peer = peer
        self.burst = burst
        self.interval = interval
        self._tokens = float(burst)
        self._updated = clock.seconds()
        self._held: dict[str, _Held] = {}
        self._held_since = 0.0
        self._report_call: IDelayedCall | None = None

    @property
    def held(self) -> int:
        """How many lines are held back now, waiting for a summary."""
        return sum(h.count for h in self._held.values())

    def allow(self, what: str, level: LogLevel = LogLevel.info, logger: Logger = _log) -> bool:
        """
        Whether a line of kind C{what} (a short plural noun, e.g. C{"refusals"}) may be
        logged now.  If not, it is counted, and the summary goes to C{logger} at the highest
        C{level} held back.
        """
        self._refill()
        if self._tokens >= 1 and not self._held:
            self._tokens -= 1
            return True
        self._hold(what, level, logger)
        return False

    def emit(
        self, what: str, logger: Logger, level: LogLevel, format: str, /, **fields: object
    ) -> bool:
        """C{logger.emit(level, format, **fields)} if the budget allows; whether it did."""
        if not self.allow(what, level, logger):
            return False
        logger.emit(level, format, **fields)
        return True

    def flush(self) -> None:
        """Log the summary of lines held back now (when the connection ends)."""
        if self._report_call is not None and self._report_call.active():
            self._report_call.cancel()
        self._report_call = None
        self._summarise()

    def _refill(self) -> None:
        now = self.clock.seconds()
        elapsed = max(0.0, now - self._updated)
        self._updated = now
        self._tokens = min(float(self.burst), self._tokens + elapsed / self.interval)

    def _hold(self, what: str, level: LogLevel, logger: Logger) -> None:
        if not self._held:
            self._held_since = self.clock.seconds()
        held = self._held.get(what)
        if held is None:
            self._held[what] = _Held(1, level, logger)
        else:
            held.count += 1
            if _ORDER.index(level) > _ORDER.index(held.level):
                held.level = level
        if self._report_call is None:
            # The summary waits for a token, as any line does: it is written when one is due.
            wait = max(0.0, (1 - self._tokens) * self.interval)
            self._report_call = self.clock.callLater(wait, self._report)

    def _report(self) -> None:
        self._report_call = None
        self._refill()
        self._tokens = max(0.0, self._tokens - 1)
        self._summarise()

    def _summarise(self) -> None:
        if not self._held:
            return
        held, self._held = self._held, {}
        first = next(iter(held.values()))
        level = max((h.level for h in held.values()), key=_ORDER.index)
        first.logger.emit(
            level,
            "... and {summary} from {peer} in the last {seconds:.0f} s",
            summary=", ".join(f"{h.count} more {what}" for what, h in held.items()),
            suppressed={what: h.count for what, h in held.items()},
            peer=self.peer,
            seconds=max(1.0, self.clock.seconds() - self._held_since),
        )
