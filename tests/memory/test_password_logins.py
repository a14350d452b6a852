"""
Password logins to rfwd-server, in memory: rfwd-client logging in with C{password} and with
C{keyboard-interactive}, and a hand-driven client for what an honest one never does (wrong
passwords until MaxAuthTries, unknown users, answers without a question, requests sent before
the last one was answered), the access lists, and the rule that every attempt costs one bcrypt.
"""

from __future__ import annotations

import dataclasses
import struct
from pathlib import Path
from typing import Any

import bcrypt
from twisted.conch.ssh.common import NS
from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import TestCase

from tests.support.hostile import HostileConnection, Phase
from tests.support.keys import new_key, public_line
from tests.support.logs import CapturedLog
from tests.support.memory import FakeBinder, MemoryRig
from twisted_rfwd.client.forwards import ForwardStatus
from twisted_rfwd.errors import AuthenticationFailed
from twisted_rfwd.protocol.spec import parse_remote_forward
from twisted_rfwd.server.auth import ForwardingAvatar
from twisted_rfwd.server.config import ServerConfig
from twisted_rfwd.server.factory import ForwardingServerFactory, MatchHook
from twisted_rfwd.server.passwords import PasswordChecker, dummy_hash

PASSWORD = "alice's password"
WRONG = "not alice's password"
# Cost 4: the cheapest bcrypt, so the tests stay fast.
ALICE_HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4))

MSG_USERAUTH_REQUEST = 50
MSG_USERAUTH_FAILURE = 51
MSG_USERAUTH_SUCCESS = 52
MSG_USERAUTH_60 = 60
MSG_USERAUTH_INFO_RESPONSE = 61
MSG_DISCONNECT = 1


def write_hashes(directory: Path) -> Path:
    path = directory / "passwords"
    path.write_bytes(b"# users\nalice:" + ALICE_HASH + b"\n")
    return path


class ClientLoginTests(TestCase):
    """rfwd-client, with a password and no key, against rfwd-server in memory."""

    def rig(self, password: str, keep_key: bool = False, **server_options: Any) -> MemoryRig:
        """The client has C{password} and (if C{keep_key}) a key listed in authorized_keys."""
        tmp = Path(self.mktemp())
        tmp.mkdir(parents=True)
        server_options.setdefault("password_hashes", str(write_hashes(tmp)))
        rig = MemoryRig(tmp, [parse_remote_forward("8080:127.0.0.1:80")], **server_options)
        if not keep_key:
            rig.client_config.identities = []
        rig.client_config.password = password
        return rig

    def logged_in_with(self, rig: MemoryRig) -> str:
        assert rig.server is not None
        avatar = rig.server.avatar
        assert isinstance(avatar, ForwardingAvatar)
        self.assertEqual(avatar.login.user, "alice")
        return avatar.login.method

    def test_password_login_forwards(self) -> None:
        """PasswordAuthentication: the client's password logs in and the forward carries data."""
        rig = self.rig(PASSWORD, password_authentication=True)
        tunnel = self.successResultOf(rig.connect())
        self.assertEqual(tunnel.forwards[0].status, ForwardStatus.LISTENING)
        self.assertEqual(self.logged_in_with(rig), "password")
        app = rig.app_connects(8080)
        destination = rig.destination_accepts()
        app.receive(b"through the tunnel")
        rig.flush()
        self.assertEqual(destination.drain(), b"through the tunnel")

    def test_keyboard_interactive_login(self) -> None:
        """KbdInteractiveAuthentication: the one 'Password:' question is answered and accepted."""
        rig = self.rig(PASSWORD, kbd_interactive_authentication=True)
        tunnel = self.successResultOf(rig.connect())
        self.assertEqual(tunnel.forwards[0].status, ForwardStatus.LISTENING)
        self.assertEqual(self.logged_in_with(rig), "keyboard-interactive")

    def test_off_by_default(self) -> None:
        """Without PasswordAuthentication, a right password is never asked for: only keys."""
        log = CapturedLog(self)
        rig = self.rig(PASSWORD)
        error = self.failureResultOf(rig.connect(), AuthenticationFailed).value
        self.assertEqual(error.server_methods, ["publickey"])
        self.assertEqual(error.tried, [])
        self.assertEqual(log.matching("Failed password"), [])

    def test_wrong_password(self) -> None:
        """A wrong password fails; the log says who and from where, never the password."""
        log = CapturedLog(self)
        rig = self.rig(WRONG, password_authentication=True)
        error = self.failureResultOf(rig.connect(), AuthenticationFailed).value
        self.assertEqual(error.tried, ["password"])
        failed = log.matching("Failed password for alice from ")
        self.assertEqual(len(failed), 1)
        self.assertTrue(failed[0].endswith(": wrong password"), failed[0])
        self.assertEqual([line for line in log.lines if WRONG in line], [])

    def test_pubkey_authentication_no(self) -> None:
        """PubkeyAuthentication no: the server offers only passwords, even to a listed key."""
        rig = self.rig(
            WRONG, keep_key=True, password_authentication=True, pubkey_authentication=False
        )
        error = self.failureResultOf(rig.connect(), AuthenticationFailed).value
        self.assertEqual(error.server_methods, ["password"])
        self.assertEqual(error.tried, ["password"])


class _Pending:
    """A password check that waits until the test decides it: the calls, with Deferreds."""

    def __init__(self) -> None:
        self.calls: list[tuple[bytes, bytes, Deferred[bool]]] = []


class HandDrivenTests(TestCase):
    """A client that sends exactly the userauth messages a test says, and reads the answers."""

    def connect(
        self,
        verify: Any = None,
        pending: _Pending | None = None,
        match: MatchHook | None = None,
        **options: Any,
    ) -> tuple[HostileConnection, list[tuple[bytes, bytes]]]:
        """
        A connection in user authentication to a server with passwords on (unless C{options}
        say otherwise); returns it and the (password, hash) pairs bcrypt was asked to check.
        """
        tmp = Path(self.mktemp())
        tmp.mkdir(parents=True)
        self.hashes = write_hashes(tmp)
        self.key = new_key()
        authorized = tmp / "authorized_keys"
        authorized.write_bytes(public_line(self.key) + b"\n")
        if match is None:
            options.setdefault("password_authentication", True)
        config = ServerConfig(
            host_keys=[new_key()],
            authorized_keys=str(authorized),
            password_hashes=str(self.hashes),
            **options,
        )
        reactor = MemoryReactorClock()
        factory = ForwardingServerFactory(reactor, config, FakeBinder(), match=match)
        factory.doStart()
        checked: list[tuple[bytes, bytes]] = []

        def recording(password: bytes, hashed: bytes) -> bool:
            checked.append((password, hashed))
            return bcrypt.checkpw(password, hashed)

        checker = PasswordChecker(reactor, verify=verify or recording)
        if pending is not None:

            def run(hashed: bytes, password: bytes) -> Deferred[bool]:
                d: Deferred[bool] = Deferred()
                pending.calls.append((password, hashed, d))
                return d

            checker._run = run  # type: ignore[method-assign]
        factory.portal.registerChecker(checker)
        conn = HostileConnection(factory, Phase.USERAUTH, self.key, tmp)
        conn.start()
        self.addCleanup(conn.close)
        return conn, checked

    def password(self, conn: HostileConnection, password: str, user: bytes = b"alice") -> None:
        conn.send(
            MSG_USERAUTH_REQUEST,
            NS(user) + NS(b"ssh-connection") + NS(b"password") + b"\x00" + NS(password.encode()),
        )

    def keyboard(self, conn: HostileConnection, user: bytes = b"alice") -> None:
        conn.send(
            MSG_USERAUTH_REQUEST,
            NS(user) + NS(b"ssh-connection") + NS(b"keyboard-interactive") + NS(b"") + NS(b""),
        )

    def answer(self, conn: HostileConnection, *answers: str) -> None:
        body = struct.pack(">L", len(answers)) + b"".join(NS(a.encode()) for a in answers)
        conn.send(MSG_USERAUTH_INFO_RESPONSE, body)

    def answers(self, conn: HostileConnection) -> list[tuple[int, bytes]]:
        """What the server said after its SERVICE_ACCEPT."""
        return [(n, p) for n, p in conn.heard if n not in (6, 7)]

    def test_wrong_passwords_counted_by_max_auth_tries(self) -> None:
        """Each wrong password is a failure: the MaxAuthTries-th ends the connection."""
        conn, _ = self.connect(max_auth_tries=3)
        failure = (MSG_USERAUTH_FAILURE, NS(b"publickey,password") + b"\x00")
        self.password(conn, WRONG)
        self.password(conn, WRONG)
        self.assertEqual(self.answers(conn), [failure, failure])
        self.assertFalse(conn.disconnected)
        self.password(conn, WRONG)
        self.assertTrue(conn.disconnected)
        self.assertEqual(self.answers(conn)[2][0], MSG_DISCONNECT)
        self.assertIn(b"Too many authentication failures", self.answers(conn)[2][1])

    def test_unknown_user_fails_the_same_way(self) -> None:
        """An unknown user gets the same answer as a wrong password, and it counts."""
        log = CapturedLog(self)
        conn, _ = self.connect(max_auth_tries=3)
        self.password(conn, WRONG)
        self.password(conn, PASSWORD, user=b"mallory")
        first, second = self.answers(conn)
        self.assertEqual(first, second)
        self.password(conn, PASSWORD, user=b"mallory")
        self.assertTrue(conn.disconnected)
        self.assertEqual(
            len(log.matching("Failed password for mallory from 127.0.0.1:40999: no password")), 2
        )

    def test_every_attempt_runs_bcrypt(self) -> None:
        """
        An unknown user's password is checked against a dummy hash of the file's cost, as a
        known user's against theirs: both take one bcrypt computation.
        """
        conn, checked = self.connect()
        self.password(conn, WRONG)
        self.password(conn, "guess", user=b"mallory")
        self.assertEqual(checked, [(WRONG.encode(), ALICE_HASH), (b"guess", dummy_hash(4))])

    def test_refused_user_runs_bcrypt_and_fails_like_a_wrong_password(self) -> None:
        """
        DenyUsers: the right password fails exactly as a wrong one does, after a full bcrypt,
        and counts; the log says why once.
        """
        log = CapturedLog(self)
        conn, checked = self.connect(deny_users=["alice@127.0.0.0/8"], max_auth_tries=3)
        self.password(conn, WRONG)
        self.password(conn, PASSWORD)
        first, second = self.answers(conn)
        self.assertEqual(first, second)
        self.assertEqual(first[0], MSG_USERAUTH_FAILURE)
        self.assertEqual(checked, [(WRONG.encode(), ALICE_HASH), (PASSWORD.encode(), ALICE_HASH)])
        self.assertEqual(
            log.matching("User alice from 127.0.0.1 not allowed because listed in DenyUsers"),
            ["User alice from 127.0.0.1 not allowed because listed in DenyUsers"],
        )
        self.password(conn, PASSWORD)
        self.assertTrue(conn.disconnected)

    def test_allow_users_refuses_keys_too(self) -> None:
        """AllowUsers without the user: a listed key is not even acceptable (no PK_OK)."""
        log = CapturedLog(self)
        conn, _ = self.connect(allow_users=["bob"])
        blob = self.key.public().blob()
        conn.send(
            MSG_USERAUTH_REQUEST,
            NS(b"alice")
            + NS(b"ssh-connection")
            + NS(b"publickey")
            + b"\x00"
            + NS(b"ssh-ed25519")
            + NS(blob),
        )
        self.password(conn, PASSWORD)
        self.assertEqual([n for n, _ in self.answers(conn)], [51, 51])
        self.assertEqual(
            log.matching("User alice from 127.0.0.1 not allowed"),
            ["User alice from 127.0.0.1 not allowed because not listed in AllowUsers"],
        )

    def test_allowed_user_logs_in(self) -> None:
        """AllowUsers naming the user from this address: the right password logs in."""
        conn, _ = self.connect(allow_users=["bob", "al*@127.0.0.1"], deny_users=["mallory"])
        self.password(conn, PASSWORD)
        self.assertEqual([n for n, _ in self.answers(conn)], [MSG_USERAUTH_SUCCESS])

    def test_keyboard_interactive_asks_one_question(self) -> None:
        """One INFO_REQUEST: no name or instruction, one 'Password: ' prompt, not echoed."""
        conn, _ = self.connect(password_authentication=False, kbd_interactive_authentication=True)
        self.keyboard(conn)
        question = NS(b"") + NS(b"") + NS(b"") + struct.pack(">L", 1) + NS(b"Password: ") + b"\x00"
        self.assertEqual(self.answers(conn), [(MSG_USERAUTH_60, question)])
        self.answer(conn, PASSWORD)
        self.assertEqual(self.answers(conn)[1], (MSG_USERAUTH_SUCCESS, b""))

    def test_keyboard_interactive_wrong_answers_count(self) -> None:
        """A wrong answer is a failure; a question is not: MaxAuthTries counts the answers."""
        conn, _ = self.connect(
            password_authentication=False, kbd_interactive_authentication=True, max_auth_tries=2
        )
        self.keyboard(conn)
        self.answer(conn, WRONG)
        self.keyboard(conn)
        self.assertEqual(
            [n for n, _ in self.answers(conn)],
            [MSG_USERAUTH_60, MSG_USERAUTH_FAILURE, MSG_USERAUTH_60],
        )
        self.answer(conn, WRONG)
        self.assertTrue(conn.disconnected)

    def test_a_new_request_abandons_the_question(self) -> None:
        """Questions left unanswered cost nothing; the next request is taken as usual."""
        conn, checked = self.connect(kbd_interactive_authentication=True, max_auth_tries=1)
        self.keyboard(conn)
        self.keyboard(conn)
        self.keyboard(conn)
        self.password(conn, PASSWORD)
        self.assertEqual([n for n, _ in self.answers(conn)], [60, 60, 60, MSG_USERAUTH_SUCCESS])
        self.assertEqual(len(checked), 1)

    def test_answer_without_a_question_is_refused(self) -> None:
        """INFO_RESPONSE with no question open is a protocol error, as before any existed."""
        log = CapturedLog(self)
        conn, _ = self.connect(kbd_interactive_authentication=True)
        self.answer(conn, PASSWORD)
        self.assertTrue(conn.disconnected)
        self.assertTrue(log.matching("unexpected message type 61 during user authentication"))

    def test_a_second_answer_is_refused(self) -> None:
        """Once the question is answered, another answer is a protocol error."""
        conn, _ = self.connect(kbd_interactive_authentication=True, max_auth_tries=5)
        self.keyboard(conn)
        self.answer(conn, WRONG)
        self.assertFalse(conn.disconnected)
        self.answer(conn, PASSWORD)
        self.assertTrue(conn.disconnected)
        self.assertNotIn(MSG_USERAUTH_SUCCESS, [n for n, _ in self.answers(conn)])

    def test_wrong_number_of_answers(self) -> None:
        """Two answers to one question: a protocol error (sshd: 'wrong number of replies')."""
        conn, checked = self.connect(kbd_interactive_authentication=True)
        self.keyboard(conn)
        self.answer(conn, PASSWORD, PASSWORD)
        self.assertTrue(conn.disconnected)
        self.assertEqual(checked, [])

    def test_keyboard_interactive_off(self) -> None:
        """Not enabled: keyboard-interactive fails at once, asks nothing, and counts."""
        conn, checked = self.connect(max_auth_tries=2)
        self.keyboard(conn)
        self.assertEqual(
            self.answers(conn), [(MSG_USERAUTH_FAILURE, NS(b"publickey,password") + b"\x00")]
        )
        self.keyboard(conn)
        self.assertTrue(conn.disconnected)
        self.assertEqual(checked, [])

    def test_password_change_is_refused(self) -> None:
        """
        A password change request never logs in: it fails and counts, as sshd's "password
        change not supported", and neither password reaches the log.
        """
        log = CapturedLog(self)
        conn, _ = self.connect()
        conn.send(
            MSG_USERAUTH_REQUEST,
            NS(b"alice")
            + NS(b"ssh-connection")
            + NS(b"password")
            + b"\x01"
            + NS(PASSWORD.encode())
            + NS(b"brand new"),
        )
        answers = [n for n, _ in self.answers(conn)]
        self.assertNotIn(MSG_USERAUTH_SUCCESS, answers)
        self.assertIn(MSG_USERAUTH_FAILURE, answers)
        self.assertFalse(conn.disconnected)
        self.assertEqual([x for x in log.lines if "brand new" in x or PASSWORD in x], [])

    def test_requests_wait_for_the_check_in_progress(self) -> None:
        """
        Requests sent without waiting are taken one at a time, in order: one bcrypt at a time
        per connection, and at most MaxAuthTries requests may wait.
        """
        pending = _Pending()
        conn, _ = self.connect(pending=pending, max_auth_tries=3)
        self.password(conn, "one")
        self.password(conn, "two")
        self.password(conn, PASSWORD)
        self.assertEqual([p for p, _, _ in pending.calls], [b"one"])
        self.assertEqual(self.answers(conn), [])
        pending.calls[0][2].callback(False)
        conn.flush()
        self.assertEqual([p for p, _, _ in pending.calls], [b"one", b"two"])
        self.assertEqual([n for n, _ in self.answers(conn)], [MSG_USERAUTH_FAILURE])
        pending.calls[1][2].callback(False)
        conn.flush()
        pending.calls[2][2].callback(True)
        conn.flush()
        self.assertEqual([n for n, _ in self.answers(conn)], [51, 51, MSG_USERAUTH_SUCCESS])

    def test_too_many_waiting_requests(self) -> None:
        """More waiting requests than MaxAuthTries: the connection ends."""
        pending = _Pending()
        conn, _ = self.connect(pending=pending, max_auth_tries=2)
        for guess in ("a", "b", "c"):
            self.password(conn, guess)
        self.assertFalse(conn.disconnected)
        self.password(conn, "d")
        self.assertTrue(conn.disconnected)
        self.assertEqual(len(pending.calls), 1)

    def test_connection_lost_during_a_check(self) -> None:
        """A check that ends after the client left logs nobody in and raises nothing."""
        pending = _Pending()
        conn, _ = self.connect(pending=pending)
        self.password(conn, PASSWORD)
        conn.close()
        pending.calls[0][2].callback(True)
        self.assertEqual(conn.raised, [])
        self.assertFalse(hasattr(conn.server, "avatar"))

    def test_match_blocks_decide_per_user(self) -> None:
        """
        The settings of each attempt come from the factory's Match rules for its user: a
        "Match User alice" turning passwords on leaves everyone else with keys only.
        """

        def match(
            config: ServerConfig, user: str, address: str | None, *local: object
        ) -> ServerConfig:
            if user == "alice" and address == "127.0.0.1":
                return dataclasses.replace(config, password_authentication=True)
            return config

        conn, checked = self.connect(match=match, max_auth_tries=3)
        self.password(conn, PASSWORD, user=b"bob")
        self.assertEqual(self.answers(conn), [(MSG_USERAUTH_FAILURE, NS(b"publickey") + b"\x00")])
        self.assertEqual(checked, [])
        self.password(conn, PASSWORD)
        self.assertEqual(self.answers(conn)[1], (MSG_USERAUTH_SUCCESS, b""))
