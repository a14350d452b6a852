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

from typing import Any

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
