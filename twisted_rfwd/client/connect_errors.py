"""The operating system's words for a failed connect, as ssh prints them."""

from __future__ import annotations

import os

from twisted.internet.error import ConnectError, DNSLookupError, TimeoutError
from twisted.python.failure import Failure

__all__ = ["connect_error_text"]


def connect_error_text(failure: Failure) -> str:
    """The operating system's words for a failed connect ("Connection refused")."""
    error = failure.value
    if isinstance(error, TimeoutError):
        return "Connection timed out"
    if isinstance(error, DNSLookupError):
        return "Name or service not known"
    if isinstance(error, ConnectError) and isinstance(error.osError, int):
        return os.strerror(error.osError)
    return failure.getErrorMessage()
