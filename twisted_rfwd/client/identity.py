"""
Client identities: private keys read from OpenSSH key files.

A key that cannot be used is an error naming the file; a default key (C{~/.ssh/id_*}) that is
encrypted is skipped with a warning, because rfwd-client never prompts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from twisted.conch.ssh.keys import BadKeyError, EncryptedKeyError, Key

from twisted_rfwd.errors import KeyLoadError
from twisted_rfwd.fingerprint import fingerprint

__all__ = ["DEFAULT_IDENTITY_NAMES", "Identity", "default_identity_paths", "load_identity"]

DEFAULT_IDENTITY_NAMES = ("id_ed25519", "id_ecdsa", "id_rsa")


@dataclass(frozen=True)
class Identity:
    """A private key and where it came from (for messages)."""

    key: Key = field(compare=False)
    source: str

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.key)

    @property
    def key_type(self) -> str:
        return str(self.key.sshType().decode("ascii"))

    def __str__(self) -> str:
        return f"{self.source} ({self.key_type} {self.fingerprint})"


def load_identity(path: str, passphrase: bytes | None = None) -> Identity:
    """Read a private key file; raise L{KeyLoadError} saying why it is unusable."""
    path = os.path.expanduser(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise KeyLoadError(path, e.strerror or str(e)) from None
    try:
        key = Key.fromString(data, passphrase=passphrase)
    except EncryptedKeyError:
        raise KeyLoadError(
            path, "the key is encrypted and rfwd-client cannot prompt for a passphrase"
        ) from None
    except (BadKeyError, ValueError) as e:
        raise KeyLoadError(path, f"not a usable private key ({e})") from None
    if key.isPublic():
        raise KeyLoadError(path, "this is a public key; give the private key file")
    return Identity(key, path)


def default_identity_paths(home: str | None = None) -> list[str]:
    """C{~/.ssh/id_ed25519}, C{id_ecdsa}, C{id_rsa}: those that exist, in that order."""
    ssh_dir = os.path.join(home or os.path.expanduser("~"), ".ssh")
    candidates = (os.path.join(ssh_dir, name) for name in DEFAULT_IDENTITY_NAMES)
    return [path for path in candidates if os.path.isfile(path)]
