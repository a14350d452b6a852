"""
The transport's phase table: the pure rules, and both ends enforcing them on a peer that breaks
them (in memory, with rfwd's own client made to misbehave at one point).
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

from twisted.conch.ssh.common import NS
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial.unittest import TestCase

from tests.support.hostile import plain_packet
from tests.support.keys import new_key
from tests.support.logs import CapturedLog
from tests.support.memory import MemoryRig
from twisted_rfwd.client.tunnel import ClientTransport
from twisted_rfwd.errors import MalformedPacket
from twisted_rfwd.protocol.messages import check_shape, loggable
from twisted_rfwd.protocol.phases import (
    MSG_KEXINIT,
    MSG_NEWKEYS,
    MSG_SERVICE_REQUEST,
    MSG_USERAUTH_REQUEST,
    KexStage,
    Phase,
    Side,
    accepted_messages,
    refusal,
)
from twisted_rfwd.protocol.spec import parse_remote_forward
from twisted_rfwd.server.auth import ServerUserAuth
from twisted_rfwd.server.config import ServerConfig
from twisted_rfwd.server.factory import ForwardingServerFactory, ServerTransport


class TableTests(TestCase):
    def test_nothing_of_userauth_before_the_first_newkeys(self) -> None:
        """Neither end accepts a service or userauth message in the first key exchange."""
        for side in Side:
            for stage in KexStage:
                for strict in (False, True):
                    allowed = accepted_messages(side, Phase.FIRST_KEX, stage, strict)
                    self.assertFalse(allowed & {5, 6, 50, 51, 52, 60, 80, 90, 94})

    def test_newkeys_only_once_the_exchange_is_complete(self) -> None:
        """NEWKEYS is accepted in the KEYED stage and no other, in every phase."""
        for side in Side:
            for phase in Phase:
                for stage in KexStage:
                    allowed = accepted_messages(side, phase, stage, False)
                    self.assertEqual(MSG_NEWKEYS in allowed, stage is KexStage.KEYED)

    def test_strict_kex_allows_only_disconnect_besides_the_exchange(self) -> None:
        """Under strict KEX the first exchange admits no IGNORE, DEBUG or UNIMPLEMENTED."""
        allowed = accepted_messages(Side.SERVER, Phase.FIRST_KEX, KexStage.STARTED, True)
        self.assertEqual(allowed, {1, 30})
        relaxed = accepted_messages(Side.SERVER, Phase.FIRST_KEX, KexStage.STARTED, False)
        self.assertEqual(relaxed, {1, 2, 3, 4, 30})

    def test_one_service_request_per_connection(self) -> None:
        """A server takes SERVICE_REQUEST only before a service runs."""
        idle = KexStage.IDLE
        self.assertIn(
            MSG_SERVICE_REQUEST, accepted_messages(Side.SERVER, Phase.NO_SERVICE, idle, False)
        )
        for phase in (Phase.USERAUTH, Phase.CONNECTION):
            self.assertNotIn(
                MSG_SERVICE_REQUEST, accepted_messages(Side.SERVER, phase, idle, False)
            )

    def test_a_rekey_admits_only_key_exchange_messages(self) -> None:
        """Between the peer's KEXINIT and its NEWKEYS, channel messages are refused."""
        allowed = accepted_messages(Side.CLIENT, Phase.CONNECTION, KexStage.STARTED, False)
        self.assertEqual(allowed, {1, 2, 3, 4, 31})

    def test_connection_messages_only_after_login(self) -> None:
        """Channel and global requests are refused before the connection phase."""
        for side in Side:
            for phase in (Phase.FIRST_KEX, Phase.NO_SERVICE, Phase.USERAUTH):
                allowed = accepted_messages(side, phase, KexStage.IDLE, False)
                self.assertFalse(allowed & set(range(80, 128)))

    def test_refusal_names_number_and_length_only(self) -> None:
        """The reason for a refusal says the message's number, name and length."""
        text = refusal(Side.SERVER, Phase.USERAUTH, KexStage.IDLE, 200, 32769)
        self.assertEqual(
            text, "unexpected message type 200 during user authentication (unassigned, 32769 bytes)"
        )
        second = refusal(Side.SERVER, Phase.USERAUTH, KexStage.IDLE, MSG_SERVICE_REQUEST, 17)
        self.assertIn("a second service request", second)


class ShapeTests(TestCase):
    def test_truncated_messages_are_the_peers_fault(self) -> None:
        """A truncated KEXINIT, userauth request or DISCONNECT is a MalformedPacket."""
        for message, payload in (
            (MSG_KEXINIT, b"\x00" * 16 + NS(b"curve25519-sha256")),
            (MSG_USERAUTH_REQUEST, NS(b"alice") + NS(b"ssh-connection")),
            (MSG_USERAUTH_REQUEST, NS(b"a") + NS(b"s") + NS(b"publickey") + b"\x01" + NS(b"x")),
            (1, b"\x00\x00"),
            (MSG_NEWKEYS, b"x"),
        ):
            with self.assertRaises(MalformedPacket):
                check_shape(Side.SERVER, message, payload)

    def test_loggable_is_short_and_printable(self) -> None:
        """Peer bytes in a log line are cut to 64 characters and lose control characters."""
        self.assertEqual(loggable(b"al\x1bice"), "al?ice")
        self.assertEqual(loggable(b"x" * 1000), "x" * 64 + "...")


class _ClientThat(ClientTransport):
    """rfwd's client, made to misbehave at one point chosen by the test."""

    misbehave: Any = None

    def send_now(self, message: int, payload: bytes) -> None:
        seq = self.outgoingPacketSequence
        self._write(b"".join(self._sealer.seal(seq, bytes((message,)) + payload)))
        self.outgoingPacketSequence = seq + 1

    def sendKexInit(self) -> None:
        super().sendKexInit()
        if type(self).misbehave == "early-userauth":
            # Past the queue that holds such messages until the exchange ends.
            self.send_now(MSG_SERVICE_REQUEST, NS(b"ssh-userauth"))
            self.send_now(MSG_USERAUTH_REQUEST, NS(b"alice") + NS(b"x") + NS(b"none"))

    def _newKeys(self) -> None:
        super()._newKeys()
        if type(self).misbehave == "unassigned" and self._phase() is Phase.NO_SERVICE:
            for _ in range(50):
                self.sendPacket(200, b"\xab" * 32768)
        elif type(self).misbehave == "unimplemented":
            for seq in range(200):
                self.sendPacket(3, struct.pack(">L", seq))


def _client(misbehave: str) -> type[ClientTransport]:
    return type(f"Client_{misbehave}", (_ClientThat,), {"misbehave": misbehave})


class EnforcementTests(TestCase):
    def rig(self) -> MemoryRig:
        tmp = Path(self.mktemp())
        tmp.mkdir()
        return MemoryRig(tmp, [parse_remote_forward("8080:127.0.0.1:80")])

    def refused(self, misbehave: str) -> tuple[str, CapturedLog]:
        logs = CapturedLog(self)
        rig = self.rig()
        self.failureResultOf(rig.connect(_client(misbehave)))
        reason = str(self.successResultOf(rig.tunnel.when_closed()))
        self.assertEqual(logs.failures(), [], "a bad peer must not cause a traceback")
        return reason, logs

    def test_userauth_before_the_key_exchange_is_refused(self) -> None:
        """SERVICE_REQUEST before the first NEWKEYS ends the connection; nothing is answered."""
        reason, _ = self.refused("early-userauth")
        self.assertIn("unexpected message type 5 during the initial key exchange", reason)

    def test_unassigned_message_is_one_short_line(self) -> None:
        """
        A flood of 32 KiB packets of an unassigned type logs one line with the number and
        length, never the payload, and the connection ends at the first.
        """
        reason, logs = self.refused("unassigned")
        self.assertIn("unexpected message type 200", reason)
        lines = [line for line in logs.lines if "message type 200" in line]
        self.assertEqual(len(lines), 1, lines)
        self.assertIn("32769 bytes", lines[0])
        everything = "".join(logs.lines) + repr(logs.events)
        self.assertNotIn("\\xab\\xab", everything)
        self.assertNotIn("\xab\xab", everything)

    def test_repeated_unimplemented_is_logged_once(self) -> None:
        """A peer repeating UNIMPLEMENTED cannot fill the log: one line, whatever the count."""
        logs = CapturedLog(self)
        rig = self.rig()
        self.successResultOf(rig.connect(_client("unimplemented")))
        lines = [line for line in logs.lines if "did not understand" in line]
        self.assertEqual(len(lines), 1)

    def test_a_second_userauth_service_is_refused(self) -> None:
        """SERVICE_REQUEST during authentication cannot restart it (and its failure count)."""
        logs = CapturedLog(self)
        rig = self.rig()
        server = rig.factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 50000))
        assert isinstance(server, ServerTransport)
        transport = StringTransport()
        server.makeConnection(transport)
        server.dataReceived(b"SSH-2.0-test\r\n")
        # The phase logic alone: a server in user authentication, no key exchange running.
        server._initial_kex = False
        server.setService(ServerUserAuth(rig.reactor, 120, 6))
        server.dataReceived(plain_packet(bytes((MSG_SERVICE_REQUEST,)) + NS(b"ssh-userauth")))
        self.assertTrue(transport.disconnecting)
        self.assertTrue(any("a second service request" in line for line in logs.lines))
        self.assertEqual(logs.failures(), [])


def kexinit() -> bytes:
    """A client's KEXINIT offering what rfwd-server has."""
    names = [
        b"curve25519-sha256",
        b"ssh-ed25519",
        b"aes128-ctr",
        b"aes128-ctr",
        b"hmac-sha2-256",
        b"hmac-sha2-256",
        b"none",
        b"none",
        b"",
        b"",
    ]
    return bytes((MSG_KEXINIT,)) + b"\x07" * 16 + b"".join(NS(n) for n in names) + b"\x00" * 5


class FramingTests(TestCase):
    def server(self) -> tuple[ServerTransport, StringTransport]:
        tmp = Path(self.mktemp())
        tmp.mkdir()
        (tmp / "keys").write_bytes(b"")
        config = ServerConfig(host_keys=[new_key()], authorized_keys=str(tmp / "keys"))
        factory = ForwardingServerFactory(MemoryReactorClock(), config)
        factory.doStart()
        server = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 50000))
        assert isinstance(server, ServerTransport)
        transport = StringTransport()
        server.makeConnection(transport)
        return server, transport

    def test_lines_before_the_clients_version_are_refused(self) -> None:
        """RFC 4253 section 4.2 lets only a server send lines before its identification."""
        server, transport = self.server()
        server.dataReceived(b"hello there\r\nSSH-2.0-late\r\n")
        self.assertTrue(transport.disconnecting)
        self.assertIn(b"before its identification line", transport.value())

    def test_newkeys_without_an_exchange_is_refused(self) -> None:
        """NEWKEYS before or right after KEXINIT is refused, never taken as new keys."""
        for before in (b"", plain_packet(kexinit())):
            logs = CapturedLog(self)
            server, transport = self.server()
            server.dataReceived(
                b"SSH-2.0-test\r\n"
                + before
                + plain_packet(bytes((MSG_NEWKEYS,)))
                + plain_packet(bytes((MSG_SERVICE_REQUEST,)) + NS(b"ssh-userauth"))
            )
            self.assertTrue(transport.disconnecting)
            self.assertIn(b"NEWKEYS before the key exchange was complete", transport.value())
            self.assertNotIn(b"ssh-userauth", transport.value())
            self.assertEqual(logs.failures(), [])

    def test_overlong_identification_line_is_refused(self) -> None:
        """An identification line of more than 255 bytes is refused."""
        server, transport = self.server()
        server.dataReceived(b"SSH-2.0-" + b"x" * 300)
        self.assertTrue(transport.disconnecting)

    def test_plaintext_packet_must_be_a_multiple_of_eight(self) -> None:
        """A plaintext packet whose length is not a multiple of 8 ends the connection."""
        server, transport = self.server()
        payload = bytes((2,)) + b"ignored!"
        padding = 4
        body = bytes((padding,)) + payload + b"\x00" * padding  # 4 + 14 = 18 bytes in all
        server.dataReceived(b"SSH-2.0-test\r\n" + struct.pack(">L", len(body)) + body)
        self.assertTrue(transport.disconnecting)
        self.assertIn(b"not a multiple of 8", transport.value())

    def test_plaintext_packet_of_a_multiple_of_eight_is_read(self) -> None:
        """The same IGNORE, padded to a multiple of 8, is accepted."""
        server, transport = self.server()
        server.dataReceived(b"SSH-2.0-test\r\n" + plain_packet(bytes((2,)) + NS(b"ok")))
        self.assertFalse(transport.disconnecting)
