"""
The operating system's words for a failed connect, and ssh's sentences around them.

ssh says C{connect to host H port P: Connection refused} for a connect that failed and
C{Could not resolve hostname H: Name or service not known} for a name with no address; the
client says the same, in its log, in the status file and in the exit message.
"""

from __future__ import annotations

import os

from twisted.internet import defer
from twisted.internet.error import ConnectError, DNSLookupError, TimeoutError
from twisted.python.failure import Failure

from twisted_rfwd.errors import ConnectionClosed

__all__ = ["connect_error_text", "connect_failure"]


def connect_error_text(failure: Failure) -> str:
    """The operating system's words for a failed connect ("Connection refused")."""
    error = failure.value
    if isinstance(error, (TimeoutError, defer.TimeoutError)):
        return "Connection timed out"
    if isinstance(error, DNSLookupError):
        return "Name or service not known"
    if isinstance(error, ConnectError) and isinstance(error.osError, int):
        return os.strerror(error.osError)
    return failure.getErrorMessage()


def connect_failure(host: str, port: int, failure: Failure) -> ConnectionClosed:
    """Why the TCP connection to the server C{host}, C{port} could not be made, as ssh says it."""
    if failure.check(DNSLookupError):
        return ConnectionClosed(f"Could not resolve hostname {host}: {connect_error_text(failure)}")
    return ConnectionClosed(f"connect to host {host} port {port}: {connect_error_text(failure)}")
