"""
User authentication payloads (RFC 4252) that both ends build: one definition, so the data a
client signs and the data a server verifies cannot drift apart.
"""

from __future__ import annotations

from twisted_rfwd.protocol.wire import pack_string

__all__ = ["MSG_USERAUTH_REQUEST", "publickey_signed_data"]

MSG_USERAUTH_REQUEST = 50


def publickey_signed_data(
    session_id: bytes, user: bytes, service: bytes, algorithm: bytes, blob: bytes
) -> bytes:
    """What a C{publickey} signature covers (RFC 4252 section 7)."""
    return (
        pack_string(session_id)
        + bytes((MSG_USERAUTH_REQUEST,))
        + pack_string(user)
        + pack_string(service)
        + pack_string(b"publickey")
        + b"\x01"
        + pack_string(algorithm)
        + pack_string(blob)
    )
