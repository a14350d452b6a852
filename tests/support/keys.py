"""
Throwaway keys for tests as Conch keys, and OpenSSH-format files of them.  Generation and
file modes come from L{harness.keys}; what is Conch-specific (its L{Key}, its KDF) stays here.
"""

from __future__ import annotations

from pathlib import Path

from twisted.conch.ssh.keys import Key

from harness.keys import generate_key, write_secret


def new_key(kind: str = "ed25519") -> Key:
    """A fresh private key: ed25519, ecdsa (P-256) or rsa (2048 bits)."""
    return Key(generate_key(kind))


def write_private_key(key: Key, path: Path) -> Path:
    """Write C{key} in OpenSSH format with mode 0600 (sshd and ssh insist), and its .pub."""
    write_secret(path, key.toString("OPENSSH"))
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
    write_secret(path, data)
    return key
