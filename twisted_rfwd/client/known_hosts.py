"""
Host-key checking against OpenSSH known_hosts files, under C{StrictHostKeyChecking}.

Entries are read with Conch's L{KnownHostsFile} (plain and hashed, C{[host]:port} names for ports
other than 22).  As OpenSSH does, the host-key algorithms already recorded for the host are asked
for first, so a host known by its RSA key is not mistaken for an unknown one offering ed25519.
Never a prompt: an unknown or changed key is an error with the fingerprint and what to do, and a
changed key is one even under C{StrictHostKeyChecking=no} (see L{KnownHosts.verify}).
"""

from __future__ import annotations

import fnmatch
import os
import struct
from collections.abc import Sequence
from typing import Union

from twisted.conch.client.knownhosts import KnownHostsFile
from twisted.conch.ssh.keys import BadKeyError, Key
from twisted.logger import Logger
from twisted.python.filepath import FilePath

from twisted_rfwd.client.config import HostKeyPolicy
from twisted_rfwd.errors import (
    ChangedHostKey,
    ChangedHostKeyForwardingDisabled,
    RevokedHostKey,
    UnknownHostKey,
)
from twisted_rfwd.ssh.fingerprint import fingerprint

__all__ = ["KnownHosts", "KnownHostsPaths", "host_key_algorithms_for", "known_hosts_paths"]

_log = Logger()

_ALGORITHMS_BY_KEY_TYPE = {
    b"ssh-rsa": [b"rsa-sha2-512", b"rsa-sha2-256"],
}


def host_key_algorithms_for(key_type: bytes) -> list[bytes]:
    """The signature algorithms that prove possession of a key of this type."""
    return _ALGORITHMS_BY_KEY_TYPE.get(key_type, [key_type])


def key_type_name(key: Key) -> str:
    return {"EC": "ECDSA", "Ed25519": "ED25519"}.get(key.type(), key.type())


KnownHostsPaths = Union[str, "os.PathLike[str]", Sequence[Union[str, "os.PathLike[str]"]]]
"""One known_hosts file, or several: what C{ClientConfig.known_hosts} may hold."""


def known_hosts_paths(paths: KnownHostsPaths) -> list[str]:
    """
    The files, in order, with C{~} expanded.  One path given as a string is one file, never a
    sequence of one-character names.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    return [os.path.expanduser(os.fspath(p)) for p in paths]


class KnownHosts:
    """
    The known_hosts files as they apply to one server (C{host}, C{port}); C{paths} is one
    file or a sequence of them.
    """

    def __init__(self, paths: KnownHostsPaths, policy: HostKeyPolicy, host: str, port: int) -> None:
        self.paths = known_hosts_paths(paths)
        if not self.paths:
            raise ValueError("at least one known_hosts path is needed")
        self.policy = policy
        self.host = host.lower()
        self.port = port

    @property
    def host_id(self) -> str:
        """The name the server is filed under."""
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"

    def _files(self) -> list[KnownHostsFile]:
        return [KnownHostsFile.fromPath(FilePath(p)) for p in self.paths]

    def recorded_key_types(self) -> list[bytes]:
        """Key types with an entry for this host, in file order."""
        name = self.host_id.encode("utf-8")
        found: list[bytes] = []
        for known in self._files():
            for entry in known.iterentries():
                key_type = getattr(entry, "keyType", None)
                if key_type and key_type not in found and entry.matchesHost(name):
                    found.append(key_type)
        return found

    def order_algorithms(self, offered: Sequence[bytes]) -> list[bytes]:
        """C{offered}, with the algorithms for key types already recorded moved to the front."""
        preferred = [
            algorithm
            for key_type in self.recorded_key_types()
            for algorithm in host_key_algorithms_for(key_type)
            if algorithm in offered
        ]
        return preferred + [a for a in offered if a not in preferred]

    def verify(self, key: Key) -> None:
        """
        Accept C{key} for this host, or raise.

        A changed key is refused under every policy.  Under C{no}, ssh would go on without
        password and keyboard-interactive authentication and without port forwarding, since a
        man in the middle could use them; forwarding is all this client does, so it stops here,
        at the host-key check, before anything of the login is sent (not even the user name or
        which public keys it holds).  That is simpler and safer than carrying "do not send a
        password, do not ask for forwards" through userauth and the tunnel.

        @raise UnknownHostKey: no entry, and the policy is C{yes}.
        @raise ChangedHostKeyForwardingDisabled: an entry of this type holds another key, and
            the policy is C{no}.
        @raise ChangedHostKey: an entry of this type holds another key, under C{yes} or
            C{accept-new}.
        @raise RevokedHostKey: the key is marked C{@revoked} for this host, under any policy.
        """
        name = self.host_id.encode("utf-8")
        key_fingerprint = fingerprint(key)
        key_type = key_type_name(key)
        revoked = self._revocation(key)
        if revoked is not None:
            path, line = revoked
            raise RevokedHostKey(self.host, self.port, key_type, key_fingerprint, path, line)
        # Not KnownHostsFile.hasHostKey: it gives up at the first entry of this type that holds
        # another key, where OpenSSH accepts any matching entry in any file.
        changed: tuple[str, int] | None = None
        for path, known in zip(self.paths, self._files(), strict=True):
            for line, entry in enumerate(known.iterentries(), 1):
                if entry.keyType == key.sshType() and entry.matchesHost(name):
                    if entry.matchesKey(key):
                        return
                    changed = changed or (path, line)
        if changed is not None:
            path, line = changed
            if self.policy is HostKeyPolicy.NO:
                raise ChangedHostKeyForwardingDisabled(
                    self.host, self.port, key_type, key_fingerprint, path, line
                )
            raise ChangedHostKey(self.host, self.port, key_type, key_fingerprint, path, line)
        if self.policy is HostKeyPolicy.YES:
            raise UnknownHostKey(self.host, self.port, key_type, key_fingerprint, self.paths[0])
        self._add(key, key_type, key_fingerprint)

    def _revocation(self, key: Key) -> tuple[str, int] | None:
        """Where C{key} is marked C{@revoked} for this host (Conch skips marker lines)."""
        blob = key.blob()
        for path in self.paths:
            try:
                with open(path, "rb") as f:
                    lines = f.read().splitlines()
            except OSError:
                continue
            for number, raw in enumerate(lines, 1):
                fields = raw.split()
                if len(fields) < 4 or fields[0] != b"@revoked":
                    continue
                if not _host_patterns_match(fields[1], self.host_id):
                    continue
                try:
                    if Key.fromString(fields[2] + b" " + fields[3]).blob() == blob:
                        return path, number
                except (BadKeyError, ValueError, struct.error):
                    continue
        return None

    def _add(self, key: Key, key_type: str, key_fingerprint: str) -> None:
        path = self.paths[0]
        known = KnownHostsFile.fromPath(FilePath(path))
        known.addHostKey(self.host_id.encode("utf-8"), key)
        try:
            _end_with_newline(path)
            known.save()
        except OSError as e:
            _log.warn(
                "Could not record the host key of {host} in {path}: {reason}",
                host=self.host_id,
                path=path,
                reason=e.strerror,
            )
            return
        _log.info(
            "Permanently added {host} ({key_type} {fingerprint}) to the known hosts in {path}",
            host=self.host_id,
            key_type=key_type,
            fingerprint=key_fingerprint,
            path=path,
        )


def _host_patterns_match(patterns: bytes, host_id: str) -> bool:
    """OpenSSH host patterns (C{*}, C{?}, C{!negation}, comma-separated) against a name."""
    matched = False
    for pattern in patterns.decode("utf-8", "replace").split(","):
        negated = pattern.startswith("!")
        if fnmatch.fnmatchcase(host_id, pattern.lstrip("!").lower()):
            if negated:
                return False
            matched = True
    return matched


def _end_with_newline(path: str) -> None:
    """Finish an unterminated last line, so that an appended entry starts a line of its own."""
    try:
        with open(path, "rb+") as f:
            if f.seek(0, os.SEEK_END) > 0:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    f.write(b"\n")
    except FileNotFoundError:
        pass
