"""
Socket options for both kinds of TCP connection we own: the SSH connection itself and every
forwarded connection (L{twisted_rfwd.ssh.relay}).
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable

from twisted.internet import tcp, unix
from twisted.internet.abstract import FileDescriptor
from twisted.internet.interfaces import ITCPTransport

__all__ = ["READ_SIZE", "WriteBatch", "ack_promptly", "set_tcp_nodelay", "write_now"]

# Bytes read per recv() on our sockets (Twisted's default is 64 KiB): fewer, larger reads mean
# fewer reactor turns and fewer SSH packets per byte.  It is also Twisted's write high-water
# mark, which stays well below the channel windows.
READ_SIZE = 512 * 1024

# The transports whose buffer write_now may look into: Twisted's own stream sockets, exactly
# (a subclass, TLS say, may change what write does).
_DIRECT_TYPES = frozenset({tcp.Server, tcp.Client, unix.Server, unix.Client})

# Linux only: acknowledge received segments at once rather than after a delay.
_TCP_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)


def set_tcp_nodelay(transport: object) -> None:
    """Turn Nagle off where the transport is TCP, and read in large chunks."""
    tcp = ITCPTransport(transport, None)
    if tcp is not None:
        tcp.setTcpNoDelay(True)
    if isinstance(transport, FileDescriptor):
        transport.bufferSize = READ_SIZE
        # Twisted sends at most 128 KiB per send(); more per call means fewer syscalls and
        # fewer re-joins of a partly sent buffer.
        transport.SEND_LIMIT = 4 * READ_SIZE


def ack_promptly(transport: object) -> None:
    """
    Ask the kernel to acknowledge what arrives on C{transport}'s socket at once (Linux's
    C{TCP_QUICKACK}); nothing where the option or a real TCP socket is missing.  The kernel
    leaves quick-ack mode by itself, so a caller that needs it for a while repeats it per read.
    """
    # Twisted's C{ISystemHandle} method, looked up by name: not every transport that has it
    # declares the interface (in-memory test transports are given one).
    get_handle = getattr(transport, "getHandle", None)
    if _TCP_QUICKACK is None or get_handle is None:
        return
    with contextlib.suppress(OSError, AttributeError):  # not a TCP socket
        get_handle().setsockopt(socket.IPPROTO_TCP, _TCP_QUICKACK, 1)


def write_now(transport: object, data: bytes | memoryview) -> None:
    """
    Write C{data}, with one send() at once when nothing is queued ahead of it.  C{data} may be
    a view (of a packet just decrypted, of a reused buffer): it is copied only if it has to
    wait.

    Twisted queues every write until the reactor's next turn: two epoll_ctl calls, a poll
    event and a turn per write.  A tunnel's short connections write a few small messages
    each, so that machinery is most of what they cost.  What the socket does not take, and
    anything written while older bytes wait, goes through Twisted's own write.
    """
    if (
        type(transport) in _DIRECT_TYPES
        and not transport._tempDataLen  # type: ignore[attr-defined]
        and transport.offset == len(transport.dataBuffer)  # type: ignore[attr-defined]
        and transport.connected  # type: ignore[attr-defined]
        and not transport.disconnecting  # type: ignore[attr-defined]
        and not transport._writeDisconnecting  # type: ignore[attr-defined]
    ):
        try:
            sent = transport.socket.send(data)  # type: ignore[attr-defined]
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            sent = 0  # Twisted's write meets the same error and reports it as connection lost
        if sent == len(data):
            return
        data = data[sent:]
    transport.write(data if type(data) is bytes else bytes(data))  # type: ignore[attr-defined]


class WriteBatch:
    """
    Holds writes while open (it nests), and hands them, joined, to C{write} when the outermost
    batch ends: what one event sends leaves in one send().
    """

    __slots__ = ("_depth", "_held", "_write")

    def __init__(self, write: Callable[[bytes], None]) -> None:
        self._write = write
        self._depth = 0
        self._held: list[bytes] | None = None

    def __enter__(self) -> None:
        if not self._depth:
            self._held = []
        self._depth += 1

    def __exit__(self, *exc_info: object) -> None:
        self._depth -= 1
        if not self._depth:
            self.flush()
            self._held = None

    def hold(self, data: bytes | memoryview) -> bool:
        """Keep C{data} (a view is copied) if a batch is open; whether it was kept."""
        held = self._held
        if held is None:
            return False
        held.append(data if type(data) is bytes else bytes(data))
        return True

    def flush(self) -> None:
        """Write what is held now (before a disconnect, say); the batch stays open."""
        held = self._held
        if held:
            self._held = []
            self._write(held[0] if len(held) == 1 else b"".join(held))
