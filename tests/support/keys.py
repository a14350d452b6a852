"""Throwaway keys for tests, as Conch keys and as OpenSSH-format files."""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from twisted.conch.ssh.keys import Key


def new_key(kind: str = "ed25519") -> Key:
    """A fresh private key: ed25519, ecdsa (P-256) or rsa (2048 bits)."""
    if kind == "ed25519":
        return Key(ed25519.Ed25519PrivateKey.generate())
    if kind == "ecdsa":
        return Key(ec.generate_private_key(ec.SECP256R1()))
    if kind == "rsa":
        return Key(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    raise ValueError(kind)


def write_private_key(key: Key, path: Path) -> Path:
    """Write C{key} in OpenSSH format with mode 0600 (sshd and ssh insist), and its .pub."""
    path.write_bytes(key.toString("OPENSSH"))
    os.chmod(path, 0o600)
    path.with_name(path.name + ".pub").write_bytes(public_line(key) + b"\n")
    return path


def public_line(key: Key, comment: str = "test") -> bytes:
    """The authorized_keys / .pub line for C{key}."""
    line: bytes = key.public().toString("OPENSSH", comment=comment)
    return line


_ENCRYPTED: dict[bytes, tuple[Key, bytes]] = {}


def write_encrypted_key(path: Path, passphrase: bytes) -> Key:
    """
    Write a key in OpenSSH format encrypted with C{passphrase} (aes256-ctr, bcrypt KDF), mode
    0600, and return it.  Conch's KDF takes most of a second, so each passphrase's key is made
    once and shared by every test.
    """
    if passphrase not in _ENCRYPTED:
        key = new_key()
        _ENCRYPTED[passphrase] = key, key.toString("OPENSSH", passphrase=passphrase)
    key, data = _ENCRYPTED[passphrase]
    path.write_bytes(data)
    os.chmod(path, 0o600)
    return key
