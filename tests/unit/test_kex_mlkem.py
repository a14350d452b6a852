"""
The encodings of C{mlkem768x25519-sha256} (draft-ietf-sshm-mlkem-hybrid-kex, OpenSSH's
kexmlkem768x25519.c): message lengths, K = SHA-256(K_PQ || K_CL) as a string, the exchange hash,
and garbage refused as the peer's fault.
"""

from __future__ import annotations

import hashlib

from cryptography.hazmat.primitives.asymmetric import mlkem, x25519
from twisted.trial.unittest import SynchronousTestCase

from twisted_rfwd.errors import MalformedPacket
from twisted_rfwd.protocol.algorithms import KEY_EXCHANGES
from twisted_rfwd.protocol.kex import (
    C_INIT_SIZE,
    MLKEM768X25519_SHA256,
    S_REPLY_SIZE,
    HybridClient,
    exchange_hash,
    hybrid_server_reply,
    mlkem_available,
    shared_secret,
    split_client_init,
    split_server_reply,
)
from twisted_rfwd.protocol.wire import pack_string

# RFC 7748 section 6.1: Alice's and Bob's X25519 keys and their shared secret.
ALICE = bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
ALICE_PUBLIC = bytes.fromhex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
BOB = bytes.fromhex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb")
BOB_PUBLIC = bytes.fromhex("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
X25519_SHARED = bytes.fromhex("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742")
SEED = bytes(range(64))
# A point of order 8 on Curve25519 (RFC 7748 section 7): it makes an all-zero secret.
LOW_ORDER = bytes(32)


def _x25519(private: bytes) -> x25519.X25519PrivateKey:
    return x25519.X25519PrivateKey.from_private_bytes(private)


class AvailabilityTests(SynchronousTestCase):
    """The method is offered first, as OpenSSH 10 orders it."""

    def test_mlkem_is_first_then_curve25519(self) -> None:
        """With ML-KEM in cryptography, the default list starts mlkem768x25519, curve25519."""
        self.assertTrue(mlkem_available())
        self.assertEqual(
            KEY_EXCHANGES[:3],
            [MLKEM768X25519_SHA256, b"curve25519-sha256", b"curve25519-sha256@libssh.org"],
        )
        self.assertNotIn(b"sntrup761x25519-sha512", KEY_EXCHANGES)


class EncodingTests(SynchronousTestCase):
    """C_INIT, S_REPLY and K as the draft and OpenSSH lay them out."""

    def test_client_init_is_encapsulation_key_then_x25519(self) -> None:
        """C_INIT: the 1184-byte ML-KEM-768 encapsulation key, then the 32-byte X25519 key."""
        client = HybridClient(mlkem_seed=SEED, x25519_key=_x25519(ALICE))
        expected_key = mlkem.MLKEM768PrivateKey.from_seed_bytes(SEED).public_key()
        self.assertEqual(len(client.c_init), C_INIT_SIZE)
        self.assertEqual(C_INIT_SIZE, 1216)
        self.assertEqual(client.c_init[:1184], expected_key.public_bytes_raw())
        self.assertEqual(client.c_init[1184:], ALICE_PUBLIC)

    def test_known_answer(self) -> None:
        """
        With RFC 7748's keys on both sides, K is the string of SHA-256 over the ML-KEM secret
        (recovered here with the client's key from its seed) followed by RFC 7748's shared
        secret, and both ends reach it.
        """
        client = HybridClient(mlkem_seed=SEED, x25519_key=_x25519(ALICE))
        s_reply, server_k = hybrid_server_reply(client.c_init, x25519_key=_x25519(BOB))
        self.assertEqual(len(s_reply), S_REPLY_SIZE)
        self.assertEqual(S_REPLY_SIZE, 1120)
        self.assertEqual(s_reply[1088:], BOB_PUBLIC)
        k_pq = mlkem.MLKEM768PrivateKey.from_seed_bytes(SEED).decapsulate(s_reply[:1088])
        expected = b"\x00\x00\x00\x20" + hashlib.sha256(k_pq + X25519_SHARED).digest()
        self.assertEqual(server_k, expected)
        self.assertEqual(client.finish(s_reply), expected)

    def test_shared_secret_is_a_string_not_an_mpint(self) -> None:
        """A digest with its high bit set gets no leading zero byte (an mpint would)."""
        for n in range(64):
            k_pq = bytes([n]) * 32
            digest = hashlib.sha256(k_pq + X25519_SHARED).digest()
            if digest[0] & 0x80:
                break
        self.assertTrue(digest[0] & 0x80)
        self.assertEqual(shared_secret(k_pq, X25519_SHARED), pack_string(digest))
        self.assertEqual(len(shared_secret(k_pq, X25519_SHARED)), 36)

    def test_exchange_hash_order(self) -> None:
        """H covers V_C, V_S, I_C, I_S, K_S, C_INIT, S_REPLY as strings, then K as it is."""
        fields = [b"SSH-2.0-c", b"SSH-2.0-s", b"\x14ic", b"\x14is", b"hostkey", b"ci", b"sr"]
        secret = pack_string(b"k" * 32)
        expected = hashlib.sha256(b"".join(map(pack_string, fields)) + secret).digest()
        got = exchange_hash(
            client_version=fields[0],
            server_version=fields[1],
            client_kexinit=fields[2],
            server_kexinit=fields[3],
            host_key=fields[4],
            c_init=fields[5],
            s_reply=fields[6],
            secret=secret,
        )
        self.assertEqual(got, expected)
        swapped = exchange_hash(
            client_version=fields[1],
            server_version=fields[0],
            client_kexinit=fields[2],
            server_kexinit=fields[3],
            host_key=fields[4],
            c_init=fields[5],
            s_reply=fields[6],
            secret=secret,
        )
        self.assertNotEqual(swapped, expected)


class GarbageTests(SynchronousTestCase):
    """What a peer gets wrong is a MalformedPacket naming the message, never another error."""

    def assert_malformed(self, what: str, detail: str, call: object, *args: bytes) -> None:
        assert callable(call)
        error = self.assertRaises(MalformedPacket, call, *args)
        self.assertEqual(error.what, what)
        self.assertIn(detail, error.detail)

    def test_wrong_lengths(self) -> None:
        """C_INIT and S_REPLY of any other length are refused, one byte off included."""
        for size in (0, 32, 1184, C_INIT_SIZE - 1, C_INIT_SIZE + 1, 5000):
            self.assert_malformed(
                "SSH_MSG_KEX_ECDH_INIT", f"{size} bytes", split_client_init, bytes(size)
            )
            self.assert_malformed(
                "SSH_MSG_KEX_ECDH_INIT", f"{size} bytes", hybrid_server_reply, bytes(size)
            )
        client = HybridClient()
        for size in (0, 32, 1088, S_REPLY_SIZE - 1, S_REPLY_SIZE + 1):
            self.assert_malformed(
                "SSH_MSG_KEX_ECDH_REPLY", f"{size} bytes", split_server_reply, bytes(size)
            )
            self.assert_malformed(
                "SSH_MSG_KEX_ECDH_REPLY", f"{size} bytes", client.finish, bytes(size)
            )

    def test_invalid_encapsulation_key(self) -> None:
        """An encapsulation key that fails FIPS 203's modulus check is refused by the server."""
        self.assert_malformed(
            "SSH_MSG_KEX_ECDH_INIT",
            "invalid ML-KEM-768 encapsulation key",
            hybrid_server_reply,
            b"\xff" * 1184 + ALICE_PUBLIC,
        )

    def test_low_order_x25519_points(self) -> None:
        """An X25519 key that makes an all-zero secret is refused, by either end."""
        valid = HybridClient(mlkem_seed=SEED).c_init
        self.assert_malformed(
            "SSH_MSG_KEX_ECDH_INIT",
            "invalid X25519 public key",
            hybrid_server_reply,
            valid[:1184] + LOW_ORDER,
        )
        client = HybridClient()
        s_reply, _ = hybrid_server_reply(client.c_init)
        self.assert_malformed(
            "SSH_MSG_KEX_ECDH_REPLY",
            "invalid X25519 public key",
            client.finish,
            s_reply[:1088] + LOW_ORDER,
        )

    def test_a_garbled_ciphertext_gives_another_secret(self) -> None:
        """ML-KEM rejects a bad ciphertext implicitly: the client's K differs, nothing raises."""
        client = HybridClient()
        s_reply, server_k = hybrid_server_reply(client.c_init)
        garbled = bytes([s_reply[0] ^ 1]) + s_reply[1:]
        self.assertNotEqual(client.finish(garbled), server_k)
