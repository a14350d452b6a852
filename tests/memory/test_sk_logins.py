"""
FIDO security key logins to rfwd-server, in memory: a hand-driven client sends C{publickey}
requests signed by a software authenticator (L{tests.unit.test_sk_keys.Authenticator}) through
the real userauth service, and the test reads the answers: a touched signature logs in, an
untouched one does not unless the key's line says C{no-touch-required}, and C{verify-required}
wants the user-verified flag.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Any

from twisted.conch.ssh.common import NS
from twisted.conch.ssh.keys import Key
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import TestCase

from tests.support.hostile import HostileConnection, Phase
from tests.support.keys import new_key
from tests.support.logs import CapturedLog
from tests.support.memory import FakeBinder
from tests.support.sk import PRESENT, VERIFIED, Authenticator
from twisted_rfwd.protocol.certificates import USER_CERT
from twisted_rfwd.protocol.userauth import publickey_signed_data
from twisted_rfwd.server.auth import ForwardingAvatar
from twisted_rfwd.server.config import ServerConfig
from twisted_rfwd.server.factory import ForwardingServerFactory

MSG_USERAUTH_REQUEST = 50
MSG_USERAUTH_FAILURE = 51
MSG_USERAUTH_SUCCESS = 52
MSG_USERAUTH_PK_OK = 60


class SecurityKeyRig(TestCase):
    """A connection to rfwd-server's userauth, and what it answered."""

    def connect(self, *lines: bytes, **options: Any) -> HostileConnection:
        """A connection in user authentication, alice's authorized_keys holding C{lines}."""
        tmp = Path(self.mktemp())
        tmp.mkdir(parents=True)
        authorized = tmp / "authorized_keys"
        authorized.write_bytes(b"".join(line + b"\n" for line in lines))
        config = ServerConfig(host_keys=[new_key()], authorized_keys=str(authorized), **options)
        factory = ForwardingServerFactory(MemoryReactorClock(), config, FakeBinder())
        factory.doStart()
        self.addCleanup(factory.doStop)
        conn = HostileConnection(factory, Phase.USERAUTH, new_key(), tmp)
        conn.start()
        self.addCleanup(conn.close)
        return conn

    def request(self, conn: HostileConnection, token: Authenticator, sign: int | None) -> None:
        """A publickey request for C{token}'s key: a query, or signed with flags C{sign}."""
        algorithm = token.key_type
        blob = token.public_blob()
        head = NS(b"alice") + NS(b"ssh-connection") + NS(b"publickey")
        if sign is None:
            conn.send(MSG_USERAUTH_REQUEST, head + b"\x00" + NS(algorithm) + NS(blob))
            return
        session_id = conn.server.sessionID
        assert session_id is not None
        signed = publickey_signed_data(session_id, b"alice", b"ssh-connection", algorithm, blob)
        signature = token.sign(signed, sign)
        conn.send(MSG_USERAUTH_REQUEST, head + b"\x01" + NS(algorithm) + NS(blob) + NS(signature))

    def answers(self, conn: HostileConnection) -> list[int]:
        """The message numbers the server answered with after its SERVICE_ACCEPT."""
        return [n for n, _ in conn.heard if n not in (6, 7)]

    def login(self, conn: HostileConnection) -> Any:
        avatar = getattr(conn.server, "avatar", None)
        assert isinstance(avatar, ForwardingAvatar)
        return avatar.login


class SecurityKeyLoginTests(SecurityKeyRig):
    """A client that signs with a software FIDO token, against rfwd-server's userauth."""

    def test_query_is_accepted(self) -> None:
        """A listed sk key without a signature gets PK_OK, so ssh goes on to touch the token."""
        for kind in ("ed25519", "ecdsa"):
            token = Authenticator(kind)
            conn = self.connect(token.line())
            self.request(conn, token, None)
            self.assertEqual(self.answers(conn), [MSG_USERAUTH_PK_OK])
            self.assertEqual(conn.heard[-1][1], NS(token.key_type) + NS(token.public_blob()))

    def test_touched_logs_in(self) -> None:
        """A signature made with the token touched logs in, with both kinds of key."""
        log = CapturedLog(self)
        for kind in ("ed25519", "ecdsa"):
            token = Authenticator(kind)
            conn = self.connect(token.line())
            self.request(conn, token, PRESENT)
            self.assertEqual(self.answers(conn), [MSG_USERAUTH_SUCCESS])
            self.assertEqual(self.login(conn).key_type, token.key_type.decode())
        accepted = log.matching("Accepted publickey for alice from ")
        self.assertEqual(len(accepted), 2, log.lines)

    def test_untouched_refused(self) -> None:
        """Without the user-present flag the login fails, and the log says why."""
        log = CapturedLog(self)
        token = Authenticator()
        conn = self.connect(token.line())
        self.request(conn, token, 0)
        self.assertEqual(self.answers(conn), [MSG_USERAUTH_FAILURE])
        refused = log.matching("Refused publickey for alice from ")
        self.assertEqual(len(refused), 1, log.lines)
        self.assertTrue(
            refused[0].endswith("user presence (authenticator touch) requirement not met"),
            refused[0],
        )
        # The touched signature still logs in on the same connection.
        self.request(conn, token, PRESENT)
        self.assertEqual(self.answers(conn), [MSG_USERAUTH_FAILURE, MSG_USERAUTH_SUCCESS])

    def test_no_touch_required(self) -> None:
        """A key whose line says no-touch-required logs in without a touch."""
        token = Authenticator("ecdsa")
        conn = self.connect(token.line("no-touch-required"))
        self.request(conn, token, 0)
        self.assertEqual(self.answers(conn), [MSG_USERAUTH_SUCCESS])

    def test_verify_required(self) -> None:
        """verify-required: a touch alone fails; touch plus PIN (user verified) logs in."""
        log = CapturedLog(self)
        token = Authenticator()
        conn = self.connect(token.line("verify-required"))
        self.request(conn, token, PRESENT)
        self.request(conn, token, VERIFIED)
        self.assertEqual(self.answers(conn), [MSG_USERAUTH_FAILURE, MSG_USERAUTH_SUCCESS])
        self.assertEqual(len(log.matching("user verification requirement not met")), 1)

    def test_signature_over_another_session(self) -> None:
        """A signature the token made for another session's request does not verify."""
        log = CapturedLog(self)
        token = Authenticator()
        conn = self.connect(token.line())
        blob = token.public_blob()
        signed = publickey_signed_data(b"other", b"alice", b"ssh-connection", token.key_type, blob)
        conn.send(
            MSG_USERAUTH_REQUEST,
            NS(b"alice")
            + NS(b"ssh-connection")
            + NS(b"publickey")
            + b"\x01"
            + NS(token.key_type)
            + NS(blob)
            + NS(token.sign(signed, PRESENT)),
        )
        self.assertEqual(self.answers(conn), [MSG_USERAUTH_FAILURE])
        refused = log.matching("Refused publickey for alice from ")
        self.assertEqual(len(refused), 1, log.lines)
        self.assertTrue(refused[0].endswith(": bad signature"), refused[0])

    def test_pubkey_accepted_algorithms(self) -> None:
        """PubkeyAcceptedAlgorithms decides which security key types may log in."""
        log = CapturedLog(self)
        refused, allowed = Authenticator("ed25519"), Authenticator("ecdsa")
        conn = self.connect(
            refused.line(), allowed.line(), pubkey_accepted_algorithms=[allowed.key_type]
        )
        self.request(conn, refused, PRESENT)
        self.request(conn, allowed, PRESENT)
        self.assertEqual(self.answers(conn), [MSG_USERAUTH_FAILURE, MSG_USERAUTH_SUCCESS])
        self.assertEqual(len(log.matching("is not in PubkeyAcceptedAlgorithms")), 1)


def sk_certificate(token: Authenticator, ca: Key, extensions: bytes) -> bytes:
    """A user certificate for C{token}'s sk-ssh-ed25519 key, signed by C{ca}."""
    plain = token.public_blob()
    body = (
        NS(b"sk-ssh-ed25519-cert-v01@openssh.com")
        + NS(os.urandom(32))
        + plain[len(NS(b"sk-ssh-ed25519@openssh.com")) :]
        + struct.pack(">QL", 9, USER_CERT)
        + NS(b"alice token")
        + NS(NS(b"alice"))
        + struct.pack(">QQ", 0, 0xFFFFFFFFFFFFFFFF)
        + NS(b"")
        + NS(extensions)
        + NS(b"")
        + NS(ca.public().blob())
    )
    return body + NS(ca.sign(body))


class SecurityKeyCertificateTests(SecurityKeyRig):
    """An sk-ssh-ed25519 key with a user certificate, trusted through TrustedUserCAKeys."""

    def certified(self, extensions: bytes) -> tuple[HostileConnection, Authenticator, bytes]:
        tmp = Path(self.mktemp())
        tmp.mkdir(parents=True)
        ca = new_key()
        ca_file = tmp / "ca.pub"
        ca_file.write_bytes(ca.public().toString("OPENSSH") + b"\n")
        token = Authenticator("ed25519")
        conn = self.connect(trusted_user_ca_keys=str(ca_file))
        return conn, token, sk_certificate(token, ca, extensions)

    def send_signed(
        self, conn: HostileConnection, token: Authenticator, cert: bytes, flags: int
    ) -> None:
        algorithm = b"sk-ssh-ed25519-cert-v01@openssh.com"
        session_id = conn.server.sessionID
        assert session_id is not None
        signed = publickey_signed_data(session_id, b"alice", b"ssh-connection", algorithm, cert)
        signature = token.sign(signed, flags)
        head = NS(b"alice") + NS(b"ssh-connection") + NS(b"publickey")
        conn.send(MSG_USERAUTH_REQUEST, head + b"\x01" + NS(algorithm) + NS(cert) + NS(signature))

    def test_certificate_touched_logs_in(self) -> None:
        """A touched signature with the sk key's certificate logs in."""
        conn, token, cert = self.certified(NS(b"permit-port-forwarding") + NS(b""))
        self.send_signed(conn, token, cert, PRESENT)
        self.assertEqual(self.answers(conn), [MSG_USERAUTH_SUCCESS])

    def test_certificate_untouched_refused_unless_no_touch_required(self) -> None:
        """Without a touch the certificate fails, unless it carries no-touch-required."""
        conn, token, cert = self.certified(NS(b"permit-port-forwarding") + NS(b""))
        self.send_signed(conn, token, cert, 0)
        self.assertEqual(self.answers(conn), [MSG_USERAUTH_FAILURE])
        extensions = NS(b"no-touch-required") + NS(b"") + NS(b"permit-port-forwarding") + NS(b"")
        conn, token, cert = self.certified(extensions)
        self.send_signed(conn, token, cert, 0)
        self.assertEqual(self.answers(conn), [MSG_USERAUTH_SUCCESS])
