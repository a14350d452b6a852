"""
OpenSSH certificates (PROTOCOL.certkeys): parsing the wire format, and the checks that need no
cryptography (type, validity window, principals, critical options).  Verifying the CA's
signature needs a key implementation and is done by the SSH layer.  Pure: no Twisted.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from twisted_rfwd.errors import MalformedPacket
from twisted_rfwd.protocol.wire import Reader

__all__ = [
    "CERT_TYPES",
    "HOST_CERT",
    "USER_CERT",
    "Certificate",
    "parse_certificate",
]

USER_CERT = 1
HOST_CERT = 2
# uint64 "valid before" meaning forever.
FOREVER = 0xFFFFFFFFFFFFFFFF

# Certificate type -> the plain key type, and the key's public fields as the wire lays them out
# ("s": string, "m": mpint, also read as a string here).
CERT_TYPES: dict[bytes, tuple[bytes, str]] = {
    b"ssh-ed25519-cert-v01@openssh.com": (b"ssh-ed25519", "s"),
    b"ecdsa-sha2-nistp256-cert-v01@openssh.com": (b"ecdsa-sha2-nistp256", "ss"),
    b"ecdsa-sha2-nistp384-cert-v01@openssh.com": (b"ecdsa-sha2-nistp384", "ss"),
    b"ecdsa-sha2-nistp521-cert-v01@openssh.com": (b"ecdsa-sha2-nistp521", "ss"),
    b"ssh-rsa-cert-v01@openssh.com": (b"ssh-rsa", "mm"),
    b"sk-ssh-ed25519-cert-v01@openssh.com": (b"sk-ssh-ed25519@openssh.com", "ss"),
    b"sk-ecdsa-sha2-nistp256-cert-v01@openssh.com": (b"sk-ecdsa-sha2-nistp256@openssh.com", "sss"),
}


def _string(data: bytes) -> bytes:
    return struct.pack(">L", len(data)) + data


@dataclass(frozen=True)
class Certificate:
    """One certificate, as signed: what it certifies, for whom, when, and by which CA."""

    cert_type: bytes
    key_type: bytes
    nonce: bytes
    # The certified public key's own wire blob (its type, then its public fields).
    key_blob: bytes
    serial: int
    kind: int
    key_id: str
    principals: tuple[str, ...]
    valid_after: int
    valid_before: int
    critical_options: dict[str, bytes] = field(default_factory=dict)
    extensions: dict[str, bytes] = field(default_factory=dict)
    signature_key: bytes = b""
    signature: bytes = b""
    # Everything the CA signed: the certificate up to, not including, the signature.
    signed_data: bytes = b""

    def valid_at(self, now: float) -> bool:
        """Whether C{now} (seconds since the epoch) is inside the validity window."""
        return self.valid_after <= now < self.valid_before or (
            self.valid_before == FOREVER and self.valid_after <= now
        )

    def allows_principal(self, name: str) -> bool:
        """An empty principals list means any (OpenSSH accepts it for user certificates only
        when the CA line names principals=; callers decide)."""
        return name in self.principals

    def describe(self) -> str:
        """C{ID "key id" serial N}, as sshd names a certificate in its log."""
        return f'ID "{self.key_id[:64]}" serial {self.serial}'


def _options(data: bytes, what: str) -> dict[str, bytes]:
    reader = Reader(data, what)
    found: dict[str, bytes] = {}
    previous = b""
    while reader.remaining:
        name = reader.string()
        value = reader.string()
        if name <= previous and previous:
            raise MalformedPacket(what, "options out of order or repeated")
        previous = name
        found[name.decode("utf-8", "replace")] = value
    return found


def parse_certificate(blob: bytes) -> Certificate:
    """
    Parse a certificate blob (as in a C{-cert.pub} file, base64-decoded, or on the wire).

    @raise MalformedPacket: not a well-formed certificate of a type we know.
    """
    reader = Reader(blob, "certificate")
    cert_type = reader.string()
    known = CERT_TYPES.get(cert_type)
    if known is None:
        raise MalformedPacket("certificate", f"unknown type {cert_type[:64]!r}")
    key_type, fields = known
    nonce = reader.string()
    key_fields = [reader.string() for _ in fields]
    serial = reader.uint64()
    kind = reader.uint32()
    key_id = reader.string().decode("utf-8", "replace")
    principals_data = reader.string()
    valid_after = reader.uint64()
    valid_before = reader.uint64()
    critical = _options(reader.string(), "certificate critical options")
    extensions = _options(reader.string(), "certificate extensions")
    reader.string()  # reserved
    signature_key = reader.string()
    signed_length = reader.offset
    signature = reader.string()
    if reader.remaining:
        raise MalformedPacket("certificate", "bytes after the signature")
    principals = []
    names = Reader(principals_data, "certificate principals")
    while names.remaining:
        principals.append(names.string().decode("utf-8", "replace"))
    if kind not in (USER_CERT, HOST_CERT):
        raise MalformedPacket("certificate", f"unknown certificate type {kind}")
    return Certificate(
        cert_type=cert_type,
        key_type=key_type,
        nonce=nonce,
        key_blob=_string(key_type) + b"".join(_string(f) for f in key_fields),
        serial=serial,
        kind=kind,
        key_id=key_id,
        principals=tuple(principals),
        valid_after=valid_after,
        valid_before=valid_before,
        critical_options=critical,
        extensions=extensions,
        signature_key=signature_key,
        signature=signature,
        signed_data=blob[:signed_length],
    )
