"""
sshd's C{MaxStartups} and C{PerSourceMaxStartups}: how many connections may be waiting to log in.

A connection is I{unauthenticated} from the moment it is accepted until its user logs in or it
ends.  With C{MaxStartups start:rate:full}, once C{start} connections are unauthenticated each
new one is dropped with probability C{rate}%, rising linearly to 100% at C{full} (sshd.c
C{should_drop_connection}, integer arithmetic included).  C{PerSourceMaxStartups N} drops a new
connection when its source address already has C{N} unauthenticated ones.  sshd groups sources
by C{PerSourceNetBlockSize} (default /32 and /128); here a source is always the full address.

Each dropped connection is sent sshd 9.2's line, C{Exceeded MaxStartups}, and closed.  Drops are
logged at most once per second, as a count, so a flood of connections cannot flood the log.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from twisted_rfwd.errors import ConfigError

__all__ = [
    "DROP_MESSAGE",
    "MaxStartups",
    "Startup",
    "StartupGate",
    "ThrottledLog",
    "drop_percent",
    "parse_per_source_max_startups",
]

# What sshd 9.2 writes to a connection it drops (9.8 and later: "Not allowed at this time").
DROP_MESSAGE = b"Exceeded MaxStartups\r\n"

_log = Logger()


@dataclass(frozen=True)
class MaxStartups:
    """C{start:rate:full}, validated as sshd's servconf.c validates it."""

    start: int = 10
    rate: int = 30
    full: int = 100

    def __post_init__(self) -> None:
        problem = _max_startups_problem(self.start, self.rate, self.full)
        if problem:
            raise ConfigError(f"MaxStartups {self}: {problem}")

    def __str__(self) -> str:
        return f"{self.start}:{self.rate}:{self.full}"

    @classmethod
    def parse(cls, text: str, what: str = "MaxStartups") -> MaxStartups:
        """C{start:rate:full}, or a single C{N} meaning C{start} = C{full} = N (as sshd)."""
        fields = text.strip().split(":")
        if len(fields) not in (1, 3) or not all(f.isascii() and f.isdigit() for f in fields):
            raise ConfigError(f"{what}: '{text}' is not start:rate:full or a number")
        numbers = [int(f) for f in fields]
        start, rate, full = (numbers[0], 30, numbers[0]) if len(numbers) == 1 else numbers
        problem = _max_startups_problem(start, rate, full)
        if problem:
            raise ConfigError(f"{what}: '{text}': {problem}")
        return cls(start, rate, full)


def _max_startups_problem(start: int, rate: int, full: int) -> str | None:
    """What servconf.c would refuse in C{start:rate:full}, or None."""
    if start <= 0 or full <= 0:
        return "start and full must be positive"
    if start > full:
        return "start is above full"
    if not 1 <= rate <= 100:
        return "rate must be 1 to 100"
    return None


def parse_per_source_max_startups(text: str, what: str = "PerSourceMaxStartups") -> int | None:
    """C{PerSourceMaxStartups}: a positive number, or C{none} for no per-source limit."""
    if text.strip().lower() == "none":
        return None
    if not (text.isascii() and text.isdigit()) or int(text) <= 0:
        raise ConfigError(f"{what}: '{text}' is not a positive number or 'none'")
    return int(text)


def drop_percent(startups: int, limits: MaxStartups) -> int:
    """
    The chance, in percent, that a new connection is dropped while C{startups} connections are
    unauthenticated: sshd's integer staircase from C{rate} at C{start} to 100 at C{full}.
    """
    if startups < limits.start:
        return 0
    if startups >= limits.full or limits.rate == 100:
        return 100
    rise = (100 - limits.rate) * (startups - limits.start) // (limits.full - limits.start)
    return rise + limits.rate


class Startup:
    """One admitted, not yet authenticated connection; L{release} it once, at login or end."""

    def __init__(self, gate: StartupGate, source: str) -> None:
        self._gate: StartupGate | None = gate
        self.source = source

    def release(self) -> None:
        """No longer unauthenticated (logged in, or gone); a second call does nothing."""
        gate, self._gate = self._gate, None
        if gate is not None:
            gate._released(self.source)


class ThrottledLog:
    """
    Counts repeated events and logs at most one line per C{interval} seconds: the first event at
    once, later ones as a count carried into the next line.  Counts not yet logged go out with the
    next event (or L{flush}) once the interval has passed.
    """

    def __init__(
        self,
        clock: IReactorTime,
        what: str,
        interval: float = 1.0,
        log: Logger = _log,
    ) -> None:
        self._clock = clock
        self._what = what
        self._interval = interval
        self._log = log
        self._counts: dict[str, int] = {}
        self._last_line: float | None = None
        self._since = 0.0
        self.lines = 0

    def event(self, reason: str, detail: str = "") -> None:
        """Count one event; log if the last line is at least C{interval} old."""
        if not self._counts:
            self._since = self._clock.seconds()
        self._counts[reason] = self._counts.get(reason, 0) + 1
        self._maybe_log(detail)

    def flush(self) -> None:
        """Log the counts not yet logged, if the interval allows a line now."""
        if self._counts:
            self._maybe_log("")

    def _maybe_log(self, detail: str) -> None:
        now = self._clock.seconds()
        if self._last_line is not None and now - self._last_line < self._interval:
            return
        counts, self._counts = self._counts, {}
        total = sum(counts.values())
        self._log.warn(
            "{what}: {total} in {seconds:.1f} s ({reasons}){detail}",
            what=self._what,
            total=total,
            seconds=now - self._since,
            reasons=", ".join(f"{reason}: {n}" for reason, n in sorted(counts.items())),
            detail=f"; latest {detail}" if detail else "",
        )
        self._last_line = now
        self.lines += 1


class StartupGate:
    """
    Admits or drops new connections by the number of unauthenticated ones, in total and per
    source address.  C{random_below(n)} returns an integer in C{[0, n)}: injectable for tests.
    """

    def __init__(
        self,
        clock: IReactorTime,
        max_startups: MaxStartups | tuple[int, int, int] = (10, 30, 100),
        per_source: int | None = None,
        random_below: Callable[[int], int] | None = None,
    ) -> None:
        self.limits = (
            max_startups if isinstance(max_startups, MaxStartups) else MaxStartups(*max_startups)
        )
        self.per_source = per_source
        self._random_below = random_below if random_below is not None else secrets.randbelow
        self.unauthenticated = 0
        self._by_source: dict[str, int] = {}
        self.drops = ThrottledLog(clock, "Dropped new connections")

    def from_source(self, source: str) -> int:
        """Unauthenticated connections from C{source} now."""
        return self._by_source.get(source, 0)

    def admit(self, source: str) -> Startup | None:
        """A connection from C{source} arrived: a L{Startup} to release later, or None: drop."""
        reason = self._refusal(source)
        if reason is not None:
            self.drops.event(reason, f"from {source}, {self.unauthenticated} unauthenticated")
            return None
        self.drops.flush()
        self.unauthenticated += 1
        self._by_source[source] = self._by_source.get(source, 0) + 1
        return Startup(self, source)

    def _refusal(self, source: str) -> str | None:
        # sshd's order: the random early drop first, then the per-source count.
        percent = drop_percent(self.unauthenticated, self.limits)
        if percent and (percent == 100 or self._random_below(100) < percent):
            return f"past MaxStartups {self.limits}"
        if self.per_source is not None and self.from_source(source) >= self.per_source:
            return f"past PerSourceMaxStartups {self.per_source}"
        return None

    def _released(self, source: str) -> None:
        self.unauthenticated -= 1
        left = self._by_source[source] - 1
        if left:
            self._by_source[source] = left
        else:
            del self._by_source[source]
