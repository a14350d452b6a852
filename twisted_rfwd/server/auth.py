"""
Public-key login for rfwd-server: where authorized keys live, how a key is checked, and what a
successful login carries forward (the key's forwarding options).

Built on Twisted Cred: L{AuthorizedKeysChecker} is the checker, L{ForwardingRealm} the realm, and
L{ServerUserAuth} the Conch userauth service, extended only to tell the checker the client's
address (for C{from=}) and to log refusals with user and peer.
"""

from __future__ import annotations

import pwd
from collections.abc import Callable
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

from twisted_rfwd.errors import RemoteProtocolError
from twisted_rfwd.protocol.addresses import describe_address
from twisted_rfwd.protocol.messages import loggable
from twisted_rfwd.protocol.userauth import publickey_signed_data
from twisted_rfwd.protocol.wire import Reader
from twisted_rfwd.server.authorized_keys import (
    AuthorizedKey,
    KeyOptions,
    matches_from,
    parse_authorized_keys,
)
from twisted_rfwd.ssh.fingerprint import fingerprint
from twisted_rfwd.ssh.transport import PUBLIC_KEY_ALGORITHMS, TransportMixin

__all__ = [
    "AuthorizedKeysChecker",
    "AuthorizedKeysFiles",
    "ForwardingAvatar",
    "ForwardingRealm",
    "LoginIdentity",
    "ServerUserAuth",
]

_log = Logger()

# sshd's RequiredRSASize.
MINIMUM_RSA_BITS = 1024
# Longer user names, or unprintable ones, are refused: they end up in file paths and log lines.
MAXIMUM_USER_NAME = 64


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
        out: list[str] = []
        i = 0
        text = self.template
        while i < len(text):
            if text[i] == "%" and i + 1 < len(text):
                token = text[i + 1]
                if token == "u":
                    out.append(user)
                elif token == "h":
                    home = self._home_of(user)
                    if home is None:
                        return None
                    out.append(home)
                elif token == "%":
                    out.append("%")
                else:
                    out.append(text[i : i + 2])
                i += 2
            else:
                out.append(text[i])
                i += 1
        return "".join(out)

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
    """Who logged in, with which key, and what that key permits."""

    user: str
    key_type: str
    fingerprint: str
    options: KeyOptions


class PeerSSHPrivateKey(SSHPrivateKey):
    """Conch's public-key credentials plus the client's numeric address, for C{from=}."""

    def __init__(
        self,
        username: bytes,
        algName: bytes,
        blob: bytes,
        sigData: bytes | None,
        signature: bytes | None,
        peer_host: str,
    ) -> None:
        super().__init__(username, algName, blob, sigData, signature)
        self.peer_host = peer_host


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
        if algorithm not in PUBLIC_KEY_ALGORITHMS:
            raise UnauthorizedLogin(f"signature algorithm {loggable(algorithm)} is not accepted")
        peer_host = getattr(credentials, "peer_host", None)
        entry = self._find(user, credentials.blob, peer_host)
        if entry.key.type() == "RSA" and entry.key.size() < MINIMUM_RSA_BITS:
            raise UnauthorizedLogin(
                f"RSA key of {entry.key.size()} bits; at least {MINIMUM_RSA_BITS} are required"
            )
        if credentials.signature is None:
            raise ValidPublicKey()
        signature: bytes = credentials.signature
        signed_with = Reader(signature, "signature").string()
        if signed_with != algorithm:
            raise UnauthorizedLogin("signature algorithm does not match the request")
        if not entry.key.verify(signature, credentials.sigData):
            raise UnauthorizedLogin("bad signature")
        return LoginIdentity(
            user=user,
            key_type=algorithm.decode("ascii"),
            fingerprint=fingerprint(entry.key),
            options=entry.options,
        )

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
        return IConchUser, ForwardingAvatar(avatarId), lambda: None


class ServerUserAuth(SSHUserAuthServer):
    """
    Conch's userauth server with sshd's limits, the peer address, and logged refusals.

    Failures are counted as sshd counts them (C{userauth_finish} in OpenSSH's C{auth2.c}):
    every failed request counts except a first C{none}; a key the server would accept
    (C{PK_OK}) is not a failure; the connection is dropped at the C{MaxAuthTries}th failure,
    with sshd's "Too many authentication failures".  One C{ssh-userauth} service per connection
    (the transport's phase table), so the count cannot be reset.
    """

    def __init__(self, clock: IReactorTime, login_grace_time: float, max_auth_tries: int) -> None:
        self.clock = clock
        self.loginTimeout = login_grace_time  # type: ignore[assignment]
        self.max_auth_tries = max_auth_tries
        # Conch's own counter never fires: ours (below) ends the connection first.
        self.attemptsBeforeDisconnect = max_auth_tries + 1
        self.attempts = 0
        self.failures = 0

    def ssh_USERAUTH_REQUEST(self, packet: bytes) -> Any:
        self.attempts += 1
        return super().ssh_USERAUTH_REQUEST(packet)

    def _ebBadAuth(self, reason: Failure) -> None:
        """sshd's C{userauth_finish} for a failure: count it, and end at MaxAuthTries."""
        if reason.check(IgnoreAuthentication):
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
            Key.fromString(blob)
        except Exception:  # Conch's key parser raises anything on garbage: the peer's fault
            return defer.fail(UnauthorizedLogin("unparsable public key"))
        peer_host = str(getattr(self._peer(), "host", ""))
        credentials = PeerSSHPrivateKey(
            self.user or b"", algorithm, blob, signed_data, signature, peer_host
        )
        d: Deferred[Any] = self.portal.login(credentials, None, IConchUser)
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
                key_fingerprint = fingerprint(Key.fromString(blob))
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
