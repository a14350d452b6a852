"""
The load generator: plain blocking sockets in the benchmark process, 1 MiB sends and receives,
every byte checked against the pattern stream of L{harness.application}.
"""

from __future__ import annotations

import resource
import socket
import threading
import time

from harness.application import (
    CHUNK,
    FRAME,
    MODE_ECHO,
    MODE_STREAM,
    MODE_VERIFY,
    STREAM_MILLISECONDS,
    STREAM_TOTAL,
    VERIFY_REPLY,
    pattern_stream,
)
from harness.ports import LOOPBACK

IO_TIMEOUT = 60.0  # seconds any single socket operation may take before the test is an error
ECHO_LEN = 64


class VerifyError(Exception):
    """Data came back wrong: the result is FAILED, never a number."""


def raise_nofile_limit() -> int:
    """Soft RLIMIT_NOFILE up to the hard limit (a descriptor per connection); children too."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def echo_message(i: int) -> bytes:
    """The 64 bytes connection (or round) C{i} sends to be echoed: different for each C{i}."""
    return bytes(pattern_stream().window(i * ECHO_LEN, ECHO_LEN))


def recv_exact(sock: socket.socket, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise VerifyError(f"connection closed after {len(data)} of {n} bytes")
        data += chunk
    return bytes(data)


def connect(port: int, timeout: float = IO_TIMEOUT) -> socket.socket:
    return socket.create_connection((LOOPBACK, port), timeout)


def first_echo(sock: socket.socket, i: int) -> bool:
    """Ask a new connection for echoes with message C{i}; whether it came back right."""
    request = MODE_ECHO + echo_message(i)
    sock.sendall(request)
    return recv_exact(sock, len(request)) == request


def upload(
    port: int, duration: float, barrier: threading.Barrier | None = None
) -> tuple[int, float, float]:
    """Stream the pattern for C{duration} s; the app server checks it. (bytes, start, end)."""
    stream = pattern_stream()
    with connect(port) as s:
        if barrier is not None:
            barrier.wait()
        start = time.monotonic()
        deadline = start + duration
        s.sendall(MODE_VERIFY)
        sent = 0
        while time.monotonic() < deadline:
            s.sendall(stream.window(sent, CHUNK))
            sent += CHUNK
        s.shutdown(socket.SHUT_WR)
        received, ok, bad_at = VERIFY_REPLY.unpack(recv_exact(s, VERIFY_REPLY.size))
        end = time.monotonic()
    if received != sent:
        raise VerifyError(f"app server received {received} bytes of {sent} sent")
    if not ok:
        raise VerifyError(f"app server found wrong data in the bytes received at {bad_at}")
    return sent, start, end


def download(port: int, duration: float) -> tuple[int, float, float]:
    """Have the app server stream frames for C{duration} s; check every byte here."""
    stream = pattern_stream()
    buffer = memoryview(bytearray(CHUNK))
    with connect(port) as s:
        start = time.monotonic()
        s.sendall(MODE_STREAM + STREAM_MILLISECONDS.pack(round(duration * 1000)))
        offset = 0
        while True:
            (length,) = FRAME.unpack(recv_exact(s, FRAME.size))
            if length == 0:
                break
            if length > CHUNK:
                raise VerifyError(f"frame of {length} bytes at byte {offset}")
            got = 0
            while got < length:
                n = s.recv_into(buffer[got:], length - got)
                if n == 0:
                    raise VerifyError(f"connection closed inside a frame at byte {offset + got}")
                got += n
            if not stream.matches(offset, buffer[:length]):
                raise VerifyError(f"wrong data in the frame starting at byte {offset}")
            offset += length
        (total,) = STREAM_TOTAL.unpack(recv_exact(s, STREAM_TOTAL.size))
        end = time.monotonic()
    if total != offset:
        raise VerifyError(f"received {offset} bytes, app server sent {total}")
    return offset, start, end
