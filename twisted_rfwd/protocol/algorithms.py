"""
The algorithms rfwd offers, in preference order, and OpenSSH's syntax for changing a list
(C{Ciphers}, C{MACs}, C{KexAlgorithms}): a comma-separated list replaces the default; a leading
C{+} appends to it, C{-} removes from it, C{^} puts the named ones first.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence

from twisted_rfwd.errors import ConfigError
from twisted_rfwd.protocol.kex import MLKEM768X25519_SHA256, mlkem_available

__all__ = [
    "CIPHERS",
    "KEY_EXCHANGES",
    "MACS",
    "PUBLIC_KEY_ALGORITHMS",
    "choose",
]

# OpenSSH 10's order: the post-quantum hybrid first (our own implementation, see
# L{twisted_rfwd.protocol.kex}; offered when this cryptography has ML-KEM), then curve25519.
# No sntrup761x25519-sha512: neither cryptography nor any other maintained library we depend on
# has Streamlined NTRU Prime.  Conch does the others (the SSH layer checks so when it starts:
# see L{twisted_rfwd.ssh.transport}).
KEY_EXCHANGES: list[bytes] = [
    *([MLKEM768X25519_SHA256] if mlkem_available() else []),
    b"curve25519-sha256",
    b"curve25519-sha256@libssh.org",
    b"ecdh-sha2-nistp256",
    b"ecdh-sha2-nistp384",
    b"ecdh-sha2-nistp521",
]
# AES-GCM first: with AES-NI it costs next to nothing, so it is the fastest choice for both ends.
CIPHERS: list[bytes] = [
    b"aes128-gcm@openssh.com",
    b"aes256-gcm@openssh.com",
    b"chacha20-poly1305@openssh.com",
    b"aes128-ctr",
    b"aes192-ctr",
    b"aes256-ctr",
]
MACS: list[bytes] = [
    b"hmac-sha2-256-etm@openssh.com",
    b"hmac-sha2-512-etm@openssh.com",
    b"hmac-sha2-256",
    b"hmac-sha2-512",
]
# The signature algorithms we accept for host keys and user keys: no SHA-1, no DSA.
PUBLIC_KEY_ALGORITHMS: list[bytes] = [
    b"ssh-ed25519",
    b"ecdsa-sha2-nistp256",
    b"ecdsa-sha2-nistp384",
    b"ecdsa-sha2-nistp521",
    b"rsa-sha2-512",
    b"rsa-sha2-256",
]


def choose(what: str, spec: str, default: Sequence[bytes]) -> list[bytes]:
    """
    Apply an OpenSSH algorithm-list C{spec} for option C{what} to C{default}; every name must
    be one rfwd implements (patterns with C{*} and C{?} are allowed after C{-}).
    """
    spec = spec.strip()
    if not spec:
        raise ConfigError(f"{what}: empty list")
    mode = spec[0] if spec[0] in "+-^" else ""
    names = [n.strip() for n in spec[len(mode) :].split(",") if n.strip()]
    if not names:
        raise ConfigError(f"{what}: empty list")
    if mode == "-":
        kept = [a for a in default if not any(fnmatch.fnmatchcase(a.decode(), n) for n in names)]
        if not kept:
            raise ConfigError(f"{what}: nothing left after removing {spec[1:]}")
        return kept
    chosen = [n.encode("ascii", "replace") for n in names]
    unknown = [n.decode() for n in chosen if n not in default]
    if unknown:
        raise ConfigError(
            f"{what}: unsupported {', '.join(unknown)} "
            f"(rfwd supports {', '.join(a.decode() for a in default)})"
        )
    if mode == "+":
        return [*default, *(c for c in chosen if c not in default)]
    if mode == "^":
        return [*chosen, *(a for a in default if a not in chosen)]
    return chosen
