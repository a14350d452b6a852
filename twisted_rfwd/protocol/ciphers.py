"""
SSH binary packet protection (RFC 4253 section 6, OpenSSH's PROTOCOL and PROTOCOL.chacha20poly1305):
one sealer and one opener per direction and key exchange, as pure functions of keys, sequence
numbers and bytes.

Algorithms:
  - C{aes128-gcm@openssh.com}, C{aes256-gcm@openssh.com} (RFC 5647 as OpenSSH does it);
  - C{chacha20-poly1305@openssh.com};
  - C{aes128-ctr}, C{aes192-ctr}, C{aes256-ctr} with C{hmac-sha2-256}/C{-512}, classic or
    C{-etm@openssh.com} (encrypt-then-MAC, the length in clear);
  - C{none}, for the first key exchange only.

An opener works in two steps so the transport can wait for whole packets without copying: from
the first bytes of a packet, L{Opener.packet_size} says how many bytes the packet occupies; from
those bytes, L{Opener.open} authenticates, decrypts, and says where the payload lies in the
plaintext it returns (so the caller slices once).
"""

from __future__ import annotations

import hmac
import os
import struct
from typing import Protocol

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.poly1305 import Poly1305

from twisted_rfwd.errors import MacError, RemoteProtocolError

__all__ = [
    "AEAD_CIPHERS",
    "CIPHER_KEY_SIZES",
    "MAX_PACKET_SIZE",
    "MacError",
    "Opener",
    "Sealer",
    "make_opener",
    "make_sealer",
]

# The largest packet_length we accept (OpenSSH's PACKET_MAX_SIZE).
MAX_PACKET_SIZE = 256 * 1024

_UINT32 = struct.Struct(">L")
_GCM_COUNTER = struct.Struct(">Q")
_ZERO_BLOCK = bytes(64)

AEAD_CIPHERS = {
    b"aes128-gcm@openssh.com",
    b"aes256-gcm@openssh.com",
    b"chacha20-poly1305@openssh.com",
}

# Cipher name -> (key bytes, IV bytes).
CIPHER_KEY_SIZES: dict[bytes, tuple[int, int]] = {
    b"aes128-gcm@openssh.com": (16, 12),
    b"aes256-gcm@openssh.com": (32, 12),
    b"chacha20-poly1305@openssh.com": (64, 0),
    b"aes128-ctr": (16, 16),
    b"aes192-ctr": (24, 16),
    b"aes256-ctr": (32, 16),
    b"none": (0, 0),
}

# MAC name -> (hash name, digest size, encrypt-then-MAC).
MACS: dict[bytes, tuple[str, int, bool]] = {
    b"hmac-sha2-256": ("sha256", 32, False),
    b"hmac-sha2-512": ("sha512", 64, False),
    b"hmac-sha2-256-etm@openssh.com": ("sha256", 32, True),
    b"hmac-sha2-512-etm@openssh.com": ("sha512", 64, True),
    b"none": ("", 0, False),
}


class Sealer(Protocol):
    """Turns payloads into wire packets for one direction."""

    def seal(self, seq: int, head: bytes, body: bytes | memoryview = b"") -> list[bytes]:
        """
        The wire bytes for a packet whose payload is C{head} (the message number and any
        fields) followed by C{body} (bulk data).
        """
        ...

    def sealed_size(self, payload_size: int) -> int:
        """How many wire bytes a packet with a payload of C{payload_size} bytes takes."""
        ...

    def seal_into(
        self, out: memoryview, seq: int, head: bytes, body: bytes | memoryview = b""
    ) -> int:
        """
        Like L{seal}, but written at the start of C{out}; returns the bytes written.  Many
        packets sealed into one buffer reach the socket as one write, with no copy in between.
        """
        ...


class Opener(Protocol):
    """Reads wire packets for one direction."""

    first_block: int

    def packet_size(self, seq: int, head: bytes | memoryview) -> int:
        """Total bytes this packet occupies, from at least C{first_block} of its bytes."""
        ...

    def open(self, seq: int, packet: memoryview) -> tuple[bytes, int, int]:
        """Authenticate and decrypt; returns C{(plaintext, start, end)} of the payload."""
        ...


class _Padding:
    """Random padding bytes, cut from a pool refilled now and then."""

    def __init__(self) -> None:
        self._pool = os.urandom(4096)
        self._used = 0

    def take(self, n: int) -> bytes:
        if self._used + n > len(self._pool):
            self._pool = os.urandom(4096)
            self._used = 0
        chunk = self._pool[self._used : self._used + n]
        self._used += n
        return chunk


_padding = _Padding()

# The padding_length byte for each possible padding, ready to prepend.
_PAD_LENGTH_BYTE = [bytes((n,)) for n in range(256)]


def _pad_length(size: int, block: int) -> int:
    """Padding for C{size} bytes to fill whole blocks, at least 4 (RFC 4253 section 6)."""
    pad = block - size % block
    if pad < 4:
        pad += block
    return pad


def _check_length(length: int, block: int) -> None:
    if length > MAX_PACKET_SIZE:
        raise RemoteProtocolError(f"packet length {length} exceeds {MAX_PACKET_SIZE}")
    if length < 5 or length % block:
        raise RemoteProtocolError(f"bad packet length {length}")


def _payload_bounds(plaintext: bytes, start: int) -> tuple[int, int]:
    """Payload position inside C{plaintext}, whose byte at C{start} is padding_length."""
    padding = plaintext[start]
    end = len(plaintext) - padding
    if padding < 4 or end <= start + 1:
        raise RemoteProtocolError(f"bad padding length {padding}")
    return start + 1, end


class _CopyInto:
    """L{Sealer.seal_into} for sealers whose cipher works on whole pieces: copy them out."""

    def seal(self, seq: int, head: bytes, body: bytes | memoryview = b"") -> list[bytes]:
        raise NotImplementedError

    def seal_into(
        self, out: memoryview, seq: int, head: bytes, body: bytes | memoryview = b""
    ) -> int:
        position = 0
        for piece in self.seal(seq, head, body):
            out[position : position + len(piece)] = piece
            position += len(piece)
        return position


class _SealViaInto:
    """L{Sealer.seal} for sealers that write in place: seal into a fresh buffer."""

    def sealed_size(self, payload_size: int) -> int:
        raise NotImplementedError

    def seal_into(
        self, out: memoryview, seq: int, head: bytes, body: bytes | memoryview = b""
    ) -> int:
        raise NotImplementedError

    def seal(self, seq: int, head: bytes, body: bytes | memoryview = b"") -> list[bytes]:
        out = bytearray(self.sealed_size(len(head) + len(body)))
        self.seal_into(memoryview(out), seq, head, body)
        return [bytes(out)]


# -- none --------------------------------------------------------------------------------------


class PlainSealer(_CopyInto):
    def sealed_size(self, payload_size: int) -> int:
        return 4 + 1 + payload_size + _pad_length(4 + 1 + payload_size, 8)

    def seal(self, seq: int, head: bytes, body: bytes | memoryview = b"") -> list[bytes]:
        size = len(head) + len(body)
        pad = _pad_length(4 + 1 + size, 8)
        return [
            _UINT32.pack(1 + size + pad) + bytes((pad,)) + head,
            bytes(body),
            _padding.take(pad),
        ]


class PlainOpener:
    first_block = 4

    def packet_size(self, seq: int, head: bytes | memoryview) -> int:
        length: int = _UINT32.unpack_from(head)[0]
        _check_length(length, 1)
        if (4 + length) % 8:
            # RFC 4253 section 6: the whole packet is a multiple of 8 bytes without a cipher
            # (OpenSSH's "padding error" on the same packet).
            raise RemoteProtocolError(
                f"bad packet length {length}: 4 + length is not a multiple of 8"
            )
        return 4 + length

    def open(self, seq: int, packet: memoryview) -> tuple[bytes, int, int]:
        plaintext = bytes(packet)
        start, end = _payload_bounds(plaintext, 4)
        return plaintext, start, end


# -- AES-GCM -----------------------------------------------------------------------------------


class _GCMNonce:
    """RFC 5647 nonce: 4 fixed bytes and a 64-bit counter that grows by one per packet."""

    def __init__(self, iv: bytes) -> None:
        self._fixed = iv[:4]
        (self._counter,) = _GCM_COUNTER.unpack(iv[4:12])

    def next(self) -> bytes:
        nonce = self._fixed + _GCM_COUNTER.pack(self._counter)
        self._counter = (self._counter + 1) & 0xFFFFFFFFFFFFFFFF
        return nonce


class GCMSealer(_SealViaInto):
    def __init__(self, key: bytes, iv: bytes) -> None:
        self._aead = AESGCM(key)
        self._nonce = _GCMNonce(iv)
        # AES-GCM takes its plaintext whole: it is assembled here, in a buffer kept for reuse.
        self._plaintext = memoryview(bytearray())

    def sealed_size(self, payload_size: int) -> int:
        return 4 + 1 + payload_size + _pad_length(1 + payload_size, 16) + 16

    def seal_into(
        self, out: memoryview, seq: int, head: bytes, body: bytes | memoryview = b""
    ) -> int:
        size = len(head) + len(body)
        pad = _pad_length(1 + size, 16)
        n = 1 + size + pad
        if len(self._plaintext) < n:
            self._plaintext = memoryview(bytearray(n))
        plaintext = self._plaintext[:n]
        plaintext[0] = pad
        at = 1 + len(head)
        plaintext[1:at] = head
        plaintext[at : at + len(body)] = body
        plaintext[at + len(body) :] = _padding.take(pad)
        length = _UINT32.pack(n)
        out[:4] = length
        self._aead.encrypt_into(self._nonce.next(), plaintext, length, out[4 : 4 + n + 16])
        return 4 + n + 16

    def seal(self, seq: int, head: bytes, body: bytes | memoryview = b"") -> list[bytes]:
        """
        One packet, built by concatenation: for the small messages of a connection's life (an
        open, a confirmation, an EOF), cheaper than assembling it in the reused buffer.
        """
        size = len(head) + len(body)
        pad = 16 - (1 + size) % 16
        if pad < 4:
            pad += 16
        length = _UINT32.pack(1 + size + pad)
        plaintext = _PAD_LENGTH_BYTE[pad] + head + bytes(body) + _padding.take(pad)
        return [length + self._aead.encrypt(self._nonce.next(), plaintext, length)]


class GCMOpener:
    first_block = 4

    def __init__(self, key: bytes, iv: bytes) -> None:
        self._aead = AESGCM(key)
        self._nonce = _GCMNonce(iv)

    def packet_size(self, seq: int, head: bytes | memoryview) -> int:
        length: int = _UINT32.unpack_from(head)[0]
        _check_length(length, 16)
        return 4 + length + 16

    def open(self, seq: int, packet: memoryview) -> tuple[bytes, int, int]:
        try:
            plaintext = self._aead.decrypt(self._nonce.next(), packet[4:], packet[:4])
        except InvalidTag:
            raise MacError() from None
        start, end = _payload_bounds(plaintext, 0)
        return plaintext, start, end


# -- chacha20-poly1305@openssh.com ---------------------------------------------------------------


_CHACHA_BLOCK_ZERO = bytes(8)
_CHACHA_SEQ = struct.Struct(">Q")


def _chacha_nonce(seq: int) -> bytes:
    # OpenSSH's ChaCha20 takes a 64-bit block counter and a 64-bit nonce (the sequence number);
    # cryptography's 16-byte nonce is the 32-bit counter and 96-bit nonce of RFC 8439, which is
    # the same cipher state as long as the counter stays below 2**32 (packets are < 256 KiB).
    # Every packet starts at block 0.
    return _CHACHA_BLOCK_ZERO + _CHACHA_SEQ.pack(seq)


class _ChaChaStreams:
    """
    The two ChaCha20 keystreams of one direction, set up once and re-aimed at each packet's
    nonce (building a cipher context costs more than encrypting a small packet).
    """

    def __init__(self, key: bytes) -> None:
        first = _chacha_nonce(0)
        self._main = Cipher(algorithms.ChaCha20(key[:32], first), None).encryptor()
        self._header = Cipher(algorithms.ChaCha20(key[32:64], first), None).encryptor()

    def length(self, seq: int, data: bytes) -> bytes:
        """The packet-length field, encrypted or decrypted with the header key."""
        self._header.reset_nonce(_chacha_nonce(seq))
        return self._header.update(data)

    def start(self, seq: int) -> bytes:
        """Aim the main keystream at packet C{seq}; returns the packet's Poly1305 key."""
        self._main.reset_nonce(_chacha_nonce(seq))
        # Block 0 gives the Poly1305 key; the payload starts at block 1.
        return self._main.update(_ZERO_BLOCK)[:32]

    def update(self, data: bytes | memoryview) -> bytes:
        return self._main.update(data)

    def update_into(self, data: bytes | memoryview, out: memoryview) -> None:
        self._main.update_into(data, out)


class ChaChaSealer(_SealViaInto):
    def __init__(self, key: bytes) -> None:
        self._streams = _ChaChaStreams(key)

    def sealed_size(self, payload_size: int) -> int:
        return 4 + 1 + payload_size + _pad_length(1 + payload_size, 8) + 16

    def seal_into(
        self, out: memoryview, seq: int, head: bytes, body: bytes | memoryview = b""
    ) -> int:
        size = len(head) + len(body)
        pad = _pad_length(1 + size, 8)
        streams = self._streams
        poly_key = streams.start(seq)
        # Each piece is encrypted straight into place: the body is read once, never copied.
        out[:4] = streams.length(seq, _UINT32.pack(1 + size + pad))
        first = bytes((pad,)) + head
        end = 4 + len(first)
        streams.update_into(first, out[4:end])
        if body:
            streams.update_into(body, out[end : end + len(body)])
            end += len(body)
        streams.update_into(_padding.take(pad), out[end : end + pad])
        end += pad
        out[end : end + 16] = Poly1305.generate_tag(poly_key, out[:end])
        return end + 16


class ChaChaOpener:
    first_block = 4

    def __init__(self, key: bytes) -> None:
        self._streams = _ChaChaStreams(key)
        self._length_of: tuple[int, int] | None = None

    def packet_size(self, seq: int, head: bytes | memoryview) -> int:
        if self._length_of is not None and self._length_of[0] == seq:
            length = self._length_of[1]
        else:
            (length,) = _UINT32.unpack(self._streams.length(seq, bytes(head[:4])))
            _check_length(length, 8)
            self._length_of = (seq, length)
        return 4 + length + 16

    def open(self, seq: int, packet: memoryview) -> tuple[bytes, int, int]:
        self._length_of = None
        streams = self._streams
        try:
            Poly1305.verify_tag(streams.start(seq), packet[:-16], bytes(packet[-16:]))
        except InvalidSignature:
            raise MacError() from None
        plaintext = streams.update(packet[4:-16])
        start, end = _payload_bounds(plaintext, 0)
        return plaintext, start, end


# -- AES-CTR with HMAC ---------------------------------------------------------------------------


class CTRSealer(_CopyInto):
    def __init__(self, key: bytes, iv: bytes, mac: bytes, mac_key: bytes) -> None:
        self._encrypt = Cipher(algorithms.AES(key), modes.CTR(iv)).encryptor().update
        self._hash, self._mac_size, self._etm = MACS[mac]
        self._mac_key = mac_key[: self._mac_size]

    def sealed_size(self, payload_size: int) -> int:
        counted = 1 if self._etm else 4 + 1
        return 4 + 1 + payload_size + _pad_length(counted + payload_size, 16) + self._mac_size

    def seal(self, seq: int, head: bytes, body: bytes | memoryview = b"") -> list[bytes]:
        size = len(head) + len(body)
        if self._etm:
            pad = _pad_length(1 + size, 16)
            length = _UINT32.pack(1 + size + pad)
            ciphertext = self._encrypt(b"".join((bytes((pad,)) + head, body, _padding.take(pad))))
            mac = hmac.digest(self._mac_key, _UINT32.pack(seq) + length + ciphertext, self._hash)
            return [length, ciphertext, mac]
        pad = _pad_length(4 + 1 + size, 16)
        plaintext = b"".join(
            (_UINT32.pack(1 + size + pad) + bytes((pad,)) + head, body, _padding.take(pad))
        )
        mac = hmac.digest(self._mac_key, _UINT32.pack(seq) + plaintext, self._hash)
        return [self._encrypt(plaintext), mac]


class CTROpener:
    def __init__(self, key: bytes, iv: bytes, mac: bytes, mac_key: bytes) -> None:
        self._decrypt = Cipher(algorithms.AES(key), modes.CTR(iv)).decryptor().update
        self._hash, self._mac_size, self._etm = MACS[mac]
        self._mac_key = mac_key[: self._mac_size]
        self.first_block = 4 if self._etm else 16
        self._first: tuple[int, bytes, int] | None = None

    def packet_size(self, seq: int, head: bytes | memoryview) -> int:
        if self._etm:
            length: int = _UINT32.unpack_from(head)[0]
            _check_length(length, 16)
            return 4 + length + self._mac_size
        if self._first is None or self._first[0] != seq:
            # The length is encrypted: decrypt the first block once, and keep it.
            first = self._decrypt(bytes(head[:16]))
            (length,) = _UINT32.unpack_from(first)
            if length > MAX_PACKET_SIZE or length < 12 or (4 + length) % 16:
                raise RemoteProtocolError(f"bad packet length {length}")
            self._first = (seq, first, length)
        return 4 + self._first[2] + self._mac_size

    def open(self, seq: int, packet: memoryview) -> tuple[bytes, int, int]:
        mac_size = self._mac_size
        body, received = packet[: len(packet) - mac_size], packet[len(packet) - mac_size :]
        if self._etm:
            expected = hmac.digest(self._mac_key, _UINT32.pack(seq) + body, self._hash)
            if not hmac.compare_digest(expected, received):
                raise MacError()
            plaintext = self._decrypt(body[4:])
            start, end = _payload_bounds(plaintext, 0)
            return plaintext, start, end
        assert self._first is not None and self._first[0] == seq
        plaintext = self._first[1] + self._decrypt(body[16:])
        self._first = None
        expected = hmac.digest(self._mac_key, _UINT32.pack(seq) + plaintext, self._hash)
        if not hmac.compare_digest(expected, received):
            raise MacError()
        start, end = _payload_bounds(plaintext, 4)
        return plaintext, start, end


# -- construction ------------------------------------------------------------------------------


def make_sealer(cipher: bytes, mac: bytes, key: bytes, iv: bytes, mac_key: bytes) -> Sealer:
    """The sealer for a negotiated cipher and MAC (the MAC is ignored for AEAD ciphers)."""
    key_size, iv_size = CIPHER_KEY_SIZES[cipher]
    if cipher == b"none":
        return PlainSealer()
    if cipher == b"chacha20-poly1305@openssh.com":
        return ChaChaSealer(key[:key_size])
    if cipher in AEAD_CIPHERS:
        return GCMSealer(key[:key_size], iv[:iv_size])
    return CTRSealer(key[:key_size], iv[:iv_size], mac, mac_key)


def make_opener(cipher: bytes, mac: bytes, key: bytes, iv: bytes, mac_key: bytes) -> Opener:
    """The opener for a negotiated cipher and MAC (the MAC is ignored for AEAD ciphers)."""
    key_size, iv_size = CIPHER_KEY_SIZES[cipher]
    if cipher == b"none":
        return PlainOpener()
    if cipher == b"chacha20-poly1305@openssh.com":
        return ChaChaOpener(key[:key_size])
    if cipher in AEAD_CIPHERS:
        return GCMOpener(key[:key_size], iv[:iv_size])
    return CTROpener(key[:key_size], iv[:iv_size], mac, mac_key)
