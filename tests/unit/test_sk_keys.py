"""
Tests for FIDO security keys: L{twisted_rfwd.protocol.sk} (blobs, signatures, what was signed,
which flags a login needs), L{twisted_rfwd.server.sk_keys} (verification) and the
C{no-touch-required} / C{verify-required} options of authorized_keys.

No hardware: L{Authenticator} is a P-256 or Ed25519 key plus an application string that signs
as a FIDO token does, with the flags and counter a test chooses.
"""

from __future__ import annotations

import hashlib
import struct

from twisted.conch.ssh.keys import Key
from twisted.trial.unittest import SynchronousTestCase

from tests.support.sk import PRESENT, VERIFIED, Authenticator, mpint
from twisted_rfwd.errors import MalformedPacket
from twisted_rfwd.protocol.authorized_keys import KeyOptions, parse_authorized_lines
from twisted_rfwd.protocol.certificates import USER_CERT, Certificate
from twisted_rfwd.protocol.sk import (
    SK_ECDSA,
    SK_ED25519,
    SKRequirements,
    SKSignature,
    is_sk_algorithm,
    parse_sk_public_key,
    parse_sk_signature,
    sk_signature_type,
    sk_signed_data,
)
from twisted_rfwd.protocol.wire import pack_string
from twisted_rfwd.server.authorized_keys import parse_authorized_keys
from twisted_rfwd.server.sk_keys import SecurityKeyRefused, verify_sk_signature

MESSAGE = b"what a publickey userauth request signs"


def retouched(signature: bytes, flags: int | None = None, counter: int | None = None) -> bytes:
    """C{signature} with its flags or counter changed after signing (the last five bytes)."""
    old_flags, old_counter = struct.unpack(">BL", signature[-5:])
    return signature[:-5] + struct.pack(
        ">BL",
        old_flags if flags is None else flags,
        old_counter if counter is None else counter,
    )


def certificate(extensions: dict[str, bytes], critical: dict[str, bytes]) -> Certificate:
    """A user certificate with only the options that matter to security keys."""
    return Certificate(
        cert_type=b"sk-ssh-ed25519-cert-v01@openssh.com",
        key_type=SK_ED25519,
        nonce=b"",
        key_blob=b"",
        serial=1,
        kind=USER_CERT,
        key_id="token",
        principals=("alice",),
        valid_after=0,
        valid_before=2**64 - 1,
        critical_options=critical,
        extensions=extensions,
    )


class PublicKeyTests(SynchronousTestCase):
    """The sk public key blobs: what is read from them and what is refused."""

    def test_ed25519_blob(self) -> None:
        """An sk-ssh-ed25519 blob gives its 32-byte key and its application."""
        token = Authenticator("ed25519", b"ssh:work")
        key = parse_sk_public_key(token.public_blob())
        self.assertEqual(key.key_type, SK_ED25519)
        self.assertEqual(len(key.public), 32)
        self.assertEqual(key.application, b"ssh:work")

    def test_ecdsa_blob(self) -> None:
        """An sk-ecdsa blob gives its uncompressed P-256 point and its application."""
        token = Authenticator("ecdsa")
        key = parse_sk_public_key(token.public_blob())
        self.assertEqual(key.key_type, SK_ECDSA)
        self.assertEqual((len(key.public), key.public[0]), (65, 4))
        self.assertEqual(key.application, b"ssh:")

    def test_malformed_blobs(self) -> None:
        """Another curve, a short Ed25519 key, a NUL in the application, trailing bytes, a
        plain key: all refused as malformed."""
        token = Authenticator("ecdsa")
        point = parse_sk_public_key(token.public_blob()).public
        bad = [
            pack_string(SK_ECDSA)
            + pack_string(b"nistp384")
            + pack_string(point)
            + pack_string(b"ssh:"),
            pack_string(SK_ED25519) + pack_string(bytes(31)) + pack_string(b"ssh:"),
            pack_string(SK_ED25519) + pack_string(bytes(32)) + pack_string(b"ssh:\x00x"),
            Authenticator().public_blob() + b"\x00",
            pack_string(b"ssh-ed25519") + pack_string(bytes(32)),
        ]
        for blob in bad:
            self.assertRaises(MalformedPacket, parse_sk_public_key, blob)

    def test_conch_loads_the_same_key(self) -> None:
        """Conch's key parser (used to load authorized_keys) keeps the blob byte for byte."""
        for kind in ("ed25519", "ecdsa"):
            token = Authenticator(kind)
            key = Key.fromString(token.public_blob())
            self.assertEqual(key.blob(), token.public_blob())
            self.assertEqual(key.sshType(), token.key_type)

    def test_algorithm_names(self) -> None:
        """Plain and certificate sk algorithms are recognised; a certificate signs with the
        plain key's signature type."""
        self.assertTrue(is_sk_algorithm(SK_ED25519))
        self.assertTrue(is_sk_algorithm(b"sk-ecdsa-sha2-nistp256-cert-v01@openssh.com"))
        self.assertFalse(is_sk_algorithm(b"ssh-ed25519"))
        self.assertEqual(sk_signature_type(b"sk-ssh-ed25519-cert-v01@openssh.com"), SK_ED25519)
        self.assertEqual(sk_signature_type(SK_ECDSA), SK_ECDSA)


class SignedDataTests(SynchronousTestCase):
    """The bytes an authenticator signs, and the signature's wire form."""

    def test_layout(self) -> None:
        """SHA256(application), the flags byte, the counter (uint32), SHA256(message)."""
        data = sk_signed_data(b"ssh:", 0x05, 0x01020304, b"msg")
        self.assertEqual(len(data), 69)
        self.assertEqual(data[:32], hashlib.sha256(b"ssh:").digest())
        self.assertEqual(data[32:37], b"\x05\x01\x02\x03\x04")
        self.assertEqual(data[37:], hashlib.sha256(b"msg").digest())

    def test_signature_fields(self) -> None:
        """The flags and counter are read from after the signature."""
        token = Authenticator()
        token.counter = 41
        parsed = parse_sk_signature(token.sign(MESSAGE, VERIFIED), SK_ED25519)
        self.assertEqual((parsed.flags, parsed.counter), (VERIFIED, 42))
        self.assertTrue(parsed.user_present and parsed.user_verified)

    def test_malformed_signatures(self) -> None:
        """No counter, trailing bytes, another type, a short Ed25519 signature: refused."""
        good = Authenticator().sign(MESSAGE)
        bad = [
            good[:-1],
            good + b"\x00",
            Authenticator("ecdsa").sign(MESSAGE),
            pack_string(SK_ED25519) + pack_string(bytes(63)) + b"\x01" + bytes(4),
        ]
        for signature in bad:
            self.assertRaises(MalformedPacket, parse_sk_signature, signature, SK_ED25519)


class VerifyTests(SynchronousTestCase):
    """L{verify_sk_signature}, for each kind of security key."""

    kind = "ed25519"

    def setUp(self) -> None:
        self.token = Authenticator(self.kind)
        self.blob = self.token.public_blob()

    def verify(self, signature: bytes, requirements: SKRequirements | None = None) -> SKSignature:
        return verify_sk_signature(self.blob, signature, MESSAGE, requirements or SKRequirements())

    def refusal(self, signature: bytes, requirements: SKRequirements | None = None) -> str:
        error = self.assertRaises(SecurityKeyRefused, self.verify, signature, requirements)
        return str(error)

    def test_touched(self) -> None:
        """A signature made with the token touched verifies; its counter is returned."""
        parsed = self.verify(self.token.sign(MESSAGE))
        self.assertEqual(parsed.counter, 1)
        self.assertTrue(parsed.user_present)

    def test_not_touched(self) -> None:
        """Without the user-present flag the signature is refused, by default."""
        self.assertEqual(
            self.refusal(self.token.sign(MESSAGE, flags=0)),
            "user presence (authenticator touch) requirement not met",
        )

    def test_no_touch_required(self) -> None:
        """A key whose line says no-touch-required logs in without the user-present flag."""
        options = KeyOptions(touch_required=False)
        self.verify(self.token.sign(MESSAGE, flags=0), SKRequirements.for_key(options))

    def test_verify_required(self) -> None:
        """verify-required: touch alone is refused; touch plus user verification verifies."""
        requirements = SKRequirements.for_key(KeyOptions(verify_required=True))
        self.assertEqual(
            self.refusal(self.token.sign(MESSAGE, PRESENT), requirements),
            "user verification requirement not met",
        )
        self.verify(self.token.sign(MESSAGE, VERIFIED), requirements)

    def test_server_touch_required(self) -> None:
        """PubkeyAuthOptions touch-required overrides a line's no-touch-required."""
        requirements = SKRequirements(touch_required=False).with_server_options(True, False)
        self.assertIn("presence", self.refusal(self.token.sign(MESSAGE, 0), requirements))

    def test_wrong_application(self) -> None:
        """A signature for another application (relying party) does not verify."""
        signature = self.token.sign(MESSAGE, application=b"ssh:other")
        self.assertEqual(self.refusal(signature), "bad signature")

    def test_tampered_flags(self) -> None:
        """Flags changed after signing (user verified added) break the signature."""
        signature = retouched(self.token.sign(MESSAGE, PRESENT), flags=VERIFIED)
        self.assertEqual(self.refusal(signature), "bad signature")

    def test_flag_added_to_untouched_signature(self) -> None:
        """Setting user-present on an untouched signature does not make it pass."""
        signature = retouched(self.token.sign(MESSAGE, 0), flags=PRESENT)
        self.assertEqual(self.refusal(signature), "bad signature")

    def test_tampered_counter(self) -> None:
        """A counter changed after signing breaks the signature."""
        signature = retouched(self.token.sign(MESSAGE), counter=1000)
        self.assertEqual(self.refusal(signature), "bad signature")

    def test_other_message(self) -> None:
        """A signature over another message (another session, user, key) does not verify."""
        signature = self.token.sign(b"another session's request")
        self.assertEqual(self.refusal(signature), "bad signature")

    def test_other_token(self) -> None:
        """Another token's signature, even for the same application, does not verify."""
        signature = Authenticator(self.kind).sign(MESSAGE)
        self.assertEqual(self.refusal(signature), "bad signature")

    def test_plain_signature_type(self) -> None:
        """A signature labelled with the plain (non-sk) algorithm is refused."""
        plain = b"ssh-ed25519" if self.kind == "ed25519" else b"ecdsa-sha2-nistp256"
        self.assertIn("signature for a", self.refusal(self.token.sign(MESSAGE, sig_type=plain)))

    def test_webauthn_refused(self) -> None:
        """webauthn-sk signatures are not supported: refused, not misread."""
        signature = self.token.sign(
            MESSAGE, sig_type=b"webauthn-sk-ecdsa-sha2-nistp256@openssh.com"
        )
        self.assertIn("webauthn", self.refusal(signature))

    def test_garbage(self) -> None:
        """Garbage for a signature is refused with a one-line reason."""
        self.assertIn("malformed", self.refusal(b"\x00\x00\x00"))


class ECDSAVerifyTests(VerifyTests):
    """The same, for sk-ecdsa-sha2-nistp256."""

    kind = "ecdsa"

    def test_point_off_the_curve(self) -> None:
        """A key whose point is not on P-256 is refused, not crashed on."""
        self.blob = (
            pack_string(SK_ECDSA)
            + pack_string(b"nistp256")
            + pack_string(b"\x04" + bytes(64))
            + pack_string(b"ssh:")
        )
        self.assertIn("unusable security key", self.refusal(self.token.sign(MESSAGE)))

    def test_negative_scalar(self) -> None:
        """An mpint with its sign bit set is refused as malformed."""
        signature = (
            pack_string(SK_ECDSA)
            + pack_string(pack_string(b"\x80" + bytes(31)) + mpint(1))
            + b"\x01"
            + bytes(4)
        )
        self.assertIn("negative", self.refusal(signature))


class RequirementTests(SynchronousTestCase):
    """Which flags a login needs: key lines, certificates, and both, as sshd merges them."""

    def test_defaults(self) -> None:
        """By default a touch is required and user verification is not."""
        self.assertEqual(SKRequirements.for_key(KeyOptions()), SKRequirements(True, False))

    def test_certificate_alone(self) -> None:
        """TrustedUserCAKeys: the certificate's no-touch-required extension and
        verify-required critical option decide."""
        self.assertEqual(
            SKRequirements.for_certificate(certificate({}, {})), SKRequirements(True, False)
        )
        relaxed = certificate({"no-touch-required": b""}, {"verify-required": b""})
        self.assertEqual(SKRequirements.for_certificate(relaxed), SKRequirements(False, True))

    def test_certificate_and_line(self) -> None:
        """With a line too: no touch only if both allow it; verification if either asks."""
        relaxed = certificate({"no-touch-required": b""}, {})
        self.assertEqual(
            SKRequirements.for_certificate(relaxed, KeyOptions()), SKRequirements(True, False)
        )
        self.assertEqual(
            SKRequirements.for_certificate(relaxed, KeyOptions(touch_required=False)),
            SKRequirements(False, False),
        )
        strict = certificate({}, {})
        self.assertEqual(
            SKRequirements.for_certificate(
                strict, KeyOptions(touch_required=False, verify_required=True)
            ),
            SKRequirements(True, True),
        )


class OptionTests(SynchronousTestCase):
    """The options in authorized_keys lines."""

    def options(self, text: str) -> KeyOptions:
        line = Authenticator().line(text)
        lines, warnings = parse_authorized_lines(line + b"\n", "keys")
        self.assertEqual(warnings, [])
        return lines[0].options

    def test_flags(self) -> None:
        """no-touch-required / touch-required and verify-required / no-verify-required."""
        self.assertEqual(
            (self.options("").touch_required, self.options("").verify_required), (True, False)
        )
        self.assertFalse(self.options("no-touch-required").touch_required)
        self.assertTrue(self.options("no-touch-required,touch-required").touch_required)
        self.assertTrue(self.options("verify-required").verify_required)
        self.assertFalse(self.options("verify-required,no-verify-required").verify_required)

    def test_restrict_keeps_them(self) -> None:
        """restrict does not touch them (sshd's restrict leaves them alone)."""
        options = self.options('restrict,no-touch-required,verify-required,permitlisten="8080"')
        self.assertFalse(options.touch_required)
        self.assertTrue(options.verify_required)
        self.assertFalse(options.port_forwarding)

    def test_loaded_as_keys(self) -> None:
        """The server's authorized_keys loader accepts sk lines of both kinds, options kept."""
        text = (
            Authenticator().line("no-touch-required")
            + b"\n"
            + Authenticator("ecdsa").line("verify-required")
            + b"\n"
        )
        keys, warnings = parse_authorized_keys(text, "keys")
        self.assertEqual(warnings, [])
        self.assertEqual([k.key.sshType() for k in keys], [SK_ED25519, SK_ECDSA])
        self.assertEqual(
            [(k.options.touch_required, k.options.verify_required) for k in keys],
            [(False, False), (True, True)],
        )
