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

# The writer is shared with the server's status file.
from twisted_rfwd.ssh.status_file import StatusFile, timestamp

__all__ = ["StatusFile", "timestamp"]
