"""The packet codecs: what a sealer writes, the matching opener reads back, and nothing else."""

from __future__ import annotations

import os

from twisted.trial.unittest import SynchronousTestCase

from twisted_rfwd.errors import RemoteProtocolError
from twisted_rfwd.protocol.ciphers import (
    MAX_PACKET_SIZE,
    MacError,
    Opener,
    Sealer,
    make_opener,
    make_sealer,
)

SUITES = [
    (b"aes128-gcm@openssh.com", b"hmac-sha2-256"),
    (b"aes256-gcm@openssh.com", b"hmac-sha2-256"),
    (b"chacha20-poly1305@openssh.com", b"hmac-sha2-256"),
    (b"aes128-ctr", b"hmac-sha2-256"),
    (b"aes192-ctr", b"hmac-sha2-512"),
    (b"aes256-ctr", b"hmac-sha2-256-etm@openssh.com"),
    (b"aes128-ctr", b"hmac-sha2-512-etm@openssh.com"),
    (b"none", b"none"),
]
KEY, IV, MAC_KEY = os.urandom(64), os.urandom(16), os.urandom(64)


def pair(cipher: bytes, mac: bytes) -> tuple[Sealer, Opener]:
    return (
        make_sealer(cipher, mac, KEY, IV, MAC_KEY),
        make_opener(cipher, mac, KEY, IV, MAC_KEY),
    )


def read(opener: Opener, seq: int, wire: bytes) -> bytes:
    head = wire[: opener.first_block]
    size = opener.packet_size(seq, head)
    assert size == len(wire), (size, len(wire))
    plaintext, start, end = opener.open(seq, memoryview(wire))
    return bytes(plaintext[start:end])


class RoundTripTests(SynchronousTestCase):
    def test_packets_round_trip_in_order(self) -> None:
        """
        Several packets of different sizes come back exactly, in sequence, whether the payload
        is given as one head or as a head and a body (a view, as channel data is).
        """
        for cipher, mac in SUITES:
            sealer, opener = pair(cipher, mac)
            seq = 7
            for size in [0, 1, 15, 16, 17, 1000, 32768, 131072]:
                payload = os.urandom(size)
                wire = b"".join(sealer.seal(seq, b"\x5e" + payload))
                self.assertEqual(read(opener, seq, wire), b"\x5e" + payload, (cipher, mac))
                seq += 1
                wire = b"".join(sealer.seal(seq, b"\x5e\x00", memoryview(payload)))
                self.assertEqual(read(opener, seq, wire), b"\x5e\x00" + payload, (cipher, mac))
                seq += 1

    def test_packets_sealed_back_to_back_into_one_buffer(self) -> None:
        """
        Packets sealed into one buffer take exactly the size the sealer predicts and read
        back one after another, as the transport writes a batch of channel data.
        """
        for cipher, mac in SUITES:
            sealer, opener = pair(cipher, mac)
            sizes = [0, 1, 31, 32768, 100, 131072]
            payloads = [os.urandom(size) for size in sizes]
            expected = sum(sealer.sealed_size(9 + size) for size in sizes)
            buffer = memoryview(bytearray(expected + 50))
            written = 0
            for seq, payload in enumerate(payloads):
                n = sealer.seal_into(buffer[written:], seq, b"^" + bytes(8), memoryview(payload))
                self.assertEqual(n, sealer.sealed_size(9 + len(payload)), (cipher, mac))
                written += n
            self.assertEqual(written, expected)
            wire = bytes(buffer[:written])
            offset = 0
            for seq, payload in enumerate(payloads):
                size = opener.packet_size(seq, wire[offset : offset + opener.first_block])
                got = read(opener, seq, wire[offset : offset + size])
                self.assertEqual(got, b"^" + bytes(8) + payload, (cipher, mac))
                offset += size
            self.assertEqual(offset, written)

    def test_seal_and_seal_into_interleave(self) -> None:
        """
        A packet sealed by itself (a small message) and the next sealed into a buffer (bulk
        data) share one sequence: the peer reads them in turn, of the same size either way.
        """
        for cipher, mac in SUITES:
            sealer, opener = pair(cipher, mac)
            for seq in range(6):
                payload = os.urandom(seq * 7)
                if seq % 2:
                    wire = b"".join(sealer.seal(seq, b"^", payload))
                else:
                    buffer = memoryview(bytearray(sealer.sealed_size(1 + len(payload))))
                    n = sealer.seal_into(buffer, seq, b"^", payload)
                    wire = bytes(buffer[:n])
                self.assertEqual(len(wire), sealer.sealed_size(1 + len(payload)), cipher)
                self.assertEqual(read(opener, seq, wire), b"^" + payload, (cipher, mac))

    def test_encrypted_length_is_block_aligned(self) -> None:
        """Padding makes the packet a whole number of cipher blocks, with at least 4 bytes."""
        # (block, trailer bytes after the body, whether the length field counts) per suite.
        layout = {
            (b"aes128-gcm@openssh.com", b"hmac-sha2-256"): (16, 16, False),
            (b"aes256-gcm@openssh.com", b"hmac-sha2-256"): (16, 16, False),
            (b"chacha20-poly1305@openssh.com", b"hmac-sha2-256"): (8, 16, False),
            (b"aes128-ctr", b"hmac-sha2-256"): (16, 32, True),
            (b"aes192-ctr", b"hmac-sha2-512"): (16, 64, True),
            (b"aes256-ctr", b"hmac-sha2-256-etm@openssh.com"): (16, 32, False),
            (b"aes128-ctr", b"hmac-sha2-512-etm@openssh.com"): (16, 64, False),
            (b"none", b"none"): (8, 0, True),
        }
        for (cipher, mac), (block, trailer, length_counts) in layout.items():
            sealer, _ = pair(cipher, mac)
            for size in range(40):
                wire = b"".join(sealer.seal(0, b"x" * size))
                aligned = len(wire) - trailer - (0 if length_counts else 4)
                self.assertEqual(aligned % block, 0, (cipher, mac, size))
                padding = aligned - (0 if not length_counts else 4) - 1 - size
                self.assertGreaterEqual(padding, 4, (cipher, mac, size))

    def test_payload_is_never_in_clear(self) -> None:
        """The payload does not appear in what goes on the wire (except with 'none')."""
        secret = b"do not leak this string " * 4
        for cipher, mac in SUITES:
            if cipher == b"none":
                continue
            sealer, _ = pair(cipher, mac)
            wire = b"".join(sealer.seal(0, b"^", secret))
            self.assertNotIn(secret[:24], wire, cipher)


class TamperTests(SynchronousTestCase):
    def test_any_flipped_byte_is_rejected(self) -> None:
        """A change anywhere in an authenticated packet raises a protocol error."""
        for cipher, mac in SUITES:
            if cipher == b"none":
                continue
            sealer, _ = pair(cipher, mac)
            wire = b"".join(sealer.seal(3, b"^", os.urandom(100)))
            for position in range(0, len(wire), 7):
                _, opener = pair(cipher, mac)
                broken = bytearray(wire)
                broken[position] ^= 0x01
                with self.assertRaises(RemoteProtocolError, msg=(cipher, mac, position)):
                    read(opener, 3, bytes(broken))

    def test_wrong_sequence_number_is_rejected(self) -> None:
        """Sequence numbers are authenticated (GCM authenticates its own counter instead)."""
        for cipher, mac in SUITES:
            if cipher == b"none":
                continue
            sealer, opener = pair(cipher, mac)
            wire = b"".join(sealer.seal(5, b"payload"))
            if b"gcm" in cipher:
                # The nonce counts packets: a replayed or skipped packet fails.
                read(opener, 5, wire)
                with self.assertRaises(MacError):
                    read(opener, 6, wire)
                continue
            with self.assertRaises(RemoteProtocolError, msg=cipher):
                read(opener, 6, wire)

    def test_oversized_length_is_refused(self) -> None:
        """A length beyond the maximum packet size is refused before buffering it."""
        for cipher in (b"aes128-gcm@openssh.com", b"none"):
            _, opener = pair(cipher, b"hmac-sha2-256")
            head = (MAX_PACKET_SIZE + 16).to_bytes(4, "big")
            with self.assertRaises(RemoteProtocolError):
                opener.packet_size(0, head)
