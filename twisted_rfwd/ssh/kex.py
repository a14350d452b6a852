"""
C{mlkem768x25519-sha256} on both ends of our transport.

Conch (26.x) implements this post-quantum hybrid for servers only, and its server answers a bad
C_INIT with a disconnect whose reason is a C{str} (a crash in our transport, which sends bytes);
so both halves are ours, the encodings and checks in L{twisted_rfwd.protocol.kex}, and this
module the messages: the client's C{KEX_ECDH_INIT} once the KEXINITs are out, the server's
C{KEX_ECDH_REPLY}, the host key check and signature, then Conch's key derivation (reached
through L{twisted_rfwd.ssh.conch}).  Mixed in below L{twisted_rfwd.ssh.transport.TransportMixin},
which sends each message of the method here when the negotiated method is a hybrid.
"""

from __future__ import annotations

import hashlib
from typing import Any

from twisted.conch.ssh.keys import Key
from twisted.conch.ssh.transport import DISCONNECT_HOST_KEY_NOT_VERIFIABLE
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from twisted_rfwd.errors import MalformedPacket, RemoteProtocolError
from twisted_rfwd.protocol.kex import (
    HYBRID_KEY_EXCHANGES,
    HybridClient,
    exchange_hash,
    hybrid_server_reply,
)
from twisted_rfwd.protocol.phases import MSG_KEX_ECDH_INIT, MSG_KEX_ECDH_REPLY
from twisted_rfwd.protocol.wire import Reader, pack_string
from twisted_rfwd.ssh.conch import ConchTransportAdapter

__all__ = ["HybridKeyExchange", "client_choice"]

_INIT = "SSH_MSG_KEX_ECDH_INIT"
_REPLY = "SSH_MSG_KEX_ECDH_REPLY"


def client_choice(client: list[bytes], server: list[bytes]) -> bytes | None:
    """RFC 4253 section 7.1: the first method of the client's list that the server offers."""
    return next((name for name in client if name in server), None)


def _fingerprint(blob: bytes) -> bytes:
    # What Conch hands verifyHostKey (its MD5 form); our client checks the key itself.
    return b":".join(b"%02x" % byte for byte in hashlib.md5(blob).digest())


def _signature_valid(key: Key, signature: bytes, data: bytes) -> bool:
    try:
        return bool(key.verify(signature, data))
    except Exception:
        # Conch's parser of the peer's signature blob raises on garbage: a bad signature.
        return False


class HybridKeyExchange(ConchTransportAdapter):
    """Both halves of the hybrid exchange, on the transport's negotiated state."""

    kexAlg: bytes
    keyAlg: bytes
    ourVersionString: bytes
    otherVersionString: bytes
    ourKexInitPayload: bytes
    otherKexInitPayload: bytes
    # The client's key pairs, from its KEX_ECDH_INIT to the server's reply.
    _hybrid_client: HybridClient | None = None

    @property
    def hybrid_kex(self) -> bool:
        """Whether the key exchange negotiated last (after a KEXINIT only) is one of ours."""
        return self.kexAlg in HYBRID_KEY_EXCHANGES

    def key_exchange_failed(self, why: str) -> None:
        """The peer's key exchange does not hold (bad signature): the transport disconnects."""
        raise NotImplementedError

    # -- client --------------------------------------------------------------------------------

    def start_hybrid_kex(self) -> None:
        """Both KEXINITs are out and the method is ours: send C_INIT."""
        if not self.hybrid_kex:
            raise RuntimeError(f"negotiated {self.kexAlg!r}, not a hybrid key exchange")
        client = HybridClient()
        self._hybrid_client = client
        self.sendPacket(MSG_KEX_ECDH_INIT, pack_string(client.c_init))  # type: ignore[attr-defined]

    def hybrid_reply_received(self, packet: bytes) -> Deferred[None]:
        """
        The server's KEX_ECDH_REPLY: K from S_REPLY, then the host key checked (possibly later),
        its signature of H verified, and the keys derived.
        """
        reader = Reader(packet, _REPLY)
        host_key, s_reply, signature = reader.string(), reader.string(), reader.string()
        client, self._hybrid_client = self._hybrid_client, None
        if client is None:  # pragma: no cover - the phase table lets one reply through
            raise RemoteProtocolError("KEX_ECDH_REPLY without our KEX_ECDH_INIT")
        secret = client.finish(s_reply)
        try:
            key = self.certified_host_key(host_key) or Key.fromString(host_key)
        except Exception:
            # Conch's key parser raises assorted errors on a garbled blob: the peer's.
            raise MalformedPacket(_REPLY, "unreadable host key") from None
        digest = exchange_hash(
            client_version=self.ourVersionString,
            server_version=self.otherVersionString,
            client_kexinit=self.ourKexInitPayload,
            server_kexinit=self.otherKexInitPayload,
            host_key=host_key,
            c_init=client.c_init,
            s_reply=s_reply,
            secret=secret,
        )

        def verified(_: Any) -> None:
            if not _signature_valid(key, signature, digest):
                self.key_exchange_failed("the server's signature of the key exchange is wrong")
                return
            self.set_up_keys(secret, digest)

        def refused(_: Failure) -> None:
            self.sendDisconnect(  # type: ignore[attr-defined]
                DISCONNECT_HOST_KEY_NOT_VERIFIABLE, b"bad host key"
            )

        checked: Deferred[Any] = self.verifyHostKey(host_key, _fingerprint(host_key))  # type: ignore[attr-defined]
        checked.addCallbacks(verified, refused)
        return checked

    # -- server --------------------------------------------------------------------------------

    def hybrid_init_received(self, packet: bytes) -> None:
        """The client's KEX_ECDH_INIT: encapsulate, sign H, reply, and derive the keys."""
        c_init = Reader(packet, _INIT).string()
        s_reply, secret = hybrid_server_reply(c_init)
        public, private = self.host_key_pair()
        blob = public.blob()
        digest = exchange_hash(
            client_version=self.otherVersionString,
            server_version=self.ourVersionString,
            client_kexinit=self.otherKexInitPayload,
            server_kexinit=self.ourKexInitPayload,
            host_key=blob,
            c_init=c_init,
            s_reply=s_reply,
            secret=secret,
        )
        signature = private.sign(digest, signatureType=self.keyAlg)
        self.sendPacket(  # type: ignore[attr-defined]
            MSG_KEX_ECDH_REPLY, pack_string(blob) + pack_string(s_reply) + pack_string(signature)
        )
        self.set_up_keys(secret, digest)
