"""
OpenSSH's units in option values: sizes (C{256K}, C{1G}) and times (C{90}, C{1h30m}), and the
C{RekeyLimit} pair built from them.  Pure parsing; errors are L{ConfigError}s naming the value.
"""

from __future__ import annotations

import math
import re

from twisted_rfwd.errors import ConfigError

__all__ = [
    "DEFAULT_REKEY_BYTES",
    "DEFAULT_REKEY_SECONDS",
    "parse_duration",
    "parse_rekey_limit",
    "parse_seconds",
]

# RFC 4253 section 9: re-exchange keys after a gigabyte or an hour, whichever comes first.
DEFAULT_REKEY_BYTES = 1 << 30
DEFAULT_REKEY_SECONDS = 3600.0

_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
_TIME_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_size(text: str, what: str) -> int:
    """C{1024}, C{256K}, C{16M}, C{1G}."""
    match = re.fullmatch(r"([0-9]+)([kKmMgG]?)", text.strip())
    if not match:
        raise ConfigError(f"{what}: '{text}' is not a size like 512K, 64M or 1G")
    return int(match.group(1)) * _SIZE_UNITS[match.group(2).lower()]


def parse_duration(text: str, what: str) -> float:
    """OpenSSH time format: C{90}, C{30s}, C{1h30m}, C{2d}."""
    cleaned = text.strip().lower()
    parts = re.findall(r"([0-9]+)([smhdw]?)", cleaned)
    if not parts or "".join(n + u for n, u in parts) != cleaned:
        raise ConfigError(f"{what}: '{text}' is not a time like 90, 30s or 1h30m")
    return float(sum(int(n) * _TIME_UNITS[u] for n, u in parts))


def parse_rekey_limit(text: str) -> tuple[int | None, float | None]:
    """
    C{RekeyLimit}: a size (or C{default}, or C{none}) and an optional time (or C{none}).
    C{None} means "no limit"; C{default} means rfwd's default (1G, and 1h for the time).
    """
    fields = text.split()
    if not 1 <= len(fields) <= 2:
        raise ConfigError(f"RekeyLimit: expected 'size [time]', not '{text}'")
    size: int | None
    if fields[0].lower() == "default":
        size = DEFAULT_REKEY_BYTES
    elif fields[0].lower() == "none":
        size = None
    else:
        size = parse_size(fields[0], "RekeyLimit")
        if size < 16:
            raise ConfigError("RekeyLimit: the size must be at least 16 bytes")
    seconds: float | None = DEFAULT_REKEY_SECONDS
    if len(fields) == 2:
        seconds = None if fields[1].lower() == "none" else parse_duration(fields[1], "RekeyLimit")
    return size, seconds


def parse_seconds(text: str, what: str) -> float:
    """A time: seconds as a number (C{2.5}), or OpenSSH's format (C{90}, C{30s}, C{1h30m})."""
    try:
        value = float(text)
    except ValueError:
        return parse_duration(text, what)
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"{what} must be a time of zero seconds or more, not '{text}'")
    return value
