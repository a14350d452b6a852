"""
The user-authentication service of rfwd-server: Conch's userauth server, extended to offer the
methods the configuration enables (L{twisted_rfwd.server.access}), to ask keyboard-interactive's
one question, to give the checkers (L{twisted_rfwd.server.publickey}, the passwords of
L{twisted_rfwd.server.passwords}) the client's address and the access lists' verdict, to take
one request at a time, to count failures as sshd does, and to log refusals with user and peer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from twisted.conch.error import ConchError, IgnoreAuthentication, ValidPublicKey
from twisted.conch.interfaces import IConchUser
from twisted.conch.ssh.common import NS
from twisted.conch.ssh.keys import Key
from twisted.conch.ssh.transport import DISCONNECT_PROTOCOL_ERROR
from twisted.conch.ssh.userauth import (
    MSG_USERAUTH_FAILURE,
    MSG_USERAUTH_INFO_REQUEST,
    MSG_USERAUTH_PK_OK,
    SSHUserAuthServer,
)
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from twisted_rfwd.errors import RemoteProtocolError
from twisted_rfwd.protocol.addresses import describe_address
from twisted_rfwd.protocol.certificates import (
    CERTIFICATE_SIGNATURES,
    parse_certificate,
)
from twisted_rfwd.protocol.messages import loggable
from twisted_rfwd.protocol.userauth import publickey_signed_data
from twisted_rfwd.protocol.wire import Reader, pack_string, pack_uint32
from twisted_rfwd.server.access import access_refusal, auth_methods, match_user
from twisted_rfwd.server.config import ServerConfig
from twisted_rfwd.server.passwords import PasswordAttempt
from twisted_rfwd.server.publickey import (
    AuthorizedKeysChecker,
    AuthorizedKeysFiles,
    ForwardingAvatar,
    ForwardingRealm,
    LoginIdentity,
    PeerSSHPrivateKey,
)
from twisted_rfwd.server.system_users import system_groups
from twisted_rfwd.ssh.fingerprint import fingerprint
from twisted_rfwd.ssh.metrics import auth_method
from twisted_rfwd.ssh.transport import TransportMixin

__all__ = [
    "AuthorizedKeysChecker",
    "AuthorizedKeysFiles",
    "ForwardingAvatar",
    "ForwardingRealm",
    "LoginIdentity",
    "ServerUserAuth",
    "access_refusal",
    "auth_methods",
    "match_user",
    "system_groups",
]

_log = Logger()

# keyboard-interactive's one question, as sshd's PAM asks it; not echoed.
PASSWORD_PROMPT = b"Password: "


class ServerUserAuth(SSHUserAuthServer):
    """
    Conch's userauth server with sshd's methods, limits and access lists, the peer address, and
    logged refusals.

    Failures are counted as sshd counts them (C{userauth_finish} in OpenSSH's C{auth2.c}):
    every failed request counts except a first C{none}; a key the server would accept
    (C{PK_OK}) is not a failure, nor is a keyboard-interactive question (its answer is); the
    connection is dropped at the C{MaxAuthTries}th failure, with sshd's "Too many
    authentication failures".  One C{ssh-userauth} service per connection (the transport's
    phase table), so the count cannot be reset.

    Requests are taken one at a time, as sshd's single thread takes them: one that arrives while
    a password is being checked waits (at most C{max_auth_tries} of them), so a client cannot
    set many bcrypt computations going at once.  A request while a keyboard-interactive answer
    is awaited abandons that question (RFC 4256 section 3.1), and does not count it.

    @ivar groups_of: a user's groups for AllowGroups/DenyGroups (L{system_groups}).
    """

    def __init__(
        self,
        clock: IReactorTime,
        login_grace_time: float,
        max_auth_tries: int,
        groups_of: Callable[[str], Sequence[str] | None] = system_groups,
    ) -> None:
        self.clock = clock
        self.loginTimeout = login_grace_time  # type: ignore[assignment]
        self.max_auth_tries = max_auth_tries
        self.groups_of = groups_of
        # Conch's own counter never fires: ours (below) ends the connection first.
        self.attemptsBeforeDisconnect = max_auth_tries + 1
        self.attempts = 0
        self.failures = 0
        # This attempt's settings and access-list verdict (see _begin_attempt).
        self._config: ServerConfig | None = None
        self._refusal: str | None = None
        self._refusals_logged: set[str] = set()
        # An attempt is being decided here (not waiting for the peer): requests wait in _queued.
        self._busy = False
        self._queued: list[bytes] = []
        # The keyboard-interactive attempt waiting for its answer.
        self._question: Deferred[Any] | None = None
        self._stopped = False

    def config_for(self, user: str | None) -> ServerConfig:
        """
        The settings in force for an attempt by C{user} (None: before any request), from this
        one place: the factory's, with its Match blocks applied for this user and connection.
        """
        assert self.transport is not None
        factory: Any = self.transport.factory
        config: ServerConfig = (
            factory.config if user is None else factory.config_for_transport(self.transport, user)
        )
        return config

    def serviceStarted(self) -> None:
        super().serviceStarted()
        self.supportedAuthentications = auth_methods(self.config_for(None))

    def serviceStopped(self) -> None:
        self._stopped = True
        self._queued.clear()
        self._abandon_question()
        super().serviceStopped()

    def ssh_USERAUTH_REQUEST(self, packet: bytes) -> Any:
        if self._stopped:
            return None
        if self._busy:
            if len(self._queued) >= self.max_auth_tries:
                assert isinstance(self.transport, TransportMixin)
                self.transport.protocol_error("too many authentication requests without an answer")
                return None
            self._queued.append(packet)
            return None
        self._abandon_question()
        self.attempts += 1
        self._begin_attempt(Reader(packet, "SSH_MSG_USERAUTH_REQUEST").string())
        self._busy = True
        try:
            d = super().ssh_USERAUTH_REQUEST(packet)
        except BaseException:
            self._busy = False  # the peer's garbage (a protocol error) or our bug: passed on
            raise
        if d is not None:
            d.addBoth(self._attempt_over)
        # A keyboard-interactive question waits for the peer: what it sent next may proceed.
        self._take_next()
        return d

    def _begin_attempt(self, raw_user: bytes) -> None:
        """This attempt's settings, methods and access-list verdict (logged once per user)."""
        user = raw_user.decode("utf-8", "replace")
        config = self.config_for(user)
        self._config = config
        self.supportedAuthentications = auth_methods(config)
        host = self._peer_host()
        self._refusal = access_refusal(user, host, config, self.groups_of)
        if self._refusal is not None and user not in self._refusals_logged:
            self._refusals_logged.add(user)
            _log.info(
                "User {user} from {host} not allowed because {reason}",
                user=loggable(raw_user),
                host=host,
                reason=self._refusal,
            )

    def _attempt_over(self, result: object) -> object:
        """An attempt is decided: the next waiting request may proceed."""
        self._busy = False
        self._take_next()
        return result

    def _take_next(self) -> None:
        """The oldest waiting request, once nothing is being decided (none once logged in)."""
        if self._busy or not self._queued:
            return
        if self._stopped or self.transport is None or self.transport.service is not self:
            self._queued.clear()
            return
        self.ssh_USERAUTH_REQUEST(self._queued.pop(0))

    def _cbFinishedAuth(self, result: Any) -> None:
        if self._stopped:
            return  # the connection went while a password was checked
        super()._cbFinishedAuth(result)

    def _ebBadAuth(self, reason: Failure) -> None:
        """sshd's C{userauth_finish} for a failure: count it, and end at MaxAuthTries."""
        if reason.check(IgnoreAuthentication) or self._stopped:
            return
        assert self.transport is not None
        if reason.check(RemoteProtocolError):
            assert isinstance(self.transport, TransportMixin)
            self.transport.protocol_error(reason.getErrorMessage())
            return
        if not reason.check(UnauthorizedLogin, ConchError):
            _log.failure("Error checking a login for {user}", failure=reason, user=self._user())
        if self.attempts > 1 or self.method != b"none":
            self.failures += 1
            if isinstance(self.transport, TransportMixin):
                self.transport.metrics.auth_failed(auth_method(self.method))
        if self.failures >= self.max_auth_tries:
            _log.info(
                "Maximum authentication attempts ({count}) exceeded for {user} from {peer}; "
                "disconnecting",
                count=self.max_auth_tries,
                user=self._user(),
                peer=describe_address(self._peer()),
            )
            self.transport.sendDisconnect(
                DISCONNECT_PROTOCOL_ERROR, b"Too many authentication failures"
            )
            return
        self.transport.sendPacket(
            MSG_USERAUTH_FAILURE, NS(b",".join(self.supportedAuthentications)) + b"\x00"
        )

    def _user(self) -> str:
        return loggable(self.user or b"")

    def _peer_host(self) -> str:
        return str(getattr(self._peer(), "host", ""))

    # -- password and keyboard-interactive -------------------------------------------------

    def auth_password(self, packet: bytes) -> Deferred[Any]:
        request = Reader(packet, "password userauth request")
        if request.boolean():
            # sshd: "password change not supported"; the attempt fails and counts.
            refused = UnauthorizedLogin("a password change was requested; changes are refused")
            failed: Deferred[Any] = defer.fail(refused)
            return failed.addErrback(self._log_password_failure, "password")
        return self._check_password(request.string(), "password")

    def auth_keyboard_interactive(self, packet: bytes) -> Deferred[Any]:
        """
        sshd's keyboard-interactive without PAM devices: one question, C{Password: } (not
        echoed); the answer is checked as a password.  The language and submethods are ignored.
        """
        request = Reader(packet, "keyboard-interactive userauth request")
        request.string()
        request.string()
        assert isinstance(self.transport, TransportMixin)
        question: Deferred[Any] = Deferred()
        self._question = question
        self.transport.sendPacket(
            MSG_USERAUTH_INFO_REQUEST,
            pack_string(b"")  # name
            + pack_string(b"")  # instruction
            + pack_string(b"")  # language
            + pack_uint32(1)
            + pack_string(PASSWORD_PROMPT)
            + b"\x00",  # echo off
        )
        self.transport.await_info_response(True)
        self._busy = False  # waiting for the peer: a new request may abandon the question
        return question

    def ssh_USERAUTH_INFO_RESPONSE(self, packet: bytes) -> None:
        """The answer to the question (the transport takes none while no question is open)."""
        question, self._question = self._question, None
        assert isinstance(self.transport, TransportMixin)
        self.transport.await_info_response(False)
        if question is None:
            raise RemoteProtocolError("keyboard-interactive answer without a question")
        self._busy = True
        answers = Reader(packet, "SSH_MSG_USERAUTH_INFO_RESPONSE")
        count = answers.uint32()
        if count != 1:
            # sshd: "wrong number of replies", a protocol error.
            question.errback(RemoteProtocolError(f"{count} keyboard-interactive answers to 1"))
            return
        self._check_password(answers.string(), "keyboard-interactive").chainDeferred(question)

    def _abandon_question(self) -> None:
        """A keyboard-interactive question left unanswered ends without counting."""
        question, self._question = self._question, None
        if question is None:
            return
        if isinstance(self.transport, TransportMixin):
            self.transport.await_info_response(False)
        question.errback(IgnoreAuthentication())

    def _check_password(self, password: bytes, method: str) -> Deferred[Any]:
        config = self._config if self._config is not None else self.config_for(None)
        refusal = None if self._refusal is None else f"not allowed because {self._refusal}"
        attempt = PasswordAttempt(
            self.user or b"", password, method, config.password_hashes, refusal
        )
        d: Deferred[Any] = self.portal.login(attempt, None, IConchUser)
        return d.addErrback(self._log_password_failure, method)

    def _log_password_failure(self, failure: Failure, method: str) -> Failure:
        """sshd's "Failed password for USER from HOST": who and why, never the password."""
        if failure.check(UnauthorizedLogin) and not self._stopped:
            _log.info(
                "Failed {method} for {user} from {peer}: {reason}",
                method=method,
                user=self._user(),
                peer=describe_address(self._peer()),
                reason=failure.getErrorMessage(),
            )
        return failure

    # -- publickey -----------------------------------------------------------------------------

    def auth_publickey(self, packet: bytes) -> Deferred[Any]:
        request = Reader(packet, "publickey userauth request")
        has_signature = request.boolean()
        algorithm = request.string()
        blob = request.string()
        signature = request.string() if has_signature else None
        assert self.transport is not None
        signed_data = None
        if has_signature:
            assert self.transport.sessionID is not None
            signed_data = publickey_signed_data(
                self.transport.sessionID,
                self.user or b"",
                self.nextService or b"",
                algorithm,
                blob,
            )
        try:
            _request_key(algorithm, blob)
        except Exception:  # Conch's key parser raises anything on garbage: the peer's fault
            return defer.fail(UnauthorizedLogin("unparsable public key"))
        if self._refusal is not None:
            d: Deferred[Any] = defer.fail(UnauthorizedLogin(f"not allowed because {self._refusal}"))
            return d.addErrback(self._log_refusal, algorithm, blob)
        config = self._config if self._config is not None else self.config_for(None)
        if algorithm not in config.pubkey_accepted_algorithms:
            refused: Deferred[Any] = defer.fail(
                UnauthorizedLogin(f"{loggable(algorithm)} is not in PubkeyAcceptedAlgorithms")
            )
            return refused.addErrback(self._log_refusal, algorithm, blob)
        credentials = PeerSSHPrivateKey(
            self.user or b"", algorithm, blob, signed_data, signature, self._peer_host(), config
        )
        d = self.portal.login(credentials, None, IConchUser)
        if not has_signature:
            d.addErrback(self._key_acceptable, algorithm, blob)
        d.addErrback(self._log_refusal, algorithm, blob)
        return d

    def _peer(self) -> object:
        assert self.transport is not None and self.transport.transport is not None
        return self.transport.transport.getPeer()

    def _key_acceptable(self, failure: Failure, algorithm: bytes, blob: bytes) -> Failure:
        """The key would do: say so (C{PK_OK}), and let the client sign."""
        failure.trap(ValidPublicKey)
        assert self.transport is not None
        self.transport.sendPacket(MSG_USERAUTH_PK_OK, NS(algorithm) + NS(blob))
        return Failure(IgnoreAuthentication())

    def _log_refusal(self, failure: Failure, algorithm: bytes, blob: bytes) -> Failure:
        if failure.check(UnauthorizedLogin):
            assert self.transport is not None
            try:
                key_fingerprint = fingerprint(_request_key(algorithm, blob))
            except Exception:  # Conch's key parser raises anything on garbage: the peer's fault
                key_fingerprint = "(unparsable key)"
            _log.info(
                "Refused publickey for {user} from {peer}: {key_type} {fingerprint}: {reason}",
                user=self._user(),
                peer=describe_address(self._peer()),
                key_type=loggable(algorithm),
                fingerprint=key_fingerprint,
                reason=failure.getErrorMessage(),
            )
        return failure


def _request_key(algorithm: bytes, blob: bytes) -> Key:
    """The key a publickey request names: its blob, or a certificate's certified key."""
    if algorithm in CERTIFICATE_SIGNATURES:
        key: Key = Key.fromString(parse_certificate(blob).key_blob)
        return key
    plain: Key = Key.fromString(blob)
    return plain
