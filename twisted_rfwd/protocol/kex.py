"""
The post-quantum hybrid key exchange C{mlkem768x25519-sha256} (draft-ietf-sshm-mlkem-hybrid-kex,
OpenSSH 10's default), without the transport around it.

Both messages reuse the ECDH numbers (30 and 31, RFC 5656 section 4):

  - the client sends C{string C_INIT}, its ML-KEM-768 encapsulation key (1184 bytes) followed by
    its X25519 public key (32 bytes);
  - the server answers C{string K_S, string S_REPLY, string signature}, S_REPLY being the ML-KEM
    ciphertext (1088 bytes) followed by the server's X25519 public key (32 bytes).

The shared secret is K = SHA-256(K_PQ || K_CL), the ML-KEM shared secret then the raw X25519
one, and it enters the exchange hash and the key derivation as an SSH I{string}, not an mpint
(OpenSSH's kexmlkem768x25519.c does C{sshbuf_put_string} of the digest).  The exchange hash is
RFC 4253's with C_INIT and S_REPLY as strings where ECDH has the two public keys.

Whatever a peer sends wrong (a length, an encapsulation key that fails FIPS 203's modulus check,
an X25519 point of low order) is a L{MalformedPacket}: the peer's fault.  Pure: no Twisted.
"""

from __future__ import annotations

import hashlib
from functools import cache

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from twisted_rfwd.errors import MalformedPacket
from twisted_rfwd.protocol.wire import pack_string

__all__ = [
    "C_INIT_SIZE",
    "HYBRID_KEY_EXCHANGES",
    "MLKEM768X25519_SHA256",
    "S_REPLY_SIZE",
    "HybridClient",
    "exchange_hash",
    "hybrid_server_reply",
    "mlkem_available",
    "shared_secret",
    "split_client_init",
    "split_server_reply",
]

MLKEM768X25519_SHA256 = b"mlkem768x25519-sha256"
HYBRID_KEY_EXCHANGES = frozenset({MLKEM768X25519_SHA256})

MLKEM768_PUBLIC_KEY_SIZE = 1184
MLKEM768_CIPHERTEXT_SIZE = 1088
X25519_SIZE = 32
C_INIT_SIZE = MLKEM768_PUBLIC_KEY_SIZE + X25519_SIZE
S_REPLY_SIZE = MLKEM768_CIPHERTEXT_SIZE + X25519_SIZE

_INIT = "SSH_MSG_KEX_ECDH_INIT"
_REPLY = "SSH_MSG_KEX_ECDH_REPLY"


@cache
def mlkem_available() -> bool:
    """
    Whether this C{cryptography} can do ML-KEM-768: 48.0 or later, and a backend that has it
    (its wheels do; one built against a system OpenSSL older than 3.5 does not).
    """
    try:
        mlkem.MLKEM768PrivateKey.generate()
    except UnsupportedAlgorithm:
        return False
    return True


def split_client_init(c_init: bytes) -> tuple[bytes, bytes]:
    """C_INIT as (ML-KEM-768 encapsulation key, X25519 public key), its length checked."""
    if len(c_init) != C_INIT_SIZE:
        raise MalformedPacket(_INIT, f"C_INIT of {len(c_init)} bytes, not {C_INIT_SIZE}")
    return c_init[:MLKEM768_PUBLIC_KEY_SIZE], c_init[MLKEM768_PUBLIC_KEY_SIZE:]


def split_server_reply(s_reply: bytes) -> tuple[bytes, bytes]:
    """S_REPLY as (ML-KEM-768 ciphertext, X25519 public key), its length checked."""
    if len(s_reply) != S_REPLY_SIZE:
        raise MalformedPacket(_REPLY, f"S_REPLY of {len(s_reply)} bytes, not {S_REPLY_SIZE}")
    return s_reply[:MLKEM768_CIPHERTEXT_SIZE], s_reply[MLKEM768_CIPHERTEXT_SIZE:]


def shared_secret(k_pq: bytes, k_cl: bytes) -> bytes:
    """K, encoded as the string the exchange hash and the key derivation take."""
    return pack_string(hashlib.sha256(k_pq + k_cl).digest())


def exchange_hash(
    *,
    client_version: bytes,
    server_version: bytes,
    client_kexinit: bytes,
    server_kexinit: bytes,
    host_key: bytes,
    c_init: bytes,
    s_reply: bytes,
    secret: bytes,
) -> bytes:
    """
    H: SHA-256 over the identification lines, both KEXINIT payloads (message number included),
    the host key blob, C_INIT and S_REPLY, each a string, then C{secret} as it is (already a
    string, see L{shared_secret}).
    """
    h = hashlib.sha256()
    for field in (
        client_version,
        server_version,
        client_kexinit,
        server_kexinit,
        host_key,
        c_init,
        s_reply,
    ):
        h.update(pack_string(field))
    h.update(secret)
    return h.digest()


def _x25519_secret(private: x25519.X25519PrivateKey, peer: bytes, what: str) -> bytes:
    try:
        return private.exchange(x25519.X25519PublicKey.from_public_bytes(peer))
    except ValueError:
        # A point of small order makes an all-zero secret, which cryptography refuses.
        raise MalformedPacket(what, "invalid X25519 public key") from None


def _raw(public: x25519.X25519PublicKey) -> bytes:
    return public.public_bytes(Encoding.Raw, PublicFormat.Raw)


class HybridClient:
    """
    The client's half: its ephemeral key pairs, C_INIT to send, and K from the server's S_REPLY.
    Keys may be given (tests); by default they are generated.
    """

    def __init__(
        self,
        mlkem_seed: bytes | None = None,
        x25519_key: x25519.X25519PrivateKey | None = None,
    ) -> None:
        self._mlkem = (
            mlkem.MLKEM768PrivateKey.generate()
            if mlkem_seed is None
            else mlkem.MLKEM768PrivateKey.from_seed_bytes(mlkem_seed)
        )
        self._x25519 = x25519_key if x25519_key is not None else x25519.X25519PrivateKey.generate()
        self.c_init = self._mlkem.public_key().public_bytes_raw() + _raw(self._x25519.public_key())

    def finish(self, s_reply: bytes) -> bytes:
        """K (string-encoded) from the server's S_REPLY; L{MalformedPacket} if it is garbage."""
        ciphertext, server_public = split_server_reply(s_reply)
        k_cl = _x25519_secret(self._x25519, server_public, _REPLY)
        try:
            k_pq = self._mlkem.decapsulate(ciphertext)
        except ValueError:
            raise MalformedPacket(_REPLY, "invalid ML-KEM-768 ciphertext") from None
        return shared_secret(k_pq, k_cl)


def hybrid_server_reply(
    c_init: bytes, x25519_key: x25519.X25519PrivateKey | None = None
) -> tuple[bytes, bytes]:
    """
    The server's half: (S_REPLY, K string-encoded) for the client's C_INIT; L{MalformedPacket} if
    C_INIT is garbage.
    """
    encapsulation_key, client_public = split_client_init(c_init)
    try:
        peer = mlkem.MLKEM768PublicKey.from_public_bytes(encapsulation_key)
    except ValueError:
        # FIPS 203's input check: a coefficient not reduced modulo q.
        raise MalformedPacket(_INIT, "invalid ML-KEM-768 encapsulation key") from None
    ours = x25519_key if x25519_key is not None else x25519.X25519PrivateKey.generate()
    k_cl = _x25519_secret(ours, client_public, _INIT)
    k_pq, ciphertext = peer.encapsulate()
    return ciphertext + _raw(ours.public_key()), shared_secret(k_pq, k_cl)
