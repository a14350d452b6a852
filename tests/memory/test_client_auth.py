"""
rfwd-client's ways to log in, without processes: encrypted key files, the agent protocol and
the order keys are offered in, the userauth state machine (keys, keyboard-interactive, password)
driven packet by packet, and a whole login in memory with a signature that arrives later.
"""

from __future__ import annotations

import os
import shutil
import struct
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from twisted.conch.ssh.common import NS
from twisted.conch.ssh.keys import Key
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.support.agent import FakeAgent
from tests.support.keys import new_key, public_line, write_encrypted_key, write_private_key
from tests.support.logs import CapturedLog
from tests.support.memory import MemoryRig
from twisted_rfwd.client.agent import (
    SSH_AGENT_RSA_SHA2_256,
    SSH_AGENT_RSA_SHA2_512,
    AgentError,
    AgentIdentity,
    AgentKeys,
    prepare_identities,
    signature_flags,
)
from twisted_rfwd.client.forwards import ForwardStatus
from twisted_rfwd.client.identity import (
    EncryptedKey,
    Identity,
    PublicOnlyIdentity,
    load_identity,
    load_public_identity,
)
from twisted_rfwd.client.userauth import PublicKeyAuth
from twisted_rfwd.errors import AuthenticationFailed, KeyLoadError
from twisted_rfwd.protocol.spec import parse_remote_forward
from twisted_rfwd.protocol.wire import Reader


def tmpdir(test: SynchronousTestCase) -> Path:
    directory = Path(test.mktemp())
    directory.mkdir(parents=True)
    return directory


def encrypted_key_file(directory: Path) -> tuple[Key, Path]:
    """A key, and its file encrypted with the passphrase C{s3cret}."""
    path = directory / "id"
    return write_encrypted_key(path, b"s3cret"), path


class KeyFileTests(SynchronousTestCase):
    def test_passphrase_decrypts_openssh_key(self) -> None:
        """An encrypted OpenSSH key (bcrypt KDF) loads with its passphrase."""
        key, path = encrypted_key_file(tmpdir(self))
        identity = load_identity(str(path), b"s3cret")
        self.assertEqual(identity.key.blob(), key.blob())
        self.assertFalse(identity.key.isPublic())
        self.assertEqual(identity.source, str(path))

    def test_wrong_passphrase_names_the_file(self) -> None:
        """A wrong passphrase is a KeyLoadError naming the file, not showing the passphrase."""
        _, path = encrypted_key_file(tmpdir(self))
        error = self.assertRaises(KeyLoadError, load_identity, str(path), b"guess")
        self.assertEqual(
            str(error), f"cannot load key {path}: wrong passphrase: the key could not be decrypted"
        )
        self.assertNotIn("guess", str(error))

    def test_no_passphrase_is_encrypted_key_error(self) -> None:
        """Without a passphrase, an encrypted key says how to give one."""
        _, path = encrypted_key_file(tmpdir(self))
        error = self.assertRaises(EncryptedKey, load_identity, str(path))
        self.assertIn(str(path), str(error))
        self.assertIn("--passphrase-file", str(error))

    def test_empty_passphrase(self) -> None:
        """An empty passphrase (an empty file's first line) is named as the problem."""
        _, path = encrypted_key_file(tmpdir(self))
        error = self.assertRaises(KeyLoadError, load_identity, str(path), b"")
        self.assertIn("the passphrase given is empty", str(error))

    def test_passphrase_ignored_for_unencrypted_keys(self) -> None:
        """One passphrase for every key: unencrypted ones (OpenSSH or PEM) still load."""
        directory = tmpdir(self)
        openssh = write_private_key(new_key(), directory / "openssh")
        pem = directory / "pem"
        pem.write_bytes(new_key("ecdsa").toString("OPENSSH", subtype="PEM"))
        self.assertFalse(load_identity(str(openssh), b"pw").key.isPublic())
        self.assertFalse(load_identity(str(pem), b"pw").key.isPublic())

    def test_public_half_from_pub_file_or_private_header(self) -> None:
        """The public key of an encrypted file: from its .pub, else from the file's header."""
        directory = tmpdir(self)
        key, path = encrypted_key_file(directory)
        from_header = load_public_identity(str(path))
        self.assertEqual(from_header.key.blob(), key.blob())
        self.assertTrue(from_header.key.isPublic())
        other = new_key()
        Path(f"{path}.pub").write_bytes(public_line(other) + b"\n")
        self.assertEqual(load_public_identity(str(path)).key.blob(), other.blob())

    def test_public_half_unreadable(self) -> None:
        """No .pub and not an OpenSSH file: a KeyLoadError naming the file."""
        path = tmpdir(self) / "junk"
        path.write_bytes(b"not a key\n")
        error = self.assertRaises(KeyLoadError, load_public_identity, str(path))
        self.assertIn(str(path), str(error))


def frame(kind: int, body: bytes) -> bytes:
    return struct.pack(">IB", len(body) + 1, kind) + body


class AgentProtocolTests(SynchronousTestCase):
    def test_flags(self) -> None:
        """rsa-sha2-512 and -256 ask for their flags; every other algorithm for none."""
        self.assertEqual(signature_flags(b"rsa-sha2-512"), SSH_AGENT_RSA_SHA2_512)
        self.assertEqual(signature_flags(b"rsa-sha2-256"), SSH_AGENT_RSA_SHA2_256)
        self.assertEqual(signature_flags(b"ssh-rsa"), 0)
        self.assertEqual(signature_flags(b"ssh-ed25519"), 0)

    def test_identities_and_signature(self) -> None:
        """Listing then signing through the agent; the RSA request carries SHA2_512."""
        rsa = new_key("rsa")
        agent = FakeAgent([rsa])
        listed = agent.client.request_identities()
        agent.pump()
        blob, comment = self.successResultOf(listed)[0]
        self.assertEqual((blob, comment), (rsa.blob(), "test@agent"))
        identity = agent.identities()[0]
        signed = identity.sign(b"data", b"rsa-sha2-512")
        self.assertNoResult(signed)
        agent.pump()
        signature = self.successResultOf(signed)
        self.assertTrue(rsa.public().verify(signature, b"data"))
        self.assertEqual(Reader(signature, "signature").string(), b"rsa-sha2-512")
        self.assertEqual(agent.requests[-1][1:], (rsa.blob(), SSH_AGENT_RSA_SHA2_512))

    def test_refusal_is_agent_error(self) -> None:
        """SSH_AGENT_FAILURE fails the request with AgentError."""
        agent = FakeAgent([new_key()])
        agent.refuse_signing = True
        signed = agent.identities()[0].sign(b"data", b"ssh-ed25519")
        agent.pump()
        self.assertEqual(
            str(self.failureResultOf(signed, AgentError).value), "the agent refused the operation"
        )

    def test_wrong_signature_algorithm_is_refused(self) -> None:
        """An agent ignoring the flags (SHA-1 ssh-rsa signature) is an AgentError, not sent."""
        rsa = new_key("rsa")
        agent = FakeAgent([rsa])
        signed = agent.identities()[0].sign(b"data", b"rsa-sha2-256")
        agent.transport.clear()
        sha1 = rsa.sign(b"data", signatureType=b"ssh-rsa")
        agent.client.dataReceived(frame(14, NS(sha1)))
        error = self.failureResultOf(signed, AgentError).value
        self.assertIn("signed with ssh-rsa instead of rsa-sha2-256", str(error))

    def test_lost_connection_fails_pending_and_later_requests(self) -> None:
        """A request pending when the agent goes away fails, and so do later ones."""
        agent = FakeAgent([new_key()])
        pending = agent.client.request_identities()
        agent.client.connectionLost()
        self.failureResultOf(pending, AgentError)
        self.failureResultOf(agent.client.request_identities(), AgentError)

    def test_oversized_message_drops_the_agent(self) -> None:
        """A length beyond 256 KiB is not from an agent: requests fail, connection aborted."""
        agent = FakeAgent([new_key()])
        pending = agent.client.request_identities()
        agent.client.dataReceived(struct.pack(">I", 1 << 20))
        self.assertIn("1048576 bytes", str(self.failureResultOf(pending, AgentError).value))
        self.assertTrue(agent.transport.disconnecting)


class PrepareIdentitiesTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.agent = FakeAgent([new_key(), new_key(), new_key()])
        self.in_agent = self.agent.identities()
        self.file_key = new_key()

    def test_ssh_order(self) -> None:
        """Agent keys matching files first, then other agent keys, then the other files."""
        file_in_agent = PublicOnlyIdentity(self.agent.identities()[1].key, "/k/in-agent")
        file_private = Identity(self.file_key, "/k/file")
        order = prepare_identities([file_private, file_in_agent], self.in_agent, False)
        self.assertEqual(
            [i.source for i in order],
            ["/k/in-agent", "agent key test@agent", "agent key test@agent", "/k/file"],
        )
        self.assertEqual(order[1].key.blob(), self.in_agent[0].key.blob())

    def test_identities_only(self) -> None:
        """IdentitiesOnly: the agent's other keys stay back; a file it holds signs through it."""
        public_only = PublicOnlyIdentity(self.in_agent[2].key, "/k/encrypted")
        order = prepare_identities(
            [Identity(self.file_key, "/k/file"), public_only], self.in_agent, True
        )
        self.assertEqual([i.source for i in order], ["/k/encrypted", "/k/file"])
        first = order[0]
        assert isinstance(first, AgentIdentity)
        self.assertTrue(first.from_file)
        self.assertIn("/k/encrypted (ssh-ed25519 SHA256:", str(first))
        self.assertIn("from the agent", str(first))

    def test_private_file_signs_itself(self) -> None:
        """A file whose private key is at hand signs locally even though the agent holds it."""
        agent = FakeAgent([self.file_key])
        order = prepare_identities([Identity(self.file_key, "/k/file")], agent.identities(), False)
        self.assertEqual(len(order), 1)
        self.assertNotIsInstance(order[0], AgentIdentity)

    def test_public_only_file_without_agent_is_skipped(self) -> None:
        """An encrypted file the agent does not hold is skipped, with a warning naming it."""
        log = CapturedLog(self)
        locked = PublicOnlyIdentity(self.file_key.public(), "/k/locked")
        order = prepare_identities([locked], [], False)
        self.assertEqual(order, [])
        self.assertIn("Skipping identity /k/locked: the key is encrypted", log.text())


class AgentKeysTests(TestCase):
    async def test_unreachable_agent_is_a_warning(self) -> None:
        """No agent at the socket: no keys, a warning naming the socket, and the login goes on."""
        from twisted.internet import reactor

        log = CapturedLog(self)
        directory = tempfile.mkdtemp(prefix="rfwd-")  # short: socket paths have a limit
        self.addCleanup(os.rmdir, directory)
        path = os.path.join(directory, "no-agent.sock")
        keys = await AgentKeys(reactor, path).identities()
        self.assertEqual(keys, [])
        self.assertIn(f"Not using the SSH agent at {path}: No such file or directory", log.text())

    async def test_socket_path_too_long(self) -> None:
        """A path longer than a Unix socket address allows is said to be so, at once."""
        from twisted.internet import reactor

        log = CapturedLog(self)
        path = "/tmp/" + "x" * 200
        self.assertEqual(await AgentKeys(reactor, path).identities(), [])
        self.assertIn("the socket path is too long", log.text())

    async def test_unusable_keys_are_left_out(self) -> None:
        """Over a real Unix socket: keys Conch cannot read and DSA keys are skipped, not fatal."""
        from cryptography.hazmat.primitives.asymmetric import dsa
        from twisted.internet import reactor as r

        reactor: Any = r
        good = new_key()
        dsa_blob = Key(dsa.generate_private_key(1024)).blob()
        answer = struct.pack(">I", 3) + b"".join(
            NS(blob) + NS(b"comment")
            for blob in (NS(b"ssh-ed25519-cert-v01@openssh.com") + b"junk", dsa_blob, good.blob())
        )

        class ListingAgent(Protocol):
            def dataReceived(self, data: bytes) -> None:
                self.transport.write(frame(12, answer))  # type: ignore[union-attr]

        directory = tempfile.mkdtemp(prefix="rfwd-")
        self.addCleanup(shutil.rmtree, directory)
        path = os.path.join(directory, "agent.sock")
        port = reactor.listenUNIX(path, Factory.forProtocol(ListingAgent))
        self.addCleanup(port.stopListening)
        agent = AgentKeys(reactor, path)
        self.addCleanup(agent.close)
        keys = await agent.identities()
        self.assertEqual([k.key.blob() for k in keys], [good.blob()])
        self.assertEqual(str(keys[0]), f"agent key comment (ssh-ed25519 {keys[0].fingerprint})")


class FakeSSHTransport:
    """What PublicKeyAuth uses of the SSH transport, recording the packets it sends."""

    def __init__(self) -> None:
        self.sessionID = b"session-id"
        self.peerExtensions = {b"server-sig-algs": b"ssh-ed25519,rsa-sha2-512,rsa-sha2-256"}
        self.sent: list[tuple[int, bytes]] = []
        self.disconnected: int | None = None
        self.service: Any = None

    def sendPacket(self, kind: int, payload: bytes) -> None:
        self.sent.append((kind, payload))

    def sendDisconnect(self, code: int, reason: bytes) -> None:
        self.disconnected = code

    def sendUnimplemented(self) -> None:
        self.sent.append((3, b""))

    def setService(self, service: Any) -> None:
        self.service = service

    def loseConnection(self) -> None:
        self.disconnected = -1

    def last_request(self) -> tuple[str, bytes]:
        """The method of the last USERAUTH_REQUEST and what follows it."""
        kind, payload = self.sent[-1]
        assert kind == 50, kind
        reader = Reader(payload, "request")
        reader.string(), reader.string()
        return reader.string().decode(), reader.rest()


class NextService:
    name = b"ssh-connection"


def failure(methods: bytes, partial: bool = False) -> bytes:
    return NS(methods) + (b"\x01" if partial else b"\x00")


def info_request(*prompts: tuple[bytes, bool]) -> bytes:
    body = NS(b"") + NS(b"") + NS(b"") + struct.pack(">I", len(prompts))
    return body + b"".join(NS(p) + (b"\x01" if echo else b"\x00") for p, echo in prompts)


class UserauthTests(SynchronousTestCase):
    """PublicKeyAuth against a scripted server."""

    def start(
        self, identities: Sequence[Identity], password: str | None = "hunter2", **kwargs: Any
    ) -> tuple[PublicKeyAuth, FakeSSHTransport, list[AuthenticationFailed]]:
        failures: list[AuthenticationFailed] = []
        auth = PublicKeyAuth(
            "alice",
            identities,
            NextService(),  # type: ignore[arg-type]
            failures.append,
            password=password,
            **kwargs,
        )
        transport = FakeSSHTransport()
        auth.transport = transport  # type: ignore[assignment]
        auth.serviceStarted()
        return auth, transport, failures

    def test_password_after_refused_key(self) -> None:
        """The key is queried first; refused, the password follows; success starts the service."""
        key = new_key()
        auth, transport, failures = self.start([Identity(key, "/k/id")])
        self.assertEqual(transport.last_request()[0], "none")
        auth.packetReceived(51, failure(b"publickey,password"))
        method, rest = transport.last_request()
        self.assertEqual(method, "publickey")
        self.assertIn(key.blob(), rest)
        auth.packetReceived(51, failure(b"publickey,password"))
        self.assertEqual(transport.last_request(), ("password", b"\x00" + NS(b"hunter2")))
        auth.packetReceived(52, b"")
        self.assertIsInstance(transport.service, NextService)
        self.assertEqual(auth.authenticated_by, "password")
        self.assertEqual(failures, [])

    def test_no_password_unless_offered(self) -> None:
        """A server that takes keys only never sees the password; the failure lists the key."""
        auth, transport, failures = self.start([Identity(new_key(), "/k/id")])
        auth.packetReceived(51, failure(b"publickey"))
        auth.packetReceived(51, failure(b"publickey"))
        self.assertEqual(len(failures), 1)
        self.assertEqual(len(failures[0].tried), 1)
        self.assertIn("/k/id (ssh-ed25519", failures[0].tried[0])
        self.assertEqual(transport.disconnected, 14)
        self.assertNotIn(b"hunter2", b"".join(p for _, p in transport.sent))

    def test_wrong_password_failure_lists_without_secret(self) -> None:
        """A rejected password: AuthenticationFailed says 'password', never the password."""
        auth, _, failures = self.start([], password="hunter2")
        auth.packetReceived(51, failure(b"password"))
        auth.packetReceived(51, failure(b"password"))
        self.assertEqual(failures[0].tried, ["password"])
        self.assertEqual(
            str(failures[0]),
            "Permission denied for user 'alice': tried password; the server accepts (password).",
        )

    def test_keyboard_interactive_password_prompt(self) -> None:
        """One hidden 'Password:' prompt is answered with the password; then success."""
        auth, transport, _ = self.start([], password="hunter2")
        auth.packetReceived(51, failure(b"keyboard-interactive,password"))
        self.assertEqual(transport.last_request(), ("keyboard-interactive", NS(b"") + NS(b"")))
        auth.packetReceived(60, info_request((b"Password: ", False)))
        self.assertEqual(transport.sent[-1], (61, struct.pack(">I", 1) + NS(b"hunter2")))
        auth.packetReceived(60, info_request())  # PAM's closing round: no prompts
        self.assertEqual(transport.sent[-1], (61, struct.pack(">I", 0)))
        auth.packetReceived(52, b"")
        self.assertEqual(auth.authenticated_by, "keyboard-interactive")

    def test_keyboard_interactive_other_prompts_get_empty_answers(self) -> None:
        """A code prompt is not given the password; after that the password method is tried."""
        auth, transport, failures = self.start([], password="hunter2")
        auth.packetReceived(51, failure(b"keyboard-interactive,password"))
        auth.packetReceived(60, info_request((b"Verification code: ", False)))
        self.assertEqual(transport.sent[-1], (61, struct.pack(">I", 1) + NS(b"")))
        auth.packetReceived(51, failure(b"keyboard-interactive,password"))
        self.assertEqual(transport.last_request()[0], "password")
        auth.packetReceived(51, failure(b"keyboard-interactive,password"))
        self.assertEqual(
            failures[0].tried, ["keyboard-interactive (unanswered prompts)", "password"]
        )

    def test_rejected_keyboard_interactive_password_is_not_sent_again(self) -> None:
        """The password refused through keyboard-interactive is not tried again as 'password'."""
        auth, transport, failures = self.start([], password="hunter2")
        auth.packetReceived(51, failure(b"keyboard-interactive,password"))
        auth.packetReceived(60, info_request((b"Password: ", False)))
        auth.packetReceived(51, failure(b"keyboard-interactive,password"))
        self.assertEqual(failures[0].tried, ["keyboard-interactive (password)"])
        self.assertEqual(transport.disconnected, 14)

    def test_password_change_request_is_not_answered(self) -> None:
        """An expired password cannot be changed without a person: give up, saying so."""
        auth, _, failures = self.start([], password="hunter2")
        auth.packetReceived(51, failure(b"password"))
        auth.packetReceived(60, NS(b"Password expired") + NS(b""))
        self.assertEqual(failures[0].tried, ["password (the server demands a new password)"])

    def test_partial_success(self) -> None:
        """A key that is only a first factor is listed as such, then the password goes."""
        auth, transport, _ = self.start([Identity(new_key(), "/k/id")])
        auth.packetReceived(51, failure(b"publickey"))
        auth.packetReceived(60, b"")  # PK_OK
        self.assertEqual(transport.last_request()[0], "publickey")
        auth.packetReceived(51, failure(b"password", partial=True))
        self.assertEqual(transport.last_request()[0], "password")
        self.assertIn("(partial success)", auth._tried[0])

    def test_asynchronous_signature(self) -> None:
        """An identity signing later: the signed request goes once its Deferred fires."""
        key = new_key()
        later: Deferred[bytes] = Deferred()
        seen: list[bytes] = []

        class LaterIdentity(Identity):
            def sign(self, data: bytes, algorithm: bytes) -> Deferred[bytes]:
                seen.append(data)
                return later

        auth, transport, _ = self.start([LaterIdentity(key.public(), "/k/later")])
        auth.packetReceived(51, failure(b"publickey"))
        auth.packetReceived(60, b"")  # PK_OK
        requests = len(transport.sent)
        self.assertEqual(len(seen), 1)
        later.callback(key.sign(seen[0], signatureType=b"ssh-ed25519"))
        self.assertEqual(len(transport.sent), requests + 1)
        method, rest = transport.last_request()
        self.assertEqual((method, rest[:1]), ("publickey", b"\x01"))

    def test_signing_failure_moves_on(self) -> None:
        """The agent refusing to sign: that key is listed with the reason, the next one goes."""
        agent = FakeAgent([new_key()])
        agent.refuse_signing = True
        second = new_key()
        auth, transport, _ = self.start(
            [*agent.identities(), Identity(second, "/k/second")], password=None
        )
        auth.packetReceived(51, failure(b"publickey"))
        auth.packetReceived(60, b"")  # PK_OK for the agent key
        agent.pump()
        method, rest = transport.last_request()
        self.assertEqual(method, "publickey")
        self.assertIn(second.blob(), rest)
        self.assertIn("not signed: the agent refused the operation", auth._tried[0])

    def test_signature_after_disconnect_is_dropped(self) -> None:
        """A signature arriving after the service stopped sends nothing."""
        agent = FakeAgent([new_key()])
        auth, transport, _ = self.start(agent.identities(), password=None)
        auth.packetReceived(51, failure(b"publickey"))
        auth.packetReceived(60, b"")
        requests = len(transport.sent)
        auth.serviceStopped()
        agent.pump()
        self.assertEqual(len(transport.sent), requests)


class MemoryLoginTests(TestCase):
    """rfwd-client and rfwd-server in memory, the client's key held by a (fake) agent."""

    def rig(self, user_key: Key) -> MemoryRig:
        tmp = Path(self.mktemp())
        tmp.mkdir()
        rig = MemoryRig(tmp, [parse_remote_forward("8080:127.0.0.1:80")])
        Path(rig.server_config.authorized_keys).write_bytes(public_line(user_key) + b"\n")
        return rig

    def test_agent_signs_later_and_login_succeeds(self) -> None:
        """The login waits for the agent's signature, then the forward is set up."""
        key = new_key()
        agent = FakeAgent([key])
        rig = self.rig(key)
        rig.client_config.identities = list(agent.identities())
        ready = rig.connect()
        self.assertNoResult(ready)
        self.assertEqual(agent.pump(), 1)
        rig.flush()
        tunnel = self.successResultOf(ready)
        self.assertEqual(tunnel.forwards[0].status, ForwardStatus.LISTENING)

    def test_agent_rsa_key_uses_sha2(self) -> None:
        """An RSA key in the agent logs in to rfwd-server, signed with rsa-sha2-512."""
        key = new_key("rsa")
        agent = FakeAgent([key])
        rig = self.rig(key)
        rig.client_config.identities = list(agent.identities())
        ready = rig.connect()
        agent.pump()
        rig.flush()
        self.successResultOf(ready)
        self.assertEqual(agent.requests[-1][2], SSH_AGENT_RSA_SHA2_512)

    def test_agent_refuses_then_file_key(self) -> None:
        """The agent refusing to sign is not fatal: the next identity logs in."""
        agent_key, file_key = new_key(), new_key()
        agent = FakeAgent([agent_key])
        agent.refuse_signing = True
        rig = self.rig(agent_key)
        with open(rig.server_config.authorized_keys, "ab") as f:
            f.write(public_line(file_key) + b"\n")
        rig.client_config.identities = [*agent.identities(), Identity(file_key, "file key")]
        ready = rig.connect()
        agent.pump()
        rig.flush()
        self.successResultOf(ready)
