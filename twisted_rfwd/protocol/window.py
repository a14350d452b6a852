"""
Window accounting for one channel (RFC 4254 section 5.2), both ways, kept apart from I/O.

L{ReceiveWindow}: the peer may send as many bytes as we have granted.  We grant more only for
bytes that the local consumer has actually taken, and in batches, so a slow reader stops the
sender instead of filling our memory, and a fast one is never starved.

L{SendWindow}: we may send as many bytes as the peer granted, in packets no larger than it
announced; its C{WINDOW_ADJUST} grants more.
"""

from __future__ import annotations

from twisted_rfwd.errors import RemoteProtocolError

__all__ = ["MAX_WINDOW", "ReceiveWindow", "SendWindow"]

MAX_WINDOW = 0xFFFFFFFF
"""A window is a uint32 on the wire: credit beyond it is capped, not an error."""


class ReceiveWindow:
    """Bytes the peer may still send (C{available}) and credit owed back to it."""

    __slots__ = ("_consumed", "available", "max_packet", "size")

    def __init__(self, size: int, max_packet: int) -> None:
        self.size = size
        self.max_packet = max_packet
        self.available = size
        self._consumed = 0

    def data_received(self, length: int) -> None:
        """Charge C{length} received bytes; the peer must stay inside window and packet size."""
        if length > self.available:
            raise RemoteProtocolError(
                f"peer sent {length} bytes with only {self.available} left in the window"
            )
        if length > self.max_packet:
            raise RemoteProtocolError(
                f"peer sent a {length}-byte packet; the maximum is {self.max_packet}"
            )
        self.available -= length

    def consumed(self, length: int) -> None:
        """Record that the local consumer took C{length} bytes."""
        self._consumed += length

    def credit_due(self) -> int:
        """
        How much to grant now (0 for nothing): all consumed bytes, once the peer's remaining
        window has fallen to half or less, so adjustments are few and never leave it starved.
        """
        if self._consumed and self.available <= self.size // 2:
            credit = self._consumed
            self._consumed = 0
            self.available += credit
            return credit
        return 0


class SendWindow:
    """
    Bytes the peer still lets us send (C{available}) and the largest packet it takes
    (C{max_packet}, at least 1).
    """

    __slots__ = ("available", "max_packet")

    def __init__(self, size: int, max_packet: int) -> None:
        self.available = size
        self.max_packet = max(1, max_packet)

    def take(self, size: int, packets: int) -> int:
        """
        How many of C{size} bytes may go now, within the window and at most C{packets}
        packets, and charge them: the caller sends that many, and keeps the rest.
        """
        # Comparisons rather than min(): this runs for every read from the local stream.
        n = self.max_packet * packets
        n = size if size < n else n
        available = self.available
        n = available if available < n else n
        self.available = available - n
        return n

    def adjust(self, increment: int) -> None:
        """C{WINDOW_ADJUST} from the peer: C{increment} more bytes, capped at L{MAX_WINDOW}."""
        self.available = min(self.available + increment, MAX_WINDOW)
