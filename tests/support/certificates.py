"""
OpenSSH certificates made in Python for the tests (the process tests use ssh-keygen).
"""

from __future__ import annotations

import os
import struct

from twisted.conch.ssh.keys import Key

from twisted_rfwd.protocol.certificates import (
    HOST_CERT,
)

# A fixed "now" for validity windows (seconds since the epoch).
NOW = 1_700_000_000


def string(data: bytes) -> bytes:
    return struct.pack(">L", len(data)) + data


def make_certificate(
    key: Key,
    ca: Key,
    *,
    kind: int = HOST_CERT,
    principals: tuple[str, ...] = ("example.com",),
    valid: tuple[int, int] = (NOW - 60, NOW + 3600),
    critical: bytes = b"",
) -> bytes:
    """An ed25519 certificate of C{key} signed by C{ca}, laid out as PROTOCOL.certkeys says."""
    public: bytes = key.public().blob()
    body = (
        string(b"ssh-ed25519-cert-v01@openssh.com")
        + string(os.urandom(32))
        + public[len(string(b"ssh-ed25519")) :]
        + struct.pack(">QL", 7, kind)
        + string(b"host-id")
        + string(b"".join(string(p.encode()) for p in principals))
        + struct.pack(">QQ", *valid)
        + string(critical)
        + string(b"")
        + string(b"")
        + string(ca.public().blob())
    )
    signature: bytes = ca.sign(body)
    return body + string(signature)
