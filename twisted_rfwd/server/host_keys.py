"""
Host keys for rfwd-server: loading the ones given, or generating one on first start.

With no C{--host-key}, an ed25519 key is created once in the state directory (mode 0600, written
atomically) and reused afterwards, so clients can pin it in known_hosts.
"""

from __future__ import annotations

import os
import struct
from base64 import b64decode
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from twisted.conch.ssh.keys import BadKeyError, EncryptedKeyError, Key

from twisted_rfwd.errors import KeyLoadError, MalformedPacket
from twisted_rfwd.protocol.certificates import (
    CERT_ALGORITHMS,
    HOST_CERT,
    certificate_algorithms,
    parse_certificate,
)

__all__ = [
    "DEFAULT_KEY_NAME",
    "CertifiedHostKey",
    "default_state_directory",
    "ensure_host_key",
    "host_key_tables",
    "load_host_certificate",
    "load_host_key",
]

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


def load_host_certificate(path: str) -> bytes:
    """
    Read a host certificate (sshd's C{HostCertificate}: a C{-cert.pub} file made by
    C{ssh-keygen -s CA -h}); return its blob.
    """
    try:
        with open(path, "rb") as f:
            fields = f.read().split()
    except OSError as e:
        raise KeyLoadError(path, e.strerror or str(e)) from None
    try:
        blob = b64decode(fields[1], validate=True)
        cert = parse_certificate(blob)
    except (IndexError, ValueError, MalformedPacket, struct.error):
        raise KeyLoadError(path, "not an OpenSSH certificate (a -cert.pub file)") from None
    if cert.kind != HOST_CERT:
        raise KeyLoadError(path, "this is a user certificate; sign the key with ssh-keygen -h")
    return blob


class CertifiedHostKey:
    """
    A host certificate with its private key, in the two roles Conch's server gives a host key
    (PROTOCOL.certkeys): K_S is the certificate (L{blob}); the exchange hash is signed by the
    plain key, with the plain algorithm under the certificate's name (L{sign}).
    """

    def __init__(self, certificate: bytes, key: Key) -> None:
        self.certificate = certificate
        self.key = key
        self.cert_type = parse_certificate(certificate).cert_type

    def blob(self) -> bytes:
        return self.certificate

    def public(self) -> CertifiedHostKey:
        return self

    def sign(self, data: bytes, signatureType: bytes | None = None) -> bytes:
        plain = CERT_ALGORITHMS[signatureType] if signatureType else None
        signature: bytes = self.key.sign(data, signatureType=plain)
        return signature

    def supportedSignatureAlgorithms(self) -> list[bytes]:
        return certificate_algorithms(self.cert_type)


def host_key_tables(
    keys: list[Key], certificates: list[bytes]
) -> tuple[dict[bytes, object], dict[bytes, object]]:
    """
    Conch's C{publicKeys} and C{privateKeys}: each key by its type, and each certificate,
    paired with the key it certifies, under each of its signature algorithms (Conch looks a
    host key up by the negotiated algorithm's name).

    @raise ValueError: a certificate certifies none of C{keys}.
    """
    private: dict[bytes, object] = {key.sshType(): key for key in keys}
    public: dict[bytes, object] = {key.sshType(): key.public() for key in keys}
    for certificate in certificates:
        cert = parse_certificate(certificate)
        key = next((k for k in keys if k.public().blob() == cert.key_blob), None)
        if key is None:
            raise ValueError(
                f"host certificate {cert.describe()} certifies none of the host keys given"
            )
        certified = CertifiedHostKey(certificate, key)
        for algorithm in certified.supportedSignatureAlgorithms():
            private[algorithm] = public[algorithm] = certified
    return public, private
