"""
Socket options for both kinds of TCP connection we own: the SSH connection itself and every
forwarded connection (L{twisted_rfwd.ssh.relay}).
"""

from __future__ import annotations

import contextlib
import socket

from twisted.internet.abstract import FileDescriptor
from twisted.internet.interfaces import ITCPTransport

__all__ = ["READ_SIZE", "ack_promptly", "set_tcp_nodelay"]

# Bytes read per recv() on our sockets (Twisted's default is 64 KiB): fewer, larger reads mean
# fewer reactor turns and fewer SSH packets per byte.  It is also Twisted's write high-water
# mark, which stays well below the channel windows.
READ_SIZE = 512 * 1024

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
