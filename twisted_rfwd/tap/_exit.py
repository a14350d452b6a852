"""
A non-zero exit status for a twistd plugin.

twistd always exits 0 once its reactor stops; a tunnel that could not be set up must exit
non-zero (as ssh exits 255), so the status is set here and applied when the process ends.
"""

from __future__ import annotations

import atexit
import os
import sys
from typing import Any

from twisted.logger import Logger

_log = Logger()

SSH_FAILURE = 255


class ExitStatus:
    """Stops the reactor and makes the process exit with C{code}, logging why."""

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self.code = 0
        reactor.addSystemEventTrigger("during", "shutdown", self._stopped_cleanly)

    def _stopped_cleanly(self) -> None:
        # twistd re-raises the signal that stopped it (SIGTERM, SIGINT) once the reactor is
        # done, so the process would "die" of it.  Our services drain and close on stop: a
        # stop by signal is an orderly exit, status 0.  (twistd reads this reactor attribute
        # after run() returns; nothing public says otherwise.)
        if hasattr(self.reactor, "_exitSignal"):
            self.reactor._exitSignal = None

    def fail(self, message: str, code: int = SSH_FAILURE) -> None:
        _log.critical("{reason}", reason=message)
        if self.code:
            return
        self.code = code
        atexit.register(_exit_now, code)
        if self.reactor.running:
            self.reactor.stop()
        else:
            self.reactor.callWhenRunning(self.reactor.stop)


def _exit_now(code: int) -> None:
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)
