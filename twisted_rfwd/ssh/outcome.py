"""A one-shot result with any number of waiters: the package's small replacement for keeping
a list of Deferreds by hand."""

from __future__ import annotations

from typing import Generic, TypeVar

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

__all__ = ["Outcome"]

_T = TypeVar("_T")


class Outcome(Generic[_T]):
    """A result that arrives once and is handed to any number of waiters, before or after."""

    __slots__ = ("_result", "_waiters", "settled")

    def __init__(self) -> None:
        self.settled = False
        self._result: _T | Failure | None = None
        self._waiters: list[Deferred[_T]] = []

    def settle(self, result: _T | Failure) -> None:
        if self.settled:
            return
        self.settled = True
        self._result = result
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            self._fire(d)

    def wait(self) -> Deferred[_T]:
        d: Deferred[_T] = Deferred()
        if self.settled:
            self._fire(d)
        else:
            self._waiters.append(d)
        return d

    def _fire(self, d: Deferred[_T]) -> None:
        result = self._result
        if isinstance(result, Failure):
            d.errback(result)
        else:
            d.callback(result)  # type: ignore[arg-type]
