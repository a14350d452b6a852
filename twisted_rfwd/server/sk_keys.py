"""
Checking a FIDO security key's signature on a login, as sshd does (C{ssh-ed25519-sk.c},
C{ssh-ecdsa-sk.c}, C{auth2-pubkey.c}): the signature over what the authenticator signed (see
L{twisted_rfwd.protocol.sk}), then the flags the key's options require.

Conch parses these keys (C{Key.fromString}) but its C{Key.verify} reads past the flags and
counter and never looks at them, so a signature made without touching the token would pass:
verification is done here instead, with C{cryptography}, for plain keys and certificates alike.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from twisted.cred.error import UnauthorizedLogin

from twisted_rfwd.errors import MalformedPacket
from twisted_rfwd.protocol.sk import (
    SK_ECDSA,
    SK_ED25519,
    SKPublicKey,
    SKRequirements,
    SKSignature,
    parse_ecdsa_signature,
    parse_sk_public_key,
    parse_sk_signature,
    sk_signed_data,
)

__all__ = ["SecurityKeyRefused", "verify_sk_signature"]


class SecurityKeyRefused(UnauthorizedLogin):
    """A security key's signature that does not verify, or lacks a flag the login requires."""


def verify_sk_signature(
    key_blob: bytes,
    signature: bytes,
    message: bytes,
    requirements: SKRequirements,
) -> SKSignature:
    """
    Check a userauth signature made by a security key.

    @param key_blob: the plain sk public key blob (for a certificate, its C{key_blob}).
    @param signature: the request's signature field, as sent (C{string type, string sig,
        byte flags, uint32 counter}); its type must be the plain key type, even for a
        certificate.
    @param message: what any key would sign (L{publickey_signed_data}).
    @param requirements: the flags this login needs (L{SKRequirements.for_key},
        L{SKRequirements.for_certificate}).
    @return: the signature, for its counter and flags (sshd logs the counter).
    @raise SecurityKeyRefused: with one line saying why, in sshd's words where it has some.
    """
    try:
        key = parse_sk_public_key(key_blob)
        parsed = parse_sk_signature(signature, key.key_type)
    except MalformedPacket as e:
        raise SecurityKeyRefused(str(e)) from None
    signed = sk_signed_data(key.application, parsed.flags, parsed.counter, message)
    if not _verifies(key, parsed, signed):
        raise SecurityKeyRefused("bad signature")
    refusal = requirements.refusal(parsed)
    if refusal is not None:
        raise SecurityKeyRefused(refusal)
    return parsed


def _verifies(key: SKPublicKey, signature: SKSignature, signed: bytes) -> bool:
    try:
        if key.key_type == SK_ED25519:
            ed25519.Ed25519PublicKey.from_public_bytes(key.public).verify(
                signature.signature, signed
            )
            return True
        if key.key_type == SK_ECDSA:
            r, s = parse_ecdsa_signature(signature.signature)
            point = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), key.public)
            point.verify(encode_dss_signature(r, s), signed, ec.ECDSA(hashes.SHA256()))
            return True
    except InvalidSignature:
        return False
    except ValueError as e:  # not a point on the curve, or not a key at all
        raise SecurityKeyRefused(f"unusable security key: {e}") from None
    raise SecurityKeyRefused(f"not a security key type: {key.key_type[:64]!r}")
