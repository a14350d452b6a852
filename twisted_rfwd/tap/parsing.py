"""
Option values both plugins read the same way: times, ports, counts and algorithm lists.  One
definition each, so that C{--drain-time 1m} means the same on both ends.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from twisted_rfwd.errors import ConfigError
from twisted_rfwd.protocol.algorithms import CIPHERS, KEY_EXCHANGES, MACS, choose
from twisted_rfwd.protocol.units import parse_seconds

__all__ = [
    "ALGORITHM_OPTIONS",
    "algorithms",
    "count",
    "port",
    "positive",
    "seconds",
    "yes_no",
]

# The algorithm options: OpenSSH's name, the settings field, and the default list.
ALGORITHM_OPTIONS: tuple[tuple[str, str, Sequence[bytes]], ...] = (
    ("Ciphers", "ciphers", CIPHERS),
    ("MACs", "macs", MACS),
    ("KexAlgorithms", "kex_algorithms", KEY_EXCHANGES),
)


def seconds(text: str, what: str) -> float:
    """A time: seconds as a number (C{2.5}), or OpenSSH's format (C{90}, C{30s}, C{1h30m})."""
    return parse_seconds(text, what)


def port(text: str) -> int:
    """A TCP port, 1 to 65535."""
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= 65535:
        raise ConfigError(f"bad port '{text}'")
    return int(text)


def count(text: str, what: str) -> int:
    """A whole number, zero or more."""
    if not (text.isascii() and text.isdigit()):
        raise ConfigError(f"{what} must be a number, not '{text}'")
    return int(text)


def positive(text: str, what: str) -> int:
    """A whole number, one or more."""
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise ConfigError(f"{what} must be a positive number, not '{text}'")
    return int(text)


def algorithms(value_of: Callable[[str, str], str | None]) -> dict[str, Any]:
    """
    The settings fields for the algorithm options that were given: C{value_of(ssh_name,
    field)} says what the user wrote for one, or C{None}.
    """
    chosen: dict[str, Any] = {}
    for name, field, default in ALGORITHM_OPTIONS:
        value = value_of(name, field)
        if value is not None:
            chosen[field] = choose(name, value, default)
    return chosen


def yes_no(text: str, what: str) -> bool:
    """C{yes} or C{no}, in any case, as sshd_config reads them."""
    if text.lower() not in ("yes", "no"):
        raise ConfigError(f"{what} must be yes or no, not '{text}'")
    return text.lower() == "yes"
