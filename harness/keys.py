"""Throwaway SSH keys written in OpenSSH format, and the key files one SSH pair needs."""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

PrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

KEY_KINDS = ("ed25519", "ecdsa", "rsa")


def generate_key(kind: str = "ed25519") -> PrivateKey:
    """A fresh private key: ed25519, ecdsa (P-256) or rsa (2048 bits)."""
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if kind == "ecdsa":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raise ValueError(kind)


def write_secret(path: Path, data: bytes) -> Path:
    """Write C{data} to a file created with mode 0600 (sshd and ssh refuse readable keys)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)  # an existing file keeps its mode through O_CREAT
    return path


def public_line(key: PrivateKey, comment: str = "test") -> bytes:
    """The authorized_keys / .pub line for C{key}."""
    blob = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return blob + b" " + comment.encode()


def write_private_key(key: PrivateKey, path: Path, comment: str = "test") -> Path:
    """Write C{key} in OpenSSH format with mode 0600, and its .pub beside it."""
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    write_secret(path, data)
    path.with_name(path.name + ".pub").write_bytes(public_line(key, comment) + b"\n")
    return path


@dataclass(frozen=True)
class Keys:
    """The key files of one SSH pair, all in C{workdir}, and the user who logs in."""

    workdir: Path
    host_key: Path
    user_key: Path
    authorized_keys: Path
    user: str


def make_keys(workdir: Path, user_key_kind: str = "ed25519", comment: str = "test") -> Keys:
    """A fresh ed25519 host key, a user key of C{user_key_kind}, and its authorized_keys."""
    # Absolute: sshd re-executes itself for each connection from "/".
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    host_key = write_private_key(generate_key(), workdir / "host_key", comment)
    user = generate_key(user_key_kind)
    user_key = write_private_key(user, workdir / "user_key", comment)
    authorized = workdir / "authorized_keys"
    authorized.write_bytes(public_line(user, comment) + b"\n")
    return Keys(workdir, host_key, user_key, authorized, getpass.getuser())
