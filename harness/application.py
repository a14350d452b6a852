"""
The application protocol a tunnel carries in tests and benchmarks, and the data it sends.

The first byte a client sends picks what the application server does:

  - C{E} echo: echo every byte (the C{E} included) until EOF, then shut down writing;
  - C{U} upload: read to EOF, then answer L{digest_line} (C{"<count> <sha256>\\n"}) and close;
  - C{D} download: a L{DOWNLOAD_SIZE} follows; send that many bytes of L{pattern}, then close;
  - C{H} hold: stop reading (the test resumes it), then behave as C{U};
  - C{V} verified upload: read to EOF checking every byte against the pattern stream, then answer
    L{VERIFY_REPLY} and close (no hashing: the benchmark's server keeps up with any tunnel);
  - C{S} stream: a L{STREAM_MILLISECONDS} follows; send L{FRAME}-prefixed pieces of the pattern
    stream for that long, then a 0 frame, L{STREAM_TOTAL} and close.

The tests' Twisted server (C{tests/support/apps.py}) speaks E, U, D and H; the benchmark's
selectors server (C{benchmarks/appserver.py}) speaks E, V and S.
"""

from __future__ import annotations

import hashlib
import struct
from functools import cache

MODE_ECHO = b"E"
MODE_UPLOAD = b"U"
MODE_DOWNLOAD = b"D"
MODE_HOLD = b"H"
MODE_VERIFY = b"V"
MODE_STREAM = b"S"

DOWNLOAD_SIZE = struct.Struct(">Q")  # bytes a download asks for
VERIFY_REPLY = struct.Struct(">QBq")  # bytes received, 1 if all matched, offset of first mismatch
STREAM_MILLISECONDS = struct.Struct(">I")  # how long a stream lasts
FRAME = struct.Struct(">I")  # a stream frame's length; a 0 frame ends, followed by STREAM_TOTAL
STREAM_TOTAL = struct.Struct(">Q")  # bytes of the pattern the server streamed

BLOCK_LEN = (4 << 20) + 13  # odd length: shifted, repeated or dropped data never lines up again
CHUNK = 1 << 20  # the longest window of the stream, and a stream frame's size


class PatternStream:
    """An endless byte stream: one pseudo-random block, repeated. Windows are zero-copy."""

    def __init__(self) -> None:
        block = hashlib.shake_256(b"twisted-rfwd benchmark").digest(BLOCK_LEN)
        self._data = block + block[:CHUNK]
        self._view = memoryview(self._data)

    def window(self, offset: int, length: int) -> memoryview:
        """The stream's bytes [offset, offset + length), length <= CHUNK."""
        start = offset % BLOCK_LEN
        return self._view[start : start + length]

    def matches(self, offset: int, data: memoryview) -> bool:
        """Whether C{data} (at most CHUNK bytes) is the stream at C{offset}."""
        return self._data.startswith(data, offset % BLOCK_LEN)


@cache
def pattern_stream() -> PatternStream:
    """The one pattern stream (made once: its block takes a few milliseconds)."""
    return PatternStream()


def pattern(size: int, seed: int = 0) -> bytes:
    """C{size} bytes of the pattern stream; different seeds start at different offsets."""
    stream = pattern_stream()
    start = seed * 7919
    return b"".join(
        stream.window(start + offset, min(CHUNK, size - offset)) for offset in range(0, size, CHUNK)
    )


def digest_reply(count: int, sha256_hex: str) -> bytes:
    """The answer to an upload: how many bytes came, and their SHA-256."""
    return f"{count} {sha256_hex}\n".encode()


def digest_line(data: bytes) -> bytes:
    """The answer an upload of C{data} gets."""
    return digest_reply(len(data), hashlib.sha256(data).hexdigest())
