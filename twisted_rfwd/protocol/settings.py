"""
The settings both ends share, with their defaults: the transport's algorithms and re-key
limits, the channels' window and maximum packet, and how long a stop waits for forwarded
connections.  L{twisted_rfwd.server.config.ServerConfig} and
L{twisted_rfwd.client.config.ClientConfig} add their own on top.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from twisted_rfwd.protocol.algorithms import CIPHERS, KEY_EXCHANGES, MACS
from twisted_rfwd.protocol.units import DEFAULT_REKEY_BYTES, DEFAULT_REKEY_SECONDS

__all__ = ["DEFAULT_MAX_PACKET", "DEFAULT_WINDOW", "SharedSettings"]

# Each channel's receive window and the largest CHANNEL_DATA we accept (OpenSSH's 32 KiB).
DEFAULT_WINDOW = 2 * 1024 * 1024
DEFAULT_MAX_PACKET = 32 * 1024


@dataclass(kw_only=True)
class SharedSettings:
    """What either end can be told about its SSH connections (keyword arguments only)."""

    # RekeyLimit: re-exchange keys after this many bytes, or this long (None: never).
    rekey_bytes: int | None = DEFAULT_REKEY_BYTES
    rekey_seconds: float | None = DEFAULT_REKEY_SECONDS
    # On stop, how long forwarded connections may finish.
    drain_time: float = 10.0
    window_size: int = DEFAULT_WINDOW
    max_packet: int = DEFAULT_MAX_PACKET
    ciphers: list[bytes] = field(default_factory=lambda: list(CIPHERS))
    macs: list[bytes] = field(default_factory=lambda: list(MACS))
    kex_algorithms: list[bytes] = field(default_factory=lambda: list(KEY_EXCHANGES))
