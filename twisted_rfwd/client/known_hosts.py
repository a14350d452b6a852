"""
Host-key checking against OpenSSH known_hosts files, under C{StrictHostKeyChecking}.

Entries are read with Conch's L{KnownHostsFile} (plain and hashed, C{[host]:port} names for ports
other than 22).  As OpenSSH does, the host-key algorithms already recorded for the host are asked
for first, so a host known by its RSA key is not mistaken for an unknown one offering ed25519.
Never a prompt: an unknown or changed key is an error with the fingerprint and what to do, and a
changed key is one even under C{StrictHostKeyChecking=no} (see L{KnownHosts.verify}).

Host certificates (OpenSSH PROTOCOL.certkeys) are checked as C{ssh} checks them
(C{sshconnect.c} C{check_host_key}): a C{@cert-authority} line for the host naming the
certificate's CA, a host certificate, inside its validity window, naming the host among its
principals (wildcards allowed; none means any host), no critical options.  A certificate that
fails those checks falls back to its plain key, looked up as any other host key; a certificate
whose CA or key is C{@revoked} is refused, without the fallback.
"""

from __future__ import annotations

import hmac
import os
import re
import struct
from base64 import b64decode
from collections.abc import Sequence
from hashlib import sha1
from typing import Union

from twisted.conch.client.knownhosts import KnownHostsFile
from twisted.conch.ssh.keys import BadKeyError, Key
from twisted.logger import Logger
from twisted.python.filepath import FilePath

from twisted_rfwd.client.config import HostKeyPolicy
from twisted_rfwd.errors import (
    ChangedHostKey,
    ChangedHostKeyForwardingDisabled,
    InvalidHostCertificate,
    RevokedHostKey,
    UnknownHostKey,
)
from twisted_rfwd.protocol.certificates import (
    CERT_ALGORITHMS,
    HOST_CERT,
    Certificate,
)
from twisted_rfwd.ssh.fingerprint import fingerprint

__all__ = [
    "InvalidHostCertificate",
    "KnownHosts",
    "KnownHostsPaths",
    "certificate_problem",
    "host_key_algorithms_for",
    "known_hosts_paths",
]

_log = Logger()

_ALGORITHMS_BY_KEY_TYPE = {
    b"ssh-rsa": [b"rsa-sha2-512", b"rsa-sha2-256"],
}


def host_key_algorithms_for(key_type: bytes) -> list[bytes]:
    """The signature algorithms that prove possession of a key of this type."""
    return _ALGORITHMS_BY_KEY_TYPE.get(key_type, [key_type])


def key_type_name(key: Key) -> str:
    return {"EC": "ECDSA", "Ed25519": "ED25519"}.get(key.type(), key.type())


def certificate_problem(cert: Certificate, host: str, now: float) -> str | None:
    """
    Why C{cert} cannot vouch for C{host} at C{now}, in ssh's words, or None.  The CA's
    signature is checked separately.
    """
    if cert.kind != HOST_CERT:
        return "Certificate invalid: not a host certificate"
    if now < cert.valid_after:
        return "Certificate invalid: not yet valid"
    if not cert.valid_at(now):
        return "Certificate invalid: expired"
    if cert.principals and not any(_wildcard_match(host, p.lower()) for p in cert.principals):
        return "Certificate invalid: name is not a listed principal"
    if cert.critical_options:
        return "Certificate contains unsupported critical options"
    return None


def ca_signed(cert: Certificate) -> bool:
    """Whether the certificate's signature is its CA's (a CA that is itself a cert: no)."""
    try:
        ca = Key.fromString(cert.signature_key, type="blob")
        return bool(ca.verify(cert.signature, cert.signed_data))
    except (BadKeyError, ValueError, struct.error, IndexError):
        return False


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
        """
        C{offered}, reordered as ssh's C{order_hostkeyalgs} does: every certificate algorithm
        first when a C{@cert-authority} line names this host, then the algorithms (plain and
        certificate) of key types already recorded, then the rest in their order.
        """
        has_ca = bool(self._marked(b"@cert-authority"))
        preferred: list[bytes] = []
        if has_ca:
            preferred += [a for a in offered if a in CERT_ALGORITHMS]
        for key_type in self.recorded_key_types():
            plain = host_key_algorithms_for(key_type)
            for algorithm in offered:
                if algorithm in preferred:
                    continue
                if algorithm in plain or CERT_ALGORITHMS.get(algorithm) in plain:
                    preferred.append(algorithm)
        return preferred + [a for a in offered if a not in preferred]

    def verify_certificate(self, cert: Certificate, now: float) -> None:
        """
        Accept the host certificate C{cert} at C{now} (seconds since the epoch), or its plain
        key, or raise as L{verify} does.

        @raise InvalidHostCertificate: the CA's signature does not verify.
        @raise RevokedHostKey: the certified key or the CA is marked C{@revoked} for the host.
        """
        plain = Key.fromString(cert.key_blob, type="blob")
        cert_type = key_type_name(plain) + "-CERT"
        if not ca_signed(cert):
            raise InvalidHostCertificate(
                self.host, self.port, cert_type, fingerprint(plain), "signature"
            )
        ca_blob = cert.signature_key
        for blob, what in ((plain.blob(), cert_type), (ca_blob, "CA")):
            revoked = self._revocation_of(blob)
            if revoked is not None:
                path, line = revoked
                key = Key.fromString(blob, type="blob")
                raise RevokedHostKey(self.host, self.port, what, fingerprint(key), path, line)
        authorities = self._marked(b"@cert-authority")
        authority = next(((path, line) for path, line, key in authorities if key == ca_blob), None)
        if authority is None:
            _log.debug(
                "No @cert-authority line for {host} names the CA of its certificate: "
                "checking its plain key",
                host=self.host_id,
            )
        else:
            problem = certificate_problem(cert, self.host, now)
            if problem is None:
                _log.info(
                    "Host certificate of {host} accepted: {cert}, CA at {path}:{line}",
                    host=self.host_id,
                    cert=cert.describe(),
                    path=authority[0],
                    line=authority[1],
                )
                return
            _log.warn(
                "Host certificate of {host} ({cert}) refused: {problem}; checking its plain key",
                host=self.host_id,
                cert=cert.describe(),
                problem=problem,
            )
        self.verify(plain)

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
        return self._revocation_of(key.blob())

    def _revocation_of(self, blob: bytes) -> tuple[str, int] | None:
        return next(
            ((path, line) for path, line, key in self._marked(b"@revoked") if key == blob), None
        )

    def _marked(self, marker: bytes) -> list[tuple[str, int, bytes]]:
        """C{(path, line, key blob)} of the lines with C{marker} whose patterns match the host."""
        found = []
        for path in self.paths:
            try:
                with open(path, "rb") as f:
                    lines = f.read().splitlines()
            except OSError:
                continue
            for number, raw in enumerate(lines, 1):
                fields = raw.split()
                if len(fields) < 4 or fields[0] != marker:
                    continue
                if not _host_patterns_match(fields[1], self.host_id):
                    continue
                try:
                    blob = b64decode(fields[3], validate=True)
                except ValueError:
                    continue
                found.append((path, number, blob))
        return found

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
    if patterns.startswith(b"|1|"):
        return _hashed_match(patterns, host_id)
    matched = False
    for pattern in patterns.decode("utf-8", "replace").split(","):
        negated = pattern.startswith("!")
        if _wildcard_match(host_id, pattern.lstrip("!").lower()):
            if negated:
                return False
            matched = True
    return matched


def _wildcard_match(name: str, pattern: str) -> bool:
    """OpenSSH's C{match_pattern}: C{*} and C{?} only (C{[host]:port} is literal, not a set)."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, name, re.DOTALL) is not None


def _hashed_match(field: bytes, host_id: str) -> bool:
    """A hashed name (C{|1|salt|hash}, HashKnownHosts) against the host."""
    try:
        salt, digest = (b64decode(part, validate=True) for part in field[3:].split(b"|", 1))
    except ValueError:
        return False
    ours = hmac.new(salt, host_id.encode("utf-8"), sha1).digest()
    return hmac.compare_digest(ours, digest)


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
