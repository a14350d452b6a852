"""
Public-key logins to rfwd-server, on Twisted Cred: where authorized keys live
(L{AuthorizedKeysFiles}), how a key or a certificate is checked (L{AuthorizedKeysChecker}), and
what a successful login carries forward (L{LoginIdentity}, through L{ForwardingRealm}).
"""

from __future__ import annotations

import pwd
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from twisted.conch.avatar import ConchUser
from twisted.conch.error import ValidPublicKey
from twisted.conch.interfaces import IConchUser
from twisted.conch.ssh.keys import Key
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import ISSHPrivateKey, SSHPrivateKey
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import IRealm
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from twisted_rfwd.errors import MalformedPacket
from twisted_rfwd.protocol.certificates import (
    CERTIFICATE_SIGNATURES,
    Certificate,
    parse_certificate,
)
from twisted_rfwd.protocol.messages import loggable
from twisted_rfwd.protocol.sk import SK_ALGORITHMS, SKRequirements, is_sk_algorithm
from twisted_rfwd.protocol.wire import Reader
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
from twisted_rfwd.server.passwords import MAXIMUM_USER_NAME, PasswordLogin
from twisted_rfwd.server.sk_keys import verify_sk_signature
from twisted_rfwd.ssh.fingerprint import fingerprint
from twisted_rfwd.ssh.transport import PUBLIC_KEY_ALGORITHMS

__all__ = [
    "AuthorizedKeysChecker",
    "AuthorizedKeysFiles",
    "ForwardingAvatar",
    "ForwardingRealm",
    "LoginIdentity",
    "PeerSSHPrivateKey",
]

_log = Logger()

# sshd's RequiredRSASize.
MINIMUM_RSA_BITS = 1024


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
