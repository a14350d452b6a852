"""
A software FIDO authenticator for the tests: it signs as a security key would, with the flags
and counter a test chooses.
"""

from __future__ import annotations

import base64
import struct

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from twisted_rfwd.protocol.sk import (
    FLAG_USER_PRESENT,
    FLAG_USER_VERIFIED,
    SK_ECDSA,
    SK_ED25519,
    sk_signed_data,
)
from twisted_rfwd.protocol.wire import pack_string

PRESENT = FLAG_USER_PRESENT


VERIFIED = FLAG_USER_PRESENT | FLAG_USER_VERIFIED


def mpint(value: int) -> bytes:
    raw = value.to_bytes((value.bit_length() + 8) // 8, "big")
    return pack_string(raw)


class Authenticator:
    """
    A FIDO token in software: it signs C{SHA256(application) || flags || counter ||
    SHA256(message)} and returns the signature as ssh puts it in a userauth request.
    """

    def __init__(self, kind: str = "ed25519", application: bytes = b"ssh:") -> None:
        self.kind = kind
        self.application = application
        self.counter = 0
        self._ed: ed25519.Ed25519PrivateKey | None = None
        self._ec: ec.EllipticCurvePrivateKey | None = None
        if kind == "ed25519":
            self._ed = ed25519.Ed25519PrivateKey.generate()
        else:
            self._ec = ec.generate_private_key(ec.SECP256R1())

    @property
    def key_type(self) -> bytes:
        return SK_ED25519 if self.kind == "ed25519" else SK_ECDSA

    def public_blob(self) -> bytes:
        """The sk public key blob (PROTOCOL.u2f)."""
        if self._ed is not None:
            raw = self._ed.public_key().public_bytes(
                serialization.Encoding.Raw, serialization.PublicFormat.Raw
            )
            return pack_string(SK_ED25519) + pack_string(raw) + pack_string(self.application)
        assert self._ec is not None
        point = self._ec.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return (
            pack_string(SK_ECDSA)
            + pack_string(b"nistp256")
            + pack_string(point)
            + pack_string(self.application)
        )

    def line(self, options: str = "", comment: str = "token") -> bytes:
        """An authorized_keys line for this key."""
        text = f"{self.key_type.decode()} {base64.b64encode(self.public_blob()).decode()} {comment}"
        return (f"{options} {text}" if options else text).encode()

    def sign(
        self,
        message: bytes,
        flags: int = PRESENT,
        *,
        application: bytes | None = None,
        sig_type: bytes | None = None,
    ) -> bytes:
        """Sign as the token would (counting up), in the userauth request's wire format."""
        self.counter += 1
        app = self.application if application is None else application
        signed = sk_signed_data(app, flags, self.counter, message)
        if self._ed is not None:
            raw = self._ed.sign(signed)
        else:
            assert self._ec is not None
            r, s = decode_dss_signature(self._ec.sign(signed, ec.ECDSA(hashes.SHA256())))
            raw = mpint(r) + mpint(s)
        return (
            pack_string(sig_type or self.key_type)
            + pack_string(raw)
            + struct.pack(">BL", flags, self.counter)
        )
