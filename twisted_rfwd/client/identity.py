"""
Client identities: private keys read from OpenSSH key files.

A key that cannot be used is an error naming the file; an encrypted key needs its passphrase
given up front, because rfwd-client never prompts.  Without one, a default key (C{~/.ssh/id_*})
that is encrypted is skipped with a warning, unless ssh-agent holds it.

User certificates (C{KEY-cert.pub} beside a key, C{CertificateFile}, or held by the agent) are
offered as L{CertifiedIdentity}: the certificate is the public key sent, the plain key signs.
"""

from __future__ import annotations

import os
import struct
from base64 import b64decode
from dataclasses import dataclass, field

from twisted.conch.ssh.keys import BadKeyError, EncryptedKeyError, Key
from twisted.internet.defer import Deferred, fail, succeed

from twisted_rfwd.errors import EncryptedKey, KeyLoadError, MalformedPacket
from twisted_rfwd.protocol.certificates import (
    CERT_ALGORITHMS,
    USER_CERT,
    Certificate,
    parse_certificate,
)
from twisted_rfwd.protocol.wire import Reader
from twisted_rfwd.ssh.fingerprint import fingerprint

__all__ = [
    "DEFAULT_IDENTITY_NAMES",
    "CertifiedIdentity",
    "EncryptedKey",
    "Identity",
    "PublicOnlyIdentity",
    "default_identity_paths",
    "load_identity",
    "load_public_identity",
    "load_user_certificate",
]

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

    @property
    def public_blob(self) -> bytes:
        """The public key blob sent to the server (a certificate's, for a certificate)."""
        blob: bytes = self.key.blob()
        return blob

    def algorithm(self, server_sig_algs: list[bytes] | None) -> bytes:
        """The algorithm to sign with: for RSA the best SHA-2 one the server lists."""
        key_type: bytes = self.key.sshType()
        if key_type != b"ssh-rsa":
            return key_type
        if server_sig_algs is None:
            return b"ssh-rsa"  # an old server that announces nothing: what OpenSSH sends
        for candidate in (b"rsa-sha2-512", b"rsa-sha2-256"):
            if candidate in server_sig_algs:
                return candidate
        return b"ssh-rsa"

    def sign(self, data: bytes, algorithm: bytes) -> Deferred[bytes]:
        """
        The signature blob over C{data}.  A key at hand signs at once (the Deferred has fired);
        other identities (the agent's) may answer later.
        """
        return succeed(self.key.sign(data, signatureType=algorithm))

    def __str__(self) -> str:
        return f"{self.source} ({self.key_type} {self.fingerprint})"


# The plain signature algorithm -> the name a certificate of that key is offered under.
_CERT_NAMES = {plain: cert for cert, plain in CERT_ALGORITHMS.items()}
_CERT_NAMES[b"ssh-rsa"] = b"ssh-rsa-cert-v01@openssh.com"


@dataclass(frozen=True)
class CertifiedIdentity(Identity):
    """
    A user certificate of C{key}, offered under the certificate's algorithm, signed by
    C{signer} (the key file's identity or the agent's) with the plain algorithm.
    """

    signer: Identity = field(compare=False, repr=False)
    certificate: bytes = field(compare=False, repr=False)

    @property
    def parsed(self) -> Certificate:
        return parse_certificate(self.certificate)

    @property
    def public_blob(self) -> bytes:
        return self.certificate

    @property
    def key_type(self) -> str:
        return self.parsed.cert_type.decode("ascii")

    def algorithm(self, server_sig_algs: list[bytes] | None) -> bytes:
        return _CERT_NAMES[self.signer.algorithm(server_sig_algs)]

    def sign(self, data: bytes, algorithm: bytes) -> Deferred[bytes]:
        plain = CERT_ALGORITHMS.get(algorithm, b"ssh-rsa")
        return self.signer.sign(data, plain)

    def __str__(self) -> str:
        return (
            f"{self.source} ({self.key.sshType().decode('ascii')}-cert {self.fingerprint}, "
            f"{self.parsed.describe()})"
        )


def load_user_certificate(path: str) -> bytes:
    """
    A user certificate file (C{KEY-cert.pub}, C{CertificateFile}); its blob.

    @raise KeyLoadError: unreadable, not a certificate, or a host certificate.
    """
    path = os.path.expanduser(path)
    try:
        blob = b64decode(_read(path).split()[1], validate=True)
        cert = parse_certificate(blob)
    except (IndexError, ValueError, MalformedPacket, struct.error):
        raise KeyLoadError(path, "not an OpenSSH certificate (a -cert.pub file)") from None
    if cert.kind != USER_CERT:
        raise KeyLoadError(path, "this is a host certificate, not a user certificate")
    return blob


class PublicOnlyIdentity(Identity):
    """
    A key file whose private half could not be loaded (encrypted, no passphrase): only its
    public key, which ssh-agent may hold and sign for.  It cannot sign by itself.
    """

    def sign(self, data: bytes, algorithm: bytes) -> Deferred[bytes]:
        return fail(EncryptedKey(self.source))


def load_identity(path: str, passphrase: bytes | None = None) -> Identity:
    """
    Read a private key file, decrypting it with C{passphrase} if it is encrypted; raise
    L{KeyLoadError} saying why it is unusable (L{EncryptedKey}: encrypted, no passphrase).
    """
    path = os.path.expanduser(path)
    data = _read(path)
    try:
        key = Key.fromString(data)
    except EncryptedKeyError:
        if passphrase is None:
            raise EncryptedKey(path) from None
        key = _decrypt(path, data, passphrase)
    except (BadKeyError, ValueError) as e:
        raise KeyLoadError(path, f"not a usable private key ({e})") from None
    if key.isPublic():
        raise KeyLoadError(path, "this is a public key; give the private key file")
    return Identity(key, path)


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise KeyLoadError(path, e.strerror or str(e)) from None


def _decrypt(path: str, data: bytes, passphrase: bytes) -> Key:
    if not passphrase:
        raise KeyLoadError(path, "the key is encrypted and the passphrase given is empty")
    try:
        key: Key = Key.fromString(data, passphrase=passphrase)
    except (BadKeyError, ValueError, TypeError) as e:
        # Conch's words for a wrong passphrase, OpenSSH format and PEM.
        if "check values do not match" in str(e) or "Bad Passphrase" in str(e):
            raise KeyLoadError(path, "wrong passphrase: the key could not be decrypted") from None
        raise KeyLoadError(path, f"cannot decrypt the key ({e})") from None
    return key


def load_public_identity(path: str) -> PublicOnlyIdentity:
    """
    The public half of a private key file that cannot be decrypted, to find the key in the
    agent: from C{path}.pub, or else from the unencrypted header of an OpenSSH-format file,
    as ssh does.  Signing with it fails; only L{KeyLoadError} says why it cannot be read.
    """
    path = os.path.expanduser(path)
    try:
        with open(path + ".pub", "rb") as f:
            return PublicOnlyIdentity(Key.fromString(f.read()).public(), path)
    except (OSError, BadKeyError, ValueError):
        pass
    try:
        blob = _openssh_public_blob(_read(path))
        return PublicOnlyIdentity(Key.fromString(blob, type="blob"), path)
    except (BadKeyError, ValueError, MalformedPacket, struct.error):
        raise KeyLoadError(path, "cannot read its public key (no usable .pub file)") from None


def _openssh_public_blob(data: bytes) -> bytes:
    """The first public key in an C{openssh-key-v1} private key file, stored unencrypted."""
    lines = data.strip().splitlines()
    if not lines or lines[0] != b"-----BEGIN OPENSSH PRIVATE KEY-----":
        raise ValueError("not an OpenSSH private key")
    decoded = b64decode(b"".join(lines[1:-1]))
    magic = b"openssh-key-v1\0"
    if not decoded.startswith(magic):
        raise ValueError("not an OpenSSH private key")
    reader = Reader(decoded[len(magic) :], "OpenSSH private key")
    reader.string(), reader.string(), reader.string()  # cipher, KDF, KDF options
    if reader.uint32() < 1:
        raise ValueError("no key in the file")
    return reader.string()


def default_identity_paths(home: str | None = None) -> list[str]:
    """C{~/.ssh/id_ed25519}, C{id_ecdsa}, C{id_rsa}: those that exist, in that order."""
    ssh_dir = os.path.join(home or os.path.expanduser("~"), ".ssh")
    candidates = (os.path.join(ssh_dir, name) for name in DEFAULT_IDENTITY_NAMES)
    return [path for path in candidates if os.path.isfile(path)]
