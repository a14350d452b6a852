"""
Host keys for rfwd-server: loading the ones given, or generating one on first start.

With no C{--host-key}, an ed25519 key is created once in the state directory (mode 0600, written
atomically) and reused afterwards, so clients can pin it in known_hosts.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from twisted.conch.ssh.keys import BadKeyError, EncryptedKeyError, Key

from twisted_rfwd.errors import KeyLoadError

__all__ = ["DEFAULT_KEY_NAME", "default_state_directory", "ensure_host_key", "load_host_key"]

DEFAULT_KEY_NAME = "ssh_host_ed25519_key"


def default_state_directory() -> Path:
    """C{$XDG_STATE_HOME/twisted-rfwd}, or C{~/.local/state/twisted-rfwd}."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "state"
    )
    return Path(base) / "twisted-rfwd"


def load_host_key(path: str) -> Key:
    """Read one unencrypted private host key (OpenSSH or PEM format)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise KeyLoadError(path, e.strerror or str(e)) from None
    try:
        key = Key.fromString(data)
    except EncryptedKeyError:
        raise KeyLoadError(path, "host keys must not be encrypted") from None
    except (BadKeyError, ValueError) as e:
        raise KeyLoadError(path, f"not a private key ({e})") from None
    if key.isPublic():
        raise KeyLoadError(path, "this is a public key; give the private key file")
    loaded: Key = key
    return loaded


def ensure_host_key(state_directory: Path) -> tuple[Key, Path, bool]:
    """
    The default host key: loaded from C{state_directory}, or generated there.

    @return: the key, its path, and whether it was generated just now.
    """
    path = state_directory / DEFAULT_KEY_NAME
    if path.exists():
        return load_host_key(str(path)), path, False
    state_directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = Key(Ed25519PrivateKey.generate())
    _write_private(path, key.toString("OPENSSH"))
    public = key.public().toString("OPENSSH", comment="rfwd-server host key") + b"\n"
    _write_private(path.with_name(path.name + ".pub"), public, mode=0o644)
    return key, path, True


def _write_private(path: Path, data: bytes, mode: int = 0o600) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    done = False
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
        done = True
    finally:
        if not done:
            temporary.unlink(missing_ok=True)
