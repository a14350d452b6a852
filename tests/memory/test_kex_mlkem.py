"""
C{mlkem768x25519-sha256} between rfwd-client and rfwd-server in memory: negotiated by default with
strict KEX, re-keyed from either end, curve25519 when one side lacks it, and a peer's garbage C_INIT
or S_REPLY refused as its fault.  (Against OpenSSH: tests.processes.test_algorithms_interop.)
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from twisted.logger import formatEvent
from twisted.trial.unittest import TestCase

from tests.support.apps import pattern
from tests.support.hostile import LogCapture
from tests.support.memory import MemoryRig
from twisted_rfwd.client.tunnel import ClientTransport, ForwardStatus
from twisted_rfwd.protocol.kex import MLKEM768X25519_SHA256, HybridClient
from twisted_rfwd.protocol.phases import MSG_KEX_ECDH_INIT, MSG_KEX_ECDH_REPLY
from twisted_rfwd.protocol.spec import parse_remote_forward
from twisted_rfwd.protocol.wire import Reader, pack_string
from twisted_rfwd.server.factory import ServerTransport

CURVE25519 = b"curve25519-sha256"


class _BadInitClient(ClientTransport):
    """Sends C_INIT with the garbage the test sets in place of its own."""

    bad_init = b""

    def start_hybrid_kex(self) -> None:
        self.sendPacket(MSG_KEX_ECDH_INIT, pack_string(self.bad_init))


def _same(data: bytes) -> bytes:
    return data


def _bad_reply_server(
    spoil_reply: Callable[[bytes], bytes] = _same,
    spoil_signature: Callable[[bytes], bytes] = _same,
) -> type[ServerTransport]:
    """A server whose KEX_ECDH_REPLY has its S_REPLY or signature made wrong on the way out."""

    class BadReplyServer(ServerTransport):
        def sendPacket(self, messageType: int, payload: bytes) -> None:
            if messageType == MSG_KEX_ECDH_REPLY:
                reader = Reader(payload, "reply")
                host_key, s_reply, signature = reader.string(), reader.string(), reader.string()
                payload = (
                    pack_string(host_key)
                    + pack_string(spoil_reply(s_reply))
                    + pack_string(spoil_signature(signature))
                )
            super().sendPacket(messageType, payload)

    return BadReplyServer


class HybridKexTests(TestCase):
    """rfwd against itself with the post-quantum hybrid."""

    def rig(self, **server_options: object) -> MemoryRig:
        tmp = Path(self.mktemp())
        tmp.mkdir()
        return MemoryRig(tmp, [parse_remote_forward("8080:127.0.0.1:80")], **server_options)

    def check_forward(self, rig: MemoryRig, seed: int) -> None:
        app = rig.app_connects(8080, peer_port=50000 + seed)
        destination = rig.destination_accepts()
        data = pattern(100_000, seed=seed)
        app.receive(data)
        rig.flush()
        self.assertEqual(destination.drain(), data)

    def test_negotiated_by_default_with_strict_kex(self) -> None:
        """
        With the defaults, both ends agree on mlkem768x25519-sha256 under strict KEX, log it
        in the line the process tests look for, and the forward carries data.
        """
        rig = self.rig()
        with LogCapture() as capture:
            tunnel = self.successResultOf(rig.connect())
        assert rig.server is not None and rig.client is not None
        self.assertEqual(rig.server.kexAlg, MLKEM768X25519_SHA256)
        self.assertEqual(rig.client.kexAlg, MLKEM768X25519_SHA256)
        self.assertTrue(rig.server.strict_kex and rig.client.strict_kex)
        self.assertEqual(tunnel.forwards[0].status, ForwardStatus.LISTENING)
        lines = [formatEvent(e) for e in capture.events]
        self.assertEqual(
            len([line for line in lines if ": mlkem768x25519-sha256, host key" in line]), 2
        )
        self.check_forward(rig, 1)

    def test_survives_rekeys_from_either_end(self) -> None:
        """Re-keys started by the client, then the server, use the hybrid again; data flows."""
        rig = self.rig()
        self.successResultOf(rig.connect())
        assert rig.server is not None and rig.client is not None
        for rekeying, seed in ((rig.client, 2), (rig.server, 3)):
            before = rig.server.currentEncryptions
            rekeying.sendKexInit()
            rig.flush()
            self.assertIsNot(rig.server.currentEncryptions, before)
            self.assertFalse(rig.server.key_exchange_running or rig.client.key_exchange_running)
            self.assertEqual(rig.client.kexAlg, MLKEM768X25519_SHA256)
            self.check_forward(rig, seed)
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_curve25519_when_the_server_lacks_it(self) -> None:
        """A server without the hybrid (as OpenSSH 9.2) gets curve25519 from our client."""
        rig = self.rig(kex_algorithms=[CURVE25519])
        self.successResultOf(rig.connect())
        assert rig.client is not None
        self.assertEqual(rig.client.kexAlg, CURVE25519)
        self.check_forward(rig, 4)

    def test_curve25519_when_the_client_lacks_it(self) -> None:
        """A client without the hybrid gets curve25519 from our server."""
        rig = self.rig()
        rig.client_config.kex_algorithms = [CURVE25519]
        self.successResultOf(rig.connect())
        assert rig.server is not None
        self.assertEqual(rig.server.kexAlg, CURVE25519)
        self.check_forward(rig, 5)


class HybridGarbageTests(TestCase):
    """A peer's broken C_INIT or S_REPLY ends the connection as its fault: no traceback."""

    def rig(self) -> MemoryRig:
        tmp = Path(self.mktemp())
        tmp.mkdir()
        return MemoryRig(tmp, [parse_remote_forward("8080:127.0.0.1:80")])

    def refused(self, rig: MemoryRig, connect: object, expected: str) -> None:
        with LogCapture() as capture:
            assert callable(connect)
            ready = connect()
        self.failureResultOf(ready)
        lines = [formatEvent(e) for e in capture.events]
        self.assertTrue(any(expected in line for line in lines), lines)
        self.assertEqual(self.flushLoggedErrors(), [])
        assert rig.server is not None
        self.assertTrue(rig.server.transport.disconnecting or rig.server.transport.disconnected)

    def bad_init(self, c_init: bytes, expected: str) -> None:
        rig = self.rig()
        client_type = type("Client", (_BadInitClient,), {"bad_init": c_init})
        self.refused(rig, lambda: rig.connect(client_type), expected)

    def test_short_client_init(self) -> None:
        """A C_INIT one byte short: the server's protocol error names the length."""
        self.bad_init(
            bytes(1215),
            ": malformed SSH_MSG_KEX_ECDH_INIT: C_INIT of 1215 bytes, not 1216; disconnecting",
        )

    def test_invalid_encapsulation_key(self) -> None:
        """An ML-KEM key that fails the modulus check is refused by the server."""
        valid = HybridClient().c_init
        self.bad_init(b"\xff" * 1184 + valid[1184:], "invalid ML-KEM-768 encapsulation key")

    def test_low_order_client_x25519(self) -> None:
        """An X25519 point of low order from the client is refused by the server."""
        valid = HybridClient().c_init
        self.bad_init(valid[:1184] + bytes(32), "invalid X25519 public key")

    def bad_reply(self, expected: str, **spoil: Callable[[bytes], bytes]) -> None:
        rig = self.rig()
        rig.factory.protocol = _bad_reply_server(**spoil)
        self.refused(rig, rig.connect, expected)

    def test_long_server_reply(self) -> None:
        """An S_REPLY one byte long: the client's protocol error names the length."""
        self.bad_reply(
            "malformed SSH_MSG_KEX_ECDH_REPLY: S_REPLY of 1121 bytes, not 1120",
            spoil_reply=lambda s_reply: s_reply + b"\x00",
        )

    def test_low_order_server_x25519(self) -> None:
        """An X25519 point of low order from the server is refused by the client."""
        self.bad_reply(
            "invalid X25519 public key",
            spoil_reply=lambda s_reply: s_reply[:1088] + bytes(32),
        )

    def test_signature_over_another_exchange(self) -> None:
        """A signature that is not of this exchange: the client disconnects, one error line."""
        self.bad_reply(
            "the server's signature of the key exchange is wrong",
            spoil_signature=lambda signature: signature[:-1] + bytes([signature[-1] ^ 1]),
        )

    def test_garbled_ciphertext(self) -> None:
        """A garbled ciphertext gives the client another K: the signature does not match."""
        self.bad_reply(
            "the server's signature of the key exchange is wrong",
            spoil_reply=lambda s_reply: bytes([s_reply[0] ^ 1]) + s_reply[1:],
        )
