"""
The one module that knows Conch's SSH transport from the inside.

Our transport (L{twisted_rfwd.ssh.transport}) replaces Conch's binary packet layer but keeps its
key exchange, and the two meet in Conch's private state: the key exchange state, the queue of
packets held until the new keys, the cipher objects Conch negotiates and reads back, and the
C{_newKeys} hook.  All of it is reached from here, under names that say what it means, so a
Conch upgrade that renames any of it breaks this module only.  L{CONCH_PRIVATE_NAMES} lists the
private names used; C{tests/test_layers.py} checks that no other module of ours uses them.
"""

from __future__ import annotations

from hashlib import md5
from typing import Any

from twisted.conch.ssh import _kex
from twisted.conch.ssh.common import NS, getNS
from twisted.conch.ssh.keys import Key
from twisted.conch.ssh.transport import (
    DISCONNECT_HOST_KEY_NOT_VERIFIABLE,
    DISCONNECT_KEY_EXCHANGE_FAILED,
    SSHTransportBase,
)
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from twisted_rfwd.protocol.ciphers import (
    AEAD_CIPHERS,
    MACS,
    Opener,
    PlainOpener,
    PlainSealer,
    Sealer,
    make_opener,
    make_sealer,
)

__all__ = ["CONCH_PRIVATE_NAMES", "CipherSuite", "ConchTransportAdapter"]

# Conch's private names (of SSHTransportBase) that this module, and only this one, touches.
CONCH_PRIVATE_NAMES = frozenset(
    {
        "_keyExchangeState",
        "_KEY_EXCHANGE_NONE",
        "_blockedByKeyExchange",
        "_allowedKeyExchangeMessageType",
        "_newKeys",
        "_keySetup",
        "_getHostKeys",
        # The client's ECDH reply, for host certificates (see certified_host_key).
        "_ssh_KEX_ECDH_REPLY",
        "_generateECSharedSecret",
        "_encodeECPublicKey",
    }
)


class CipherSuite:
    """
    One key exchange's algorithms and, once keyed, their sealer and opener.  It stands where
    Conch keeps its C{SSHCiphers} (C{nextEncryptions}, C{currentEncryptions}), whose attributes
    Conch still reads: hence its camelCase names.
    """

    def __init__(self, outCip: bytes, inCip: bytes, outMac: bytes, inMac: bytes) -> None:
        self.outCipType = outCip
        self.inCipType = inCip
        self.outMACType = outMac
        self.inMACType = inMac
        self.encBlockSize = 0
        self.decBlockSize = 0
        self.verifyDigestSize = 0
        self.sealer: Sealer = PlainSealer()
        self.opener: Opener = PlainOpener()

    @property
    def keyed(self) -> bool:
        """Whether the keys are set (Conch's client reads a non-zero block size the same way)."""
        return self.encBlockSize != 0

    def setKeys(
        self,
        outIV: bytes,
        outKey: bytes,
        inIV: bytes,
        inKey: bytes,
        outInteg: bytes,
        inInteg: bytes,
    ) -> None:
        """Conch's call once the keys are derived."""
        self.sealer = make_sealer(self.outCipType, self.outMACType, outKey, outIV, outInteg)
        self.opener = make_opener(self.inCipType, self.inMACType, inKey, inIV, inInteg)
        # Conch's client reads a non-zero block size as "keys are ready".
        self.encBlockSize = self.decBlockSize = 16
        self.verifyDigestSize = 16 if self.inCipType in AEAD_CIPHERS else MACS[self.inMACType][1]


class ConchTransportAdapter:
    """
    Mixed in right above Conch's transport class, below our
    L{twisted_rfwd.ssh.transport.TransportMixin}: Conch's internals under plain names.
    """

    nextEncryptions: Any
    currentEncryptions: Any
    _keyExchangeState: str
    _KEY_EXCHANGE_NONE: str
    _blockedByKeyExchange: Any

    @property
    def key_exchange_running(self) -> bool:
        """Whether a key exchange is under way: Conch holds other packets until it ends."""
        return self._keyExchangeState != self._KEY_EXCHANGE_NONE

    def hold_for_key_exchange(self, message_type: int, payload: bytes) -> bool:
        """
        While a key exchange runs, queue a packet that may not be sent before the new keys, as
        Conch's own C{sendPacket} does (its C{_newKeys} sends the queue); say whether it was.
        """
        if self._allowedKeyExchangeMessageType(message_type):  # type: ignore[attr-defined]
            return False
        self._blockedByKeyExchange.append((message_type, payload))
        return True

    def use_plain_ciphers(self) -> None:
        """Start without encryption, with our suite where Conch keeps its current ciphers."""
        self.currentEncryptions = CipherSuite(b"none", b"none", b"none", b"none")

    def take_negotiated_ciphers(self) -> CipherSuite | None:
        """
        After Conch handled the peer's KEXINIT: replace the C{SSHCiphers} it negotiated by our
        L{CipherSuite} of the same algorithms, and return it; C{None} when Conch chose nothing
        new (a repeated KEXINIT, or a negotiation that failed and disconnected).
        """
        negotiated: Any = vars(self).get("nextEncryptions")
        if negotiated is None or isinstance(negotiated, CipherSuite):
            return None
        if None in vars(negotiated).values():
            return None
        suite = CipherSuite(
            negotiated.outCipType,
            negotiated.inCipType,
            negotiated.outMACType,
            negotiated.inMACType,
        )
        self.nextEncryptions = suite
        return suite

    @property
    def next_ciphers(self) -> CipherSuite:
        """The suite the key exchange under way negotiated (see L{take_negotiated_ciphers})."""
        suite: CipherSuite = self.nextEncryptions
        return suite

    # -- key exchange methods of our own (L{twisted_rfwd.ssh.kex}) ------------------------------

    def run_conch_kexinit(self, packet: bytes, method_is_ours: bool) -> Any:
        """
        Conch's handling of the peer's KEXINIT (negotiation, our own KEXINIT if not yet sent).
        With C{method_is_ours} on a client, without the part of Conch's client that sends the
        method's first message: Conch's client would answer an exchange it lacks with a group
        exchange request, and ours sends its own message instead.
        """
        if method_is_ours and self.isClient:  # type: ignore[attr-defined]
            return SSHTransportBase.ssh_KEXINIT(self, packet)  # type: ignore[arg-type]
        return super().ssh_KEXINIT(packet)  # type: ignore[misc]

    def skip_guessed_packet(self) -> bool:
        """
        On a server, whether the client's method message is to be dropped unread: its KEXINIT
        guessed the method wrong and sent that message first (RFC 4253 section 7), as Conch's
        own handlers check.
        """
        ignore: Any = vars(self).get("ignoreNextPacket")
        if not ignore:
            return False
        self.ignoreNextPacket = 0
        return True

    def host_key_pair(self) -> tuple[Key, Key]:
        """The server's public and private host key for the negotiated host key algorithm."""
        public: Key
        private: Key
        public, private = self._getHostKeys(self.keyAlg)  # type: ignore[attr-defined]
        return public, private

    def set_up_keys(self, secret: bytes, exchange_hash: bytes) -> None:
        """
        The method is done: derive the keys from K (as encoded for hashing) and H, and send
        NEWKEYS (Conch's client also takes a NEWKEYS that arrived first).
        """
        self._keySetup(secret, exchange_hash)  # type: ignore[attr-defined]

    # -- the client's ECDH reply, when the host key is a certificate ----------------------------

    def certified_host_key(self, host_key: bytes) -> Key | None:
        """
        The plain key a host certificate C{host_key} certifies (the key that signs the exchange
        hash), or None when C{host_key} is no certificate: Conch reads K_S as a plain key.
        """
        return None

    def _ssh_KEX_ECDH_REPLY(self, packet: bytes) -> Any:
        host_key, exchange_public, signature, _ = getNS(packet, 3)
        signer = self.certified_host_key(host_key)
        if signer is None:
            return super()._ssh_KEX_ECDH_REPLY(packet)  # type: ignore[misc]
        this: Any = self

        def verified(_: object) -> None:
            # Conch's own steps (its _continue_KEX_ECDH_REPLY), but the signer is the
            # certified key.
            secret = this._generateECSharedSecret(this.ecPriv, exchange_public)
            h = _kex.getHashProcessor(this.kexAlg)()
            for item in (
                this.ourVersionString,
                this.otherVersionString,
                this.ourKexInitPayload,
                this.otherKexInitPayload,
                host_key,
                this._encodeECPublicKey(this.ecPub),
                exchange_public,
            ):
                h.update(NS(item))
            h.update(secret)
            exchange_hash = h.digest()
            if not signer.verify(signature, exchange_hash):
                this.sendDisconnect(DISCONNECT_KEY_EXCHANGE_FAILED, b"bad signature")
            else:
                this._keySetup(secret, exchange_hash)

        def refused(_: Failure) -> None:
            this.sendDisconnect(DISCONNECT_HOST_KEY_NOT_VERIFIABLE, b"bad host key")

        fingerprint = b":".join(b"%02x" % byte for byte in md5(host_key).digest())
        d: Deferred[Any] = this.verifyHostKey(host_key, fingerprint)
        return d.addCallback(verified).addErrback(refused)

    # -- Conch's hook once both NEWKEYS are through ---------------------------------------------

    def _newKeys(self) -> None:
        self.before_new_keys()
        # Conch: current ciphers := next, then send the packets held during the exchange.
        super()._newKeys()  # type: ignore[misc]
        self.after_new_keys()

    def before_new_keys(self) -> None:
        """The peer's NEWKEYS arrived and ours is out: the new keys are about to take over."""

    def after_new_keys(self) -> None:
        """The new keys are in use and the packets held during the exchange have been sent."""
