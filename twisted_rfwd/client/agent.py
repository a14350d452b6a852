"""
Keys held by C{ssh-agent}: the client side of the agent protocol (draft-miller-ssh-agent),
only what logging in needs, and the order in which OpenSSH's C{ssh} offers keys.

Conch's L{twisted.conch.ssh.agent.SSHAgentClient} always asks for signatures with flags 0, so
the agent signs RSA keys with SHA-1 (C{ssh-rsa}), which OpenSSH servers refuse; here the flags
for C{rsa-sha2-256} and C{rsa-sha2-512} are sent, and the signature's algorithm is checked.
"""

from __future__ import annotations

import os
import struct
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from twisted.conch.ssh.keys import Key
from twisted.internet import defer
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.endpoints import UNIXClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from twisted_rfwd.client.connect_errors import connect_error_text
from twisted_rfwd.client.identity import CertifiedIdentity, Identity, PublicOnlyIdentity
from twisted_rfwd.errors import AgentError, MalformedPacket
from twisted_rfwd.protocol.certificates import USER_CERT, is_certificate, parse_certificate
from twisted_rfwd.protocol.wire import Reader, pack_string

__all__ = [
    "AgentClient",
    "AgentError",
    "AgentIdentity",
    "AgentKeys",
    "prepare_identities",
    "signature_flags",
]

_log = Logger()

SSH_AGENT_FAILURE = 5
SSH_AGENTC_REQUEST_IDENTITIES = 11
SSH_AGENT_IDENTITIES_ANSWER = 12
SSH_AGENTC_SIGN_REQUEST = 13
SSH_AGENT_SIGN_RESPONSE = 14
SSH_AGENT_RSA_SHA2_256 = 2
SSH_AGENT_RSA_SHA2_512 = 4
# Failure codes of older agents (SSH2_AGENT_FAILURE, SSH_COM_AGENT2_FAILURE).
_FAILURES = (SSH_AGENT_FAILURE, 30, 102)
# sizeof(sockaddr_un.sun_path) on Linux, the terminating NUL included.
_SUN_PATH_MAX = 108
# OpenSSH's AGENT_MAX_LEN: a longer message is not from a working agent.
MAX_MESSAGE = 256 * 1024


def signature_flags(algorithm: bytes) -> int:
    """The C{SSH_AGENTC_SIGN_REQUEST} flags asking for C{algorithm}."""
    if algorithm == b"rsa-sha2-512":
        return SSH_AGENT_RSA_SHA2_512
    if algorithm == b"rsa-sha2-256":
        return SSH_AGENT_RSA_SHA2_256
    return 0


class AgentClient(Protocol):
    """One connection to an agent: requests answered in order, as the protocol has them."""

    def __init__(self) -> None:
        self._buffer = b""
        self._pending: deque[Deferred[bytes]] = deque()
        self._lost: str | None = None

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        while len(self._buffer) >= 4:
            (length,) = struct.unpack(">I", self._buffer[:4])
            if length == 0 or length > MAX_MESSAGE:
                self._fail_all(f"the agent sent a message of {length} bytes")
                self.transport.abortConnection()  # type: ignore[union-attr]
                return
            if len(self._buffer) < 4 + length:
                return
            message, self._buffer = self._buffer[4 : 4 + length], self._buffer[4 + length :]
            if not self._pending:
                self._fail_all("the agent sent an answer to no request")
                self.transport.abortConnection()  # type: ignore[union-attr]
                return
            self._pending.popleft().callback(message)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._fail_all("the agent closed the connection")

    def _fail_all(self, why: str) -> None:
        if self._lost is None:
            self._lost = why
        pending, self._pending = self._pending, deque()
        for d in pending:
            d.errback(AgentError(why))

    def _request(self, message_type: int, body: bytes) -> Deferred[bytes]:
        if self._lost is not None:
            return fail(AgentError(self._lost))
        d: Deferred[bytes] = Deferred()
        self._pending.append(d)
        payload = bytes((message_type,)) + body
        self.transport.write(struct.pack(">I", len(payload)) + payload)  # type: ignore[union-attr]
        return d

    def request_identities(self) -> Deferred[list[tuple[bytes, str]]]:
        """The agent's public key blobs, with their comments."""

        def parse(message: bytes) -> list[tuple[bytes, str]]:
            reader = _answer(message, SSH_AGENT_IDENTITIES_ANSWER, "identities answer")
            keys = []
            for _ in range(reader.uint32()):
                blob = reader.string()
                comment = reader.string().decode("utf-8", "replace")
                keys.append((blob, comment))
            return keys

        return self._request(SSH_AGENTC_REQUEST_IDENTITIES, b"").addCallback(parse)

    def sign(self, blob: bytes, data: bytes, flags: int = 0) -> Deferred[bytes]:
        """The signature blob (algorithm name and signature) the agent makes over C{data}."""

        def parse(message: bytes) -> bytes:
            return _answer(message, SSH_AGENT_SIGN_RESPONSE, "sign response").string()

        body = pack_string(blob) + pack_string(data) + struct.pack(">I", flags)
        return self._request(SSH_AGENTC_SIGN_REQUEST, body).addCallback(parse)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.loseConnection()


def _answer(message: bytes, expected: int, what: str) -> Reader:
    kind = message[0]
    if kind in _FAILURES:
        raise AgentError("the agent refused the operation")
    if kind != expected:
        raise AgentError(f"the agent answered message {kind} instead of its {what}")
    return Reader(message[1:], f"agent {what}")


@dataclass(frozen=True)
class AgentIdentity(Identity):
    """A public key whose private half is in the agent, which signs for it."""

    agent: AgentClient = field(compare=False, repr=False)
    # A key file this agent key matched (then C{source} is that file), as ssh reports it.
    from_file: bool = False
    # The blob the agent knows the key by, when not the key's own (a certificate it holds).
    agent_blob: bytes = field(default=b"", compare=False, repr=False)

    def sign(self, data: bytes, algorithm: bytes) -> Deferred[bytes]:
        def check(signature: bytes) -> bytes:
            try:
                signed_with = Reader(signature, "agent signature").string()
            except MalformedPacket as e:
                raise AgentError(f"the agent sent a bad signature ({e})") from None
            if signed_with != algorithm:
                raise AgentError(
                    f"the agent signed with {signed_with.decode('ascii', 'replace')} "
                    f"instead of {algorithm.decode('ascii')}"
                )
            return signature

        flags = signature_flags(algorithm)
        blob = self.agent_blob or self.key.blob()
        return self.agent.sign(blob, data, flags).addCallback(check)

    def __str__(self) -> str:
        if self.from_file:
            return f"{self.source} ({self.key_type} {self.fingerprint}, from the agent)"
        return f"{self.source} ({self.key_type} {self.fingerprint})"


class AgentKeys:
    """
    The agent listening at C{path}, for one login: its keys are listed when the login starts,
    it signs while the login lasts, and L{close} ends the connection.  An agent that cannot be
    used is a warning, and the login carries on without it, as in ssh.
    """

    def __init__(self, reactor: Any, path: str, timeout: float = 10.0) -> None:
        self.reactor = reactor
        self.path = path
        self.timeout = timeout
        self._client: AgentClient | None = None
        self._closed = False

    def identities(self) -> Deferred[list[Identity]]:
        """The agent's keys we can offer; none, with a warning, if the agent is unusable."""
        if len(os.fsencode(self.path)) >= _SUN_PATH_MAX:
            # Twisted fails to report this one (the connect never ends): say it here.
            return succeed(self._unusable(Failure(AgentError("the socket path is too long"))))
        endpoint = UNIXClientEndpoint(self.reactor, self.path, timeout=int(self.timeout))

        def connected(client: AgentClient) -> Deferred[list[Identity]]:
            self._client = client
            if self._closed:
                client.close()
                return succeed([])
            return client.request_identities().addCallback(self._usable, client)

        d: Deferred[list[Identity]] = connectProtocol(endpoint, AgentClient()).addCallback(
            connected
        )
        return d.addTimeout(self.timeout, self.reactor).addErrback(self._unusable)

    def _usable(self, keys: list[tuple[bytes, str]], client: AgentClient) -> list[Identity]:
        usable: list[Identity] = []
        for blob, comment in keys:
            if is_certificate(blob):
                certified = _agent_certificate(blob, comment, client)
                if certified is not None:
                    usable.append(certified)
                continue
            try:
                key = Key.fromString(blob, type="blob")
            except Exception as e:
                # A certificate, a security key or a type Conch does not know: one odd key
                # must not cost the agent's others.
                _log.debug(
                    "Skipping agent key {comment!r}: {error}", comment=comment, error=repr(e)
                )
                continue
            if key.sshType() == b"ssh-dss":
                continue  # as ssh: DSA is not offered
            source = f"agent key {comment}" if comment else "agent key"
            usable.append(AgentIdentity(key, source, client))
        return usable

    def _unusable(self, failure: Failure) -> list[Identity]:
        error = failure.value
        if isinstance(error, AgentError | MalformedPacket):
            reason = str(error)
        elif isinstance(error, defer.TimeoutError):
            reason = f"no answer within {self.timeout:g}s"
        else:
            reason = connect_error_text(failure)
        _log.warn("Not using the SSH agent at {path}: {reason}", path=self.path, reason=reason)
        self.close()
        return []

    def close(self) -> None:
        """End the connection to the agent (the login is over)."""
        self._closed = True
        if self._client is not None:
            self._client.close()
            self._client = None


def _agent_certificate(blob: bytes, comment: str, client: AgentClient) -> Identity | None:
    """A certificate the agent holds, which the agent signs for under the certificate's blob."""
    try:
        cert = parse_certificate(blob)
        key = Key.fromString(cert.key_blob, type="blob")
    except Exception as e:
        _log.debug("Skipping agent key {comment!r}: {error}", comment=comment, error=repr(e))
        return None
    if cert.kind != USER_CERT:
        return None
    source = f"agent key {comment}" if comment else "agent key"
    signer = AgentIdentity(key, source, client, agent_blob=blob)
    return CertifiedIdentity(key, source, signer, blob)


def prepare_identities(
    files: Sequence[Identity],
    agent_keys: Sequence[Identity],
    identities_only: bool,
    certificates: Sequence[tuple[str, bytes]] = (),
) -> list[Identity]:
    """
    The keys to offer, in ssh's order: agent keys that are also key files (given or default),
    then the agent's other keys (not under C{IdentitiesOnly}), then the remaining files.

    A file whose private key could not be loaded (L{PublicOnlyIdentity}: encrypted, no
    passphrase) is offered only if the agent holds it; one whose private key is at hand signs
    itself even when the agent also holds it.

    C{certificates} (where from, blob: C{KEY-cert.pub}, C{CertificateFile}) are paired with the
    key that signs for them, a file's or the agent's, and each certificate is offered right
    before its plain key, as ssh offers them; one whose key is nowhere is skipped.
    """
    prepared = _prepare(files, agent_keys, identities_only)
    signers = [i for i in [*prepared, *files, *agent_keys] if not isinstance(i, CertifiedIdentity)]
    certified: list[Identity] = [i for i in prepared if isinstance(i, CertifiedIdentity)]
    for source, certificate in certificates:
        key_blob = parse_certificate(certificate).key_blob
        signer = next(
            (
                s
                for s in signers
                if s.key.blob() == key_blob and not isinstance(s, PublicOnlyIdentity)
            ),
            None,
        )
        if signer is None:
            _log.warn(
                "Skipping certificate {source}: neither a key file nor the agent holds its key",
                source=source,
            )
            continue
        certified.append(CertifiedIdentity(signer.key, source, signer, certificate))
    plain = [i for i in prepared if not isinstance(i, CertifiedIdentity)]
    result: list[Identity] = []
    placed: set[int] = set()
    for identity in plain:
        for cert in certified:
            if id(cert) not in placed and cert.key.blob() == identity.key.blob():
                placed.add(id(cert))
                result.append(cert)
        result.append(identity)
    # Certificates whose key is not offered by itself (an agent key under IdentitiesOnly) first.
    result = [c for c in certified if id(c) not in placed] + result
    unique: list[Identity] = []
    seen: set[bytes] = set()
    for identity in result:
        if identity.public_blob not in seen:
            seen.add(identity.public_blob)
            unique.append(identity)
    return unique


def _prepare(
    files: Sequence[Identity], agent_keys: Sequence[Identity], identities_only: bool
) -> list[Identity]:
    remaining = list(files)
    preferred: list[Identity] = []
    others: list[Identity] = []
    for agent_key in agent_keys:
        if isinstance(agent_key, CertifiedIdentity):
            if not identities_only:
                others.append(agent_key)
            continue
        assert isinstance(agent_key, AgentIdentity)
        blob = agent_key.key.blob()
        match = next((f for f in remaining if f.key.blob() == blob), None)
        if match is not None:
            remaining.remove(match)
            if isinstance(match, PublicOnlyIdentity):
                match = AgentIdentity(agent_key.key, match.source, agent_key.agent, True)
            preferred.append(match)
        elif not identities_only:
            others.append(agent_key)
    files_left = []
    for identity in remaining:
        if isinstance(identity, PublicOnlyIdentity):
            _log.warn(
                "Skipping identity {identity}: the key is encrypted, no passphrase was given, "
                "and the agent does not hold it",
                identity=identity.source,
            )
        else:
            files_left.append(identity)
    result: list[Identity] = []
    seen: set[bytes] = set()
    for identity in [*preferred, *others, *files_left]:
        blob = identity.public_blob
        if blob not in seen:
            seen.add(blob)
            result.append(identity)
    return result
