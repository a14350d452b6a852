"""
Logins to rfwd-server: public keys (where authorized keys live, how a key is checked), passwords
(C{password} and C{keyboard-interactive}, checked by L{twisted_rfwd.server.passwords}), sshd's
access lists (AllowUsers, DenyUsers, AllowGroups, DenyGroups), and what a successful login
carries forward (the key's forwarding options).

Built on Twisted Cred: L{AuthorizedKeysChecker} and the password checker are the checkers,
L{ForwardingRealm} the realm, and L{ServerUserAuth} the Conch userauth service, extended to
offer the methods the configuration enables, to ask keyboard-interactive's one question, to
tell the checkers the client's address (for C{from=}) and the access lists' verdict, to take one
request at a time, and to log refusals with user and peer.
"""

from __future__ import annotations

import pwd
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from twisted.conch.avatar import ConchUser
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
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import ISSHPrivateKey, SSHPrivateKey
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import IRealm
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from twisted_rfwd.errors import MalformedPacket, RemoteProtocolError
from twisted_rfwd.protocol.addresses import describe_address
from twisted_rfwd.protocol.certificates import (
    CERTIFICATE_SIGNATURES,
    Certificate,
    parse_certificate,
)
from twisted_rfwd.protocol.messages import loggable
from twisted_rfwd.protocol.sk import SK_ALGORITHMS, SKRequirements, is_sk_algorithm
from twisted_rfwd.protocol.userauth import publickey_signed_data
from twisted_rfwd.protocol.wire import Reader, pack_string, pack_uint32
from twisted_rfwd.server.authorized_keys import (
    AuthorizedKey,
    KeyOptions,
    matches_from,
    parse_authorized_keys,
)
from twisted_rfwd.server.certificates import (
    CertificateRefused,
    check_user_certificate,
    expand_user_template,
    revocation_refusal,
)
from twisted_rfwd.server.config import ServerConfig
from twisted_rfwd.server.passwords import MAXIMUM_USER_NAME, PasswordAttempt, PasswordLogin
from twisted_rfwd.server.sk_keys import verify_sk_signature
from twisted_rfwd.server.system_users import system_groups
from twisted_rfwd.ssh.fingerprint import fingerprint
from twisted_rfwd.ssh.metrics import auth_method
from twisted_rfwd.ssh.transport import PUBLIC_KEY_ALGORITHMS, TransportMixin

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

# sshd's RequiredRSASize.
MINIMUM_RSA_BITS = 1024
# keyboard-interactive's one question, as sshd's PAM asks it; not echoed.
PASSWORD_PROMPT = b"Password: "


def _home_directory(user: str) -> str | None:
    try:
        return pwd.getpwnam(user).pw_dir
    except KeyError:
        return None


class AuthorizedKeysFiles:
    """
    sshd's C{AuthorizedKeysFile}: a path template where C{%u} is the user name, C{%h} that user's
    home directory and C{%%} a percent sign.  A template without tokens is one file for all.
    """

    def __init__(
        self, template: str, home_of: Callable[[str], str | None] = _home_directory
    ) -> None:
        self.template = template
        self._home_of = home_of

    def path_for(self, user: str) -> str | None:
        """The file for C{user}, or C{None} when the template needs a home they don't have."""
        return expand_user_template(self.template, user, self._home_of)

    def home_of(self, user: str) -> str | None:
        """The user's home directory (for C{AuthorizedPrincipalsFile}), or None."""
        return self._home_of(user)

    def keys_for(self, user: str) -> list[AuthorizedKey]:
        """Read the user's file afresh (as sshd does), logging lines that cannot be used."""
        if "/" in user or user in ("", ".", ".."):
            return []
        path = self.path_for(user)
        if path is None:
            _log.info("No home directory for user {user}: no authorized keys", user=user)
            return []
        try:
            with open(path, "rb") as f:
                text = f.read()
        except OSError as e:
            _log.info(
                "Cannot read authorized keys for {user} from {path}: {reason}",
                user=user,
                path=path,
                reason=e.strerror,
            )
            return []
        keys, warnings = parse_authorized_keys(text, path)
        for warning in warnings:
            _log.warn("Ignoring authorized key: {warning}", warning=warning)
        return keys


@dataclass(frozen=True)
class LoginIdentity:
    """
    Who logged in, with which key, and what that key permits; a password login has no key
    (C{key_type} names its method, C{fingerprint} is empty) and the default options.
    """

    user: str
    key_type: str
    fingerprint: str
    options: KeyOptions
    method: str = "publickey"


class PeerSSHPrivateKey(SSHPrivateKey):
    """
    Conch's public-key credentials plus the client's numeric address, for C{from=}, and the
    settings in force for this attempt (certificates: TrustedUserCAKeys, RevokedKeys, ...).
    """

    def __init__(
        self,
        username: bytes,
        algName: bytes,
        blob: bytes,
        sigData: bytes | None,
        signature: bytes | None,
        peer_host: str,
        config: ServerConfig | None = None,
    ) -> None:
        super().__init__(username, algName, blob, sigData, signature)
        self.peer_host = peer_host
        self.config = config


@implementer(ICredentialsChecker)
class AuthorizedKeysChecker:
    """Accepts a user whose key is in their authorized_keys and whose signature verifies."""

    credentialInterfaces = (ISSHPrivateKey,)

    def __init__(self, files: AuthorizedKeysFiles, clock: IReactorTime) -> None:
        self.files = files
        self._clock = clock

    def requestAvatarId(self, credentials: Any) -> Deferred[Any]:
        return defer.execute(self._check, credentials)

    def _check(self, credentials: Any) -> LoginIdentity:
        raw_user: bytes = credentials.username
        if len(raw_user) > MAXIMUM_USER_NAME or loggable(raw_user) != raw_user.decode(
            "utf-8", "replace"
        ):
            raise UnauthorizedLogin("not a valid user name")
        user = raw_user.decode("utf-8", "replace")
        algorithm: bytes = credentials.algName
        certified = algorithm in CERTIFICATE_SIGNATURES
        if (
            algorithm not in PUBLIC_KEY_ALGORITHMS
            and algorithm not in SK_ALGORITHMS
            and not certified
        ):
            raise UnauthorizedLogin(f"signature algorithm {loggable(algorithm)} is not accepted")
        peer_host = getattr(credentials, "peer_host", None)
        config: ServerConfig | None = getattr(credentials, "config", None)
        revoked_keys = config.revoked_keys if config is not None else None
        if certified:
            key, options, description = self._certificate(
                user, algorithm, credentials.blob, peer_host, config
            )
            signature_algorithm = CERTIFICATE_SIGNATURES[algorithm][1]
        else:
            revoked = revocation_refusal(revoked_keys, credentials.blob)
            if revoked is not None:
                raise UnauthorizedLogin(revoked)
            entry = self._find(user, credentials.blob, peer_host)
            key, options, description = entry.key, entry.options, fingerprint(entry.key)
            signature_algorithm = algorithm
        if key.type() == "RSA" and key.size() < MINIMUM_RSA_BITS:
            raise UnauthorizedLogin(
                f"RSA key of {key.size()} bits; at least {MINIMUM_RSA_BITS} are required"
            )
        if credentials.signature is None:
            raise ValidPublicKey()
        signature: bytes = credentials.signature
        signed_with = Reader(signature, "signature").string()
        if signed_with != signature_algorithm:
            raise UnauthorizedLogin("signature algorithm does not match the request")
        if is_sk_algorithm(algorithm):
            # FIDO keys: the token's flags must say what the line requires (presence, PIN).
            verify_sk_signature(
                key.blob(), signature, credentials.sigData, SKRequirements.for_key(options)
            )
        elif not key.verify(signature, credentials.sigData):
            raise UnauthorizedLogin("bad signature")
        return LoginIdentity(
            user=user,
            key_type=algorithm.decode("ascii"),
            fingerprint=description,
            options=options,
        )

    def _certificate(
        self,
        user: str,
        algorithm: bytes,
        blob: bytes,
        peer_host: str | None,
        config: ServerConfig | None,
    ) -> tuple[Key, KeyOptions, str]:
        """
        A certificate checked as sshd checks it (L{check_user_certificate}): the certified
        key, the login's options, and how logs name it (key, certificate ID and serial, CA).
        """
        certificate = _parse_certificate(algorithm, blob)
        try:
            login = check_user_certificate(
                certificate,
                user,
                peer_host,
                self._clock.seconds(),
                trusted_user_ca_keys=config.trusted_user_ca_keys if config else None,
                principals_file=config.authorized_principals_file if config else None,
                revoked_keys=config.revoked_keys if config else None,
                authorized=lambda: self.files.keys_for(user),
                home_of=self.files.home_of,
                warn=lambda text: _log.warn("{warning}", warning=text),
            )
        except CertificateRefused as e:
            raise UnauthorizedLogin(f"{_describe(certificate)}: {e}") from None
        description = (
            f"{fingerprint(login.key)} {_describe(certificate)} "
            f"CA {login.ca.sshType().decode('ascii')} {fingerprint(login.ca)} "
            f"via {login.trusted_by}"
        )
        return login.key, login.options, description

    def _find(self, user: str, blob: bytes, peer_host: str | None) -> AuthorizedKey:
        for entry in self.files.keys_for(user):
            if not entry.matches(blob):
                continue
            options = entry.options
            if options.from_patterns is not None and (
                peer_host is None or not matches_from(options.from_patterns, peer_host)
            ):
                raise UnauthorizedLogin(f"key at {entry.source} is not allowed from {peer_host}")
            if options.expiry is not None and self._expired(options.expiry):
                raise UnauthorizedLogin(f"key at {entry.source} has expired")
            return entry
        raise UnauthorizedLogin("key is not in the user's authorized keys")

    def _expired(self, expiry: datetime) -> bool:
        return datetime.fromtimestamp(self._clock.seconds(), timezone.utc) >= expiry


def _describe(certificate: Certificate) -> str:
    """C{ID "key id" serial N}, the peer-chosen ID made printable for the log."""
    return loggable(certificate.describe().encode("utf-8", "replace"), 100)


def _parse_certificate(algorithm: bytes, blob: bytes) -> Certificate:
    """The certificate a publickey request carries, of the type its algorithm names."""
    try:
        certificate = parse_certificate(blob)
    except MalformedPacket as e:
        raise UnauthorizedLogin(f"unparsable certificate: {e.detail}") from None
    if certificate.cert_type != CERTIFICATE_SIGNATURES[algorithm][0]:
        raise UnauthorizedLogin(f"a {loggable(certificate.cert_type)} for {loggable(algorithm)}")
    return certificate


class ForwardingAvatar(ConchUser):
    """A logged-in user; the connection service reads C{login} to apply the key's options."""

    def __init__(self, login: LoginIdentity) -> None:
        super().__init__()
        self.login = login


@implementer(IRealm)
class ForwardingRealm:
    def requestAvatar(
        self, avatarId: Any, mind: object, *interfaces: Any
    ) -> tuple[Any, ForwardingAvatar, Callable[[], None]]:
        if IConchUser not in interfaces:
            raise NotImplementedError("only IConchUser avatars are available")
        if isinstance(avatarId, PasswordLogin):
            avatarId = LoginIdentity(
                user=avatarId.user,
                key_type=avatarId.method,
                fingerprint="",
                options=KeyOptions(),
                method=avatarId.method,
            )
        return IConchUser, ForwardingAvatar(avatarId), lambda: None


# -- sshd's AllowUsers, DenyUsers, AllowGroups, DenyGroups ------------------------------------


def _wildcard(pattern: str, text: str) -> bool:
    """sshd's C{match_pattern}: C{*} and C{?} only, case-sensitive, the whole of C{text}."""
    parts = (".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch("".join(parts), text, re.DOTALL) is not None


def match_user(user: str, host: str, pattern: str) -> bool:
    """
    sshd's C{match_user}: C{USER}, or C{USER@HOST} where C{HOST} is a comma-separated list of
    addresses, wildcards, CIDR blocks and C{!}negations, matched against the client's numeric
    address (sshd's C{UseDNS no}).  The last C{@} splits the two.
    """
    name, at, hosts = pattern.rpartition("@")
    if not at:
        return _wildcard(pattern, user)
    return _wildcard(name, user) and matches_from(tuple(hosts.split(",")), host)


def access_refusal(
    user: str,
    host: str,
    config: ServerConfig,
    groups_of: Callable[[str], Sequence[str] | None] = system_groups,
) -> str | None:
    """
    Why the access lists refuse C{user} from C{host}, in sshd's words, or None if they allow
    it.  sshd's order (C{allowed_user} in C{auth.c}): DenyUsers, AllowUsers, then the groups
    (only looked up when a group list is set): DenyGroups, AllowGroups.  A login name that is
    not a system user has no groups: AllowGroups refuses it, DenyGroups cannot match it (sshd,
    which has no such users, refuses a user without groups whichever list is set).
    """
    if any(match_user(user, host, pattern) for pattern in config.deny_users):
        return "listed in DenyUsers"
    if config.allow_users and not any(
        match_user(user, host, pattern) for pattern in config.allow_users
    ):
        return "not listed in AllowUsers"
    if not (config.deny_groups or config.allow_groups):
        return None
    groups = groups_of(user) or []
    if not groups and config.allow_groups:
        return "not in any group"
    if any(_wildcard(p, group) for p in config.deny_groups for group in groups):
        return "a group is listed in DenyGroups"
    if config.allow_groups and not any(
        _wildcard(p, group) for p in config.allow_groups for group in groups
    ):
        return "none of user's groups are listed in AllowGroups"
    return None


def auth_methods(config: ServerConfig) -> list[bytes]:
    """The methods C{config} enables, in the order sshd lists them."""
    enabled = [
        (config.pubkey_authentication, b"publickey"),
        (config.password_authentication, b"password"),
        (config.kbd_interactive_authentication, b"keyboard-interactive"),
    ]
    return [method for on, method in enabled if on]


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
