"""What the process logs while a test runs, captured from Twisted's global log publisher."""

from __future__ import annotations

from twisted.logger import ILogObserver, LogEvent, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

__all__ = ["CapturedLog"]


@implementer(ILogObserver)
class CapturedLog:
    """Every log event from now until the test ends, and each as the line it would print."""

    def __init__(self, test: SynchronousTestCase) -> None:
        self.events: list[LogEvent] = []
        self.lines: list[str] = []
        globalLogPublisher.addObserver(self)
        test.addCleanup(globalLogPublisher.removeObserver, self)

    def __call__(self, event: LogEvent) -> None:
        self.events.append(event)
        # Formatted now: a legacy observer later in the chain may blank fields in place.
        self.lines.append(formatEvent(event) or "")

    def text(self) -> str:
        """All the lines, one per line."""
        return "\n".join(self.lines)

    def matching(self, text: str) -> list[str]:
        """The lines that contain C{text}."""
        return [line for line in self.lines if text in line]

    def failures(self) -> list[LogEvent]:
        """The events that carry a traceback (C{log.failure}): bugs, not peers' mistakes."""
        return [e for e in self.events if "log_failure" in e]
