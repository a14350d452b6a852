"""
A JSON status file replaced atomically, for scripts and operators to read while rfwd runs
(the client's state, the server's connections and forwards).
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import datetime, timezone
from typing import Any

from twisted.logger import Logger

__all__ = ["StatusFile", "timestamp"]

_log = Logger()


class StatusFile:
    """
    Writes JSON snapshots to C{path}, each replacing the last atomically (a new file renamed
    over it), so a reader never sees half of one; write errors are logged once, never fatal.
    """

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
