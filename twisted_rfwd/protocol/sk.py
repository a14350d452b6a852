"""
FIDO security keys (OpenSSH C{PROTOCOL.u2f}): the public key blobs of C{sk-ssh-ed25519@openssh.com}
and C{sk-ecdsa-sha2-nistp256@openssh.com}, their signatures as they travel in a userauth
request, the bytes the authenticator really signed, and which flags a login must carry.

Pure: no Twisted, no cryptography (L{twisted_rfwd.server.sk_keys} checks the signature itself).

The rules, as sshd applies them (C{auth2-pubkey.c}, C{auth-options.c}):
  - an authenticator signs C{SHA256(application) || flags || counter || SHA256(message)}, where
    the message is what any other key would sign (RFC 4252 section 7); Ed25519 signs those
    bytes, ECDSA their SHA-256;
  - flag C{0x01} (user present: the token was touched) is required unless the key's line says
    C{no-touch-required} (for a certificate: unless both the line, when there is one, and the
    certificate's C{no-touch-required} extension say so);
  - flag C{0x04} (user verified: PIN or biometric) is required when the line says
    C{verify-required}, or the certificate has the C{verify-required} critical option;
  - sshd's C{PubkeyAuthOptions touch-required / verify-required} impose either on every key.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from twisted_rfwd.errors import MalformedPacket
from twisted_rfwd.protocol.authorized_keys import KeyOptions
from twisted_rfwd.protocol.certificates import Certificate
from twisted_rfwd.protocol.wire import Reader

__all__ = [
    "FLAG_USER_PRESENT",
    "FLAG_USER_VERIFIED",
    "SK_ALGORITHMS",
    "SK_CERT_ALGORITHMS",
    "SK_ECDSA",
    "SK_ED25519",
    "SKPublicKey",
    "SKRequirements",
    "SKSignature",
    "is_sk_algorithm",
    "parse_ecdsa_signature",
    "parse_sk_public_key",
    "parse_sk_signature",
    "sk_signature_type",
    "sk_signed_data",
]

SK_ED25519 = b"sk-ssh-ed25519@openssh.com"
SK_ECDSA = b"sk-ecdsa-sha2-nistp256@openssh.com"
# Userauth algorithm names, in sshd's default PubkeyAcceptedAlgorithms order.
SK_ALGORITHMS: list[bytes] = [SK_ED25519, SK_ECDSA]
# A certificate's algorithm name -> the plain key type its signatures are made with.
SK_CERT_ALGORITHMS: dict[bytes, bytes] = {
    b"sk-ssh-ed25519-cert-v01@openssh.com": SK_ED25519,
    b"sk-ecdsa-sha2-nistp256-cert-v01@openssh.com": SK_ECDSA,
}

# The authenticator's flags (CTAP's "UP" and "UV" bits).
FLAG_USER_PRESENT = 0x01
FLAG_USER_VERIFIED = 0x04

_ED25519_KEY_BYTES = 32
_ED25519_SIGNATURE_BYTES = 64
# An mpint for a P-256 scalar: 32 bytes, plus a leading zero when the top bit is set.
_MAX_SCALAR_BYTES = 33


def is_sk_algorithm(algorithm: bytes) -> bool:
    """Whether a userauth algorithm name is a security key's (plain or certificate)."""
    return algorithm in SK_ALGORITHMS or algorithm in SK_CERT_ALGORITHMS


def sk_signature_type(algorithm: bytes) -> bytes:
    """
    The name a signature for C{algorithm} must carry: the algorithm itself for a plain key, the
    plain key's type for a certificate (sshd's C{sshkey_ssh_name_plain}).
    """
    return SK_CERT_ALGORITHMS.get(algorithm, algorithm)


@dataclass(frozen=True)
class SKPublicKey:
    """
    A security key's public half: its type, the raw public key (32 Ed25519 bytes, or a SEC1
    P-256 point) and the application (relying party) it was made for, usually C{ssh:}.
    """

    key_type: bytes
    public: bytes
    application: bytes


def _cstring(reader: Reader, what: str) -> bytes:
    """sshd reads names and applications as C strings: no NUL inside."""
    value = reader.string()
    if b"\x00" in value:
        raise MalformedPacket(what, "a NUL inside a string")
    return value


def parse_sk_public_key(blob: bytes) -> SKPublicKey:
    """
    Parse a plain security key blob (for a certificate, its L{Certificate.key_blob}).

    @raise MalformedPacket: not a well-formed sk-ssh-ed25519 or sk-ecdsa-sha2-nistp256 key.
    """
    what = "security key"
    reader = Reader(blob, what)
    key_type = reader.string()
    if key_type == SK_ED25519:
        public = reader.string()
        if len(public) != _ED25519_KEY_BYTES:
            raise MalformedPacket(what, f"an Ed25519 key of {len(public)} bytes")
    elif key_type == SK_ECDSA:
        curve = reader.string()
        if curve != b"nistp256":
            raise MalformedPacket(what, f"curve {curve[:32]!r} in a {SK_ECDSA.decode()} key")
        public = reader.string()
        if not public:
            raise MalformedPacket(what, "an empty EC point")
    else:
        raise MalformedPacket(what, f"not a security key type: {key_type[:64]!r}")
    application = _cstring(reader, what)
    if reader.remaining:
        raise MalformedPacket(what, "bytes after the application")
    return SKPublicKey(key_type, public, application)


@dataclass(frozen=True)
class SKSignature:
    """
    A security key's signature as sent in a userauth request: the signature type, the raw
    signature (64 Ed25519 bytes, or the ECDSA C{mpint r, mpint s} blob), and the flags and
    counter the authenticator reported (and signed).
    """

    sig_type: bytes
    signature: bytes
    flags: int
    counter: int

    @property
    def user_present(self) -> bool:
        return bool(self.flags & FLAG_USER_PRESENT)

    @property
    def user_verified(self) -> bool:
        return bool(self.flags & FLAG_USER_VERIFIED)


def parse_sk_signature(data: bytes, key_type: bytes) -> SKSignature:
    """
    Parse a signature made by a security key of C{key_type} (C{string type, string signature,
    byte flags, uint32 counter}).  The type must be the key's own (sshd refuses others, and
    the webauthn variant is not supported here).

    @raise MalformedPacket: garbled, of another type, or with bytes after the counter.
    """
    what = "security key signature"
    reader = Reader(data, what)
    sig_type = reader.string()
    if sig_type != key_type:
        raise MalformedPacket(
            what, f"a {sig_type[:64]!r} signature for a {key_type.decode('ascii', 'replace')} key"
        )
    signature = reader.string()
    flags = reader.rest()
    if len(flags) != 5:
        raise MalformedPacket(what, "no flags and counter" if len(flags) < 5 else "trailing bytes")
    if key_type == SK_ED25519 and len(signature) != _ED25519_SIGNATURE_BYTES:
        raise MalformedPacket(what, f"an Ed25519 signature of {len(signature)} bytes")
    if key_type == SK_ECDSA:
        parse_ecdsa_signature(signature)
    counter: int = struct.unpack(">L", flags[1:])[0]
    return SKSignature(sig_type, signature, flags[0], counter)


def _scalar(reader: Reader, what: str) -> int:
    raw = reader.string()
    if raw[:1] >= b"\x80":
        raise MalformedPacket(what, "a negative number")
    if len(raw) > _MAX_SCALAR_BYTES:
        raise MalformedPacket(what, f"a number of {len(raw)} bytes")
    return int.from_bytes(raw, "big")


def parse_ecdsa_signature(blob: bytes) -> tuple[int, int]:
    """The C{(r, s)} of an RFC 5656 ECDSA signature blob (C{mpint r, mpint s}, nothing after)."""
    what = "ECDSA signature"
    reader = Reader(blob, what)
    r = _scalar(reader, what)
    s = _scalar(reader, what)
    if reader.remaining:
        raise MalformedPacket(what, "bytes after s")
    return r, s


def sk_signed_data(application: bytes, flags: int, counter: int, message: bytes) -> bytes:
    """
    What the authenticator signed for C{message}: C{SHA256(application) || flags || counter ||
    SHA256(message)} (C{PROTOCOL.u2f}, "SSH U2F signatures"; no extensions are defined).
    """
    return (
        hashlib.sha256(application).digest()
        + struct.pack(">BL", flags, counter)
        + hashlib.sha256(message).digest()
    )


@dataclass(frozen=True)
class SKRequirements:
    """Which authenticator flags a login with a security key must carry."""

    touch_required: bool = True
    verify_required: bool = False

    @classmethod
    def for_key(cls, options: KeyOptions) -> SKRequirements:
        """A plain key's line in authorized_keys: C{no-touch-required}, C{verify-required}."""
        return cls(options.touch_required, options.verify_required)

    @classmethod
    def for_certificate(
        cls, certificate: Certificate, line: KeyOptions | None = None
    ) -> SKRequirements:
        """
        A certificate, with the options of the line that accepted it (a C{cert-authority} line
        or an AuthorizedPrincipalsFile line), or None (TrustedUserCAKeys alone).  As sshd's
        C{sshauthopt_merge}: no touch only when both say so, verification when either does.
        """
        own = cls(
            touch_required="no-touch-required" not in certificate.extensions,
            verify_required="verify-required" in certificate.critical_options,
        )
        if line is None:
            return own
        return cls(
            touch_required=own.touch_required or line.touch_required,
            verify_required=own.verify_required or line.verify_required,
        )

    def with_server_options(self, touch_required: bool, verify_required: bool) -> SKRequirements:
        """sshd's C{PubkeyAuthOptions}: either flag, when set, applies to every key."""
        return SKRequirements(
            self.touch_required or touch_required, self.verify_required or verify_required
        )

    def refusal(self, signature: SKSignature) -> str | None:
        """Why C{signature} does not do, in sshd's words, or None if its flags satisfy us."""
        if self.touch_required and not signature.user_present:
            return "user presence (authenticator touch) requirement not met"
        if self.verify_required and not signature.user_verified:
            return "user verification requirement not met"
        return None
