"""
Tuning glibc's allocator for bulk relaying.

With glibc's defaults, blocks of 128 KiB and more (a 256 KiB socket read, a sealed packet, the
buffer Twisted joins before each send) come from C{mmap} and go back with C{munmap}: page faults
and system calls on every one.  Raising the mmap and trim thresholds keeps them in the heap; this
measured about a third less CPU per byte in both rfwd processes, with the same peak RSS.

Process-wide, so the twistd plugins call it at start; an embedding program may call it too.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

__all__ = ["tune_allocator"]

# mallopt() parameters from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD = 2 * 1024 * 1024
TRIM_THRESHOLD = 8 * 1024 * 1024


def tune_allocator() -> bool:
    """Raise glibc's mmap and trim thresholds; C{False} where that is not possible."""
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False  # not glibc (musl has no mallopt)
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
