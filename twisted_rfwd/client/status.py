"""
A machine-readable status for scripts and monitoring: one JSON file, replaced atomically at every
change, so a reader never sees half of it.

Shape::

    {"state": "connected",     # connecting, connected, disconnected, stopped or failed
     "server": "hostb.example:22", "user": "alice", "pid": 1234,
     "since": "2026-11-24T08:00:00Z",       # when this state began
     "connections": 3,                       # successful connections so far
     "last_error": null,                     # why the last connection ended or failed
     "forwards": [{"spec": "0:localhost:8000", "state": "listening", "port": 40123,
                   "last_error": null}]}     # requested | listening | refused

With port 0 forwards, C{port} is the port the server chose: read it from here.  A cancelled
forward is no longer listed.  C{last_error} says, in ssh's words, why the last attempt failed
(C{connect to host H port P: Connection refused}, C{Could not resolve hostname H: ...}, a host
key or login refusal, a refused forward, the server's disconnect message); a connection that
gets ready clears it.
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import datetime, timezone
from typing import Any

from twisted.logger import Logger

__all__ = ["StatusFile"]

_log = Logger()


class StatusFile:
    """Writes status snapshots to C{path}; write errors are logged, never fatal."""

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(os.path.expanduser(path))
        self._warned = False

    def write(self, snapshot: dict[str, Any]) -> None:
        directory = os.path.dirname(self.path)
        try:
            fd, temporary = tempfile.mkstemp(prefix=".rfwd-status-", dir=directory)
            try:
                with os.fdopen(fd, "w") as f:
                    json.dump(snapshot, f, indent=2, sort_keys=True)
                    f.write("\n")
                os.chmod(temporary, 0o644)
                os.replace(temporary, self.path)
            finally:
                if os.path.exists(temporary):
                    os.unlink(temporary)
        except OSError as e:
            if not self._warned:
                self._warned = True
                _log.warn(
                    "Cannot write the status file {path}: {reason}",
                    path=self.path,
                    reason=e.strerror,
                )
            return
        self._warned = False


def timestamp(seconds: float) -> str:
    """ISO 8601 in UTC, to the second."""
    moment = datetime.fromtimestamp(seconds, timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
