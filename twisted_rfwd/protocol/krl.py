"""
sshd's C{RevokedKeys}: a file of public keys, or an OpenSSH key revocation list (KRL, made by
C{ssh-keygen -k}; format in OpenSSH's PROTOCOL.krl).  Pure: no Twisted, no key objects (keys
are compared as wire blobs, hashes with hashlib).

The rules, as OpenSSH's C{krl.c} and C{authfile.c} (C{sshkey_check_revoked}) have them:

  - A file that starts with C{SSHKRL\\n\\0} is a KRL; anything else is read as public key lines
    (comments, blank lines and lines that are no key are skipped).  A listed key revokes that
    key, and every certificate of that key or signed by it.
  - A KRL revokes plain keys (by blob, SHA-1 or SHA-256 of the blob) and certificates by CA:
    serial lists, ranges and bitmaps, and key IDs; a section whose CA is empty applies to every
    CA.  Serial 0 is never revoked by serial (it is what a CA writes when it sets none).  A
    certificate is revoked also when its own key or its CA's key is.
  - A KRL that cannot be parsed (a critical extension we don't know, a signature section, which
    OpenSSH 9.4 and later refuse too) is an error: sshd then refuses every key, and so do we.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass, field

from twisted_rfwd.errors import MalformedPacket
from twisted_rfwd.protocol.certificates import CERT_TYPES, Certificate, parse_certificate
from twisted_rfwd.protocol.wire import Reader

__all__ = [
    "KRL_MAGIC",
    "KeyRevocationList",
    "Revocations",
    "RevokedCertificates",
    "listed_keys",
    "parse_krl",
    "parse_revoked_keys",
]

KRL_MAGIC = b"SSHKRL\n\x00"
_FORMAT_VERSION = 1

_SECTION_CERTIFICATES = 1
_SECTION_EXPLICIT_KEY = 2
_SECTION_FINGERPRINT_SHA1 = 3
_SECTION_SIGNATURE = 4
_SECTION_FINGERPRINT_SHA256 = 5
_SECTION_EXTENSION = 255

_CERT_SERIAL_LIST = 0x20
_CERT_SERIAL_RANGE = 0x21
_CERT_SERIAL_BITMAP = 0x22
_CERT_KEY_ID = 0x23
_CERT_EXTENSION = 0x39


class _Reader(Reader):
    """L{Reader} with the KRL's one-byte section types."""

    __slots__ = ()

    def byte(self) -> int:
        return self._take(1)[0]


@dataclass
class RevokedCertificates:
    """The certificates one CA (or every CA) has revoked: serial ranges and key IDs."""

    ranges: list[tuple[int, int]] = field(default_factory=list)
    key_ids: set[str] = field(default_factory=set)

    def revokes(self, certificate: Certificate) -> str | None:
        if certificate.key_id in self.key_ids:
            return f'key ID "{certificate.key_id[:64]}" is revoked'
        serial = certificate.serial
        if serial != 0 and any(low <= serial <= high for low, high in self.ranges):
            return f"serial {serial} is revoked"
        return None


@dataclass
class KeyRevocationList:
    """A parsed KRL.  C{by_ca} is keyed by the CA key's blob; C{b""} means every CA."""

    version: int = 0
    comment: str = ""
    by_ca: dict[bytes, RevokedCertificates] = field(default_factory=dict)
    keys: set[bytes] = field(default_factory=set)
    sha1: set[bytes] = field(default_factory=set)
    sha256: set[bytes] = field(default_factory=set)

    def revokes_key(self, blob: bytes) -> bool:
        """Whether the plain key C{blob} is revoked (explicitly or by hash)."""
        return (
            blob in self.keys
            or hashlib.sha1(blob).digest() in self.sha1
            or hashlib.sha256(blob).digest() in self.sha256
        )

    def revokes_certificate(self, certificate: Certificate) -> str | None:
        for ca in (certificate.signature_key, b""):
            revoked = self.by_ca.get(ca)
            if revoked is not None:
                reason = revoked.revokes(certificate)
                if reason is not None:
                    return reason
        return None


@dataclass(frozen=True)
class Revocations:
    """What a C{RevokedKeys} file revokes: a KRL, or plain keys listed one a line."""

    krl: KeyRevocationList | None = None
    keys: frozenset[bytes] = frozenset()

    def refusal(self, blob: bytes, certificate: Certificate | None = None) -> str | None:
        """
        Why the key C{blob} (or the certificate, whose own key and CA are checked too) is
        revoked, or None.
        """
        plain = certificate.key_blob if certificate is not None else blob
        if self._key_revoked(plain):
            return "the key is revoked"
        if certificate is None:
            return None
        if self._key_revoked(certificate.signature_key):
            return "the certificate's CA key is revoked"
        if self.krl is not None:
            reason = self.krl.revokes_certificate(certificate)
            if reason is not None:
                return f"certificate {reason}"
        return None

    def _key_revoked(self, blob: bytes) -> bool:
        if self.krl is not None:
            return self.krl.revokes_key(blob)
        return blob in self.keys


def parse_revoked_keys(data: bytes) -> Revocations:
    """
    A C{RevokedKeys} file's contents: a KRL if it starts with the KRL magic, else public keys
    one a line.

    @raise MalformedPacket: a KRL that cannot be used.
    """
    if data.startswith(KRL_MAGIC):
        return Revocations(krl=parse_krl(data))
    return Revocations(keys=frozenset(listed_keys(data)))


def listed_keys(data: bytes) -> set[bytes]:
    """
    sshd's C{sshkey_in_file}: the blob of every line that is a public key (a certificate's
    own key for a certificate line); other lines are skipped.
    """
    found: set[bytes] = set()
    for raw in data.splitlines():
        fields = raw.split()
        if len(fields) < 2 or fields[0].startswith(b"#"):
            continue
        try:
            blob = base64.b64decode(fields[1], validate=True)
            stated = Reader(blob, "key").string()
        except (binascii.Error, ValueError, MalformedPacket):
            continue
        if stated != fields[0]:
            continue
        if stated in CERT_TYPES:
            try:
                blob = parse_certificate(blob).key_blob
            except MalformedPacket:
                continue
        found.add(blob)
    return found


def parse_krl(data: bytes) -> KeyRevocationList:
    """
    Parse a KRL (PROTOCOL.krl, format version 1).

    @raise MalformedPacket: not a KRL, a version or critical extension we don't know, a
        signature section, or a malformed section.
    """
    if not data.startswith(KRL_MAGIC):
        raise MalformedPacket("KRL", "bad magic")
    reader = _Reader(data[len(KRL_MAGIC) :], "KRL")
    version = reader.uint32()
    if version != _FORMAT_VERSION:
        raise MalformedPacket("KRL", f"unsupported format version {version}")
    krl = KeyRevocationList(version=reader.uint64())
    reader.uint64()  # generated date
    reader.uint64()  # flags
    reader.string()  # reserved
    krl.comment = reader.string().decode("utf-8", "replace")
    while reader.remaining:
        section = reader.byte()
        if section == _SECTION_SIGNATURE:
            raise MalformedPacket("KRL", "signed KRLs are not supported (nor by OpenSSH 9.4+)")
        body = _Reader(reader.string(), "KRL section")
        if section == _SECTION_CERTIFICATES:
            _certificates_section(body, krl)
        elif section == _SECTION_EXPLICIT_KEY:
            krl.keys.update(_strings(body, "explicit key"))
        elif section == _SECTION_FINGERPRINT_SHA1:
            krl.sha1.update(_strings(body, "SHA-1 fingerprint"))
        elif section == _SECTION_FINGERPRINT_SHA256:
            krl.sha256.update(_strings(body, "SHA-256 fingerprint"))
        elif section == _SECTION_EXTENSION:
            _extension(body, "KRL extension")
        else:
            raise MalformedPacket("KRL", f"unknown section type {section}")
    return krl


def _strings(body: Reader, what: str) -> list[bytes]:
    found = []
    while body.remaining:
        found.append(body.string())
    if not found:
        raise MalformedPacket("KRL", f"empty {what} section")
    return found


def _extension(body: Reader, what: str) -> None:
    """An extension: ignored unless critical (none is known)."""
    name = body.string()
    critical = body.boolean()
    body.string()
    if critical:
        raise MalformedPacket("KRL", f"unsupported critical {what} {name[:64]!r}")


def _certificates_section(body: _Reader, krl: KeyRevocationList) -> None:
    ca_key = body.string()
    body.string()  # reserved
    revoked = krl.by_ca.setdefault(ca_key, RevokedCertificates())
    while body.remaining:
        kind = body.byte()
        sub = _Reader(body.string(), "KRL certificate section")
        if kind == _CERT_SERIAL_LIST:
            while sub.remaining:
                serial = sub.uint64()
                revoked.ranges.append((serial, serial))
        elif kind == _CERT_SERIAL_RANGE:
            low, high = sub.uint64(), sub.uint64()
            if low > high or low == 0:
                raise MalformedPacket("KRL", f"bad serial range {low}-{high}")
            revoked.ranges.append((low, high))
        elif kind == _CERT_SERIAL_BITMAP:
            offset = sub.uint64()
            bits = int.from_bytes(sub.string(), "big")
            index = 0
            while bits:
                if bits & 1:
                    revoked.ranges.append((offset + index, offset + index))
                bits >>= 1
                index += 1
        elif kind == _CERT_KEY_ID:
            revoked.key_ids.update(s.decode("utf-8", "replace") for s in _strings(sub, "key ID"))
        elif kind == _CERT_EXTENSION:
            _extension(sub, "KRL certificate extension")
        else:
            raise MalformedPacket("KRL", f"unknown certificate section type {kind}")
        if sub.remaining:
            raise MalformedPacket("KRL", "bytes after a certificate section")
