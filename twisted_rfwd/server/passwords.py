"""
Password logins for rfwd-server: the file of bcrypt hashes, and the Cred checker that reads it.

The file holds one C{user:$2b$12$...} a line; blank lines and C{#} comments are skipped.
C{python -m twisted_rfwd.server.passwd FILE USER} (L{twisted_rfwd.server.passwd}) writes it.
Like authorized_keys, it is read afresh at every attempt: an edit counts from the next login,
without a restart, and a line that cannot be used is named (C{FILE line N: ...}) each read.

Every attempt costs one bcrypt computation, whoever the user: one the file does not list (or
one the access lists refuse) is checked against a dummy hash of the same cost, so the time an
answer takes does not tell which user names exist.  bcrypt runs in the reactor's thread pool
when there is one, so forwarded connections keep flowing while a password is checked.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

import bcrypt
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorThreads
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from zope.interface import implementer

__all__ = [
    "DEFAULT_COST",
    "MAXIMUM_PASSWORD",
    "MAXIMUM_USER_NAME",
    "PasswordAttempt",
    "PasswordChecker",
    "PasswordHashes",
    "PasswordLogin",
    "dummy_hash",
    "hash_password",
    "invalid_user_name",
    "parse_password_hashes",
    "read_password_hashes",
]

_log = Logger()

# bcrypt's work factor for new hashes: about a quarter of a second on a current CPU.
DEFAULT_COST = 12
# bcrypt reads only this much of a password.
MAXIMUM_PASSWORD = 72
# Longer user names, or unprintable ones, are refused: they end up in file paths and log lines.
MAXIMUM_USER_NAME = 64

# $2b$ (and the older $2a$, $2y$) with a two-digit cost, a 22-character salt whose last
# character carries 2 bits (so only ".Oeu"), and a 31-character hash.
_BCRYPT = re.compile(rb"\$2[aby]\$(\d\d)\$[./A-Za-z0-9]{21}[.Oeu][./A-Za-z0-9]{31}")
_COSTS = range(4, 32)


def invalid_user_name(user: str) -> str | None:
    """Why C{user} cannot have a line in the file, or None if it can."""
    if not user:
        return "the user name is empty"
    if len(user.encode("utf-8")) > MAXIMUM_USER_NAME:
        return f"the user name is longer than {MAXIMUM_USER_NAME} bytes"
    if ":" in user:
        return "the user name contains ':'"
    if any(c.isspace() or not c.isprintable() for c in user):
        return "the user name contains spaces or unprintable characters"
    return None


@dataclass(frozen=True)
class PasswordHashes:
    """The usable lines of a password file: user name to bcrypt hash, first line winning."""

    hashes: dict[str, bytes]

    def cost(self, user: str) -> int:
        """The cost an attempt for C{user} must take: their hash's, else the file's first."""
        hashed = self.hashes.get(user) or next(iter(self.hashes.values()), None)
        return DEFAULT_COST if hashed is None else int(hashed[4:6])


def parse_password_hashes(text: bytes, source: str) -> tuple[PasswordHashes, list[str]]:
    """The hashes in C{text}, and one warning (C{SOURCE line N: why}) per unusable line."""
    hashes: dict[str, bytes] = {}
    warnings: list[str] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(b"#"):
            continue
        where = f"{source} line {number}"
        raw_user, colon, hashed = line.partition(b":")
        if not colon:
            warnings.append(f"{where}: expected user:hash")
            continue
        try:
            user = raw_user.decode("utf-8")
        except UnicodeDecodeError:
            warnings.append(f"{where}: the user name is not UTF-8")
            continue
        invalid = invalid_user_name(user)
        if invalid is not None:
            warnings.append(f"{where}: {invalid}")
            continue
        match = _BCRYPT.fullmatch(hashed.strip())
        if match is None:
            warnings.append(f"{where}: the hash for {user} is not a bcrypt hash ($2b$...)")
            continue
        if int(match.group(1)) not in _COSTS:
            warnings.append(f"{where}: the hash for {user} has cost {int(match.group(1))}")
            continue
        if user in hashes:
            warnings.append(f"{where}: {user} is listed again; the first line counts")
            continue
        hashes[user] = match.group(0)
    return PasswordHashes(hashes), warnings


def read_password_hashes(path: str) -> PasswordHashes | None:
    """Read C{path} afresh, logging each unusable line; None (logged) if it cannot be read."""
    try:
        with open(path, "rb") as f:
            text = f.read()
    except OSError as e:
        _log.warn("Cannot read password hashes from {path}: {reason}", path=path, reason=e.strerror)
        return None
    hashes, warnings = parse_password_hashes(text, path)
    for warning in warnings:
        _log.warn("Ignoring password hash: {problem}", problem=warning)
    return hashes


def hash_password(password: bytes, cost: int = DEFAULT_COST) -> bytes:
    """A new bcrypt hash of C{password} (at most L{MAXIMUM_PASSWORD} bytes)."""
    return bcrypt.hashpw(password, bcrypt.gensalt(cost))


@cache
def dummy_hash(cost: int) -> bytes:
    """
    A hash bcrypt computes in full at C{cost} but no password matches in practice: a random
    salt and a hash of all zero bits (dots).  Made without hashing, so costs no time itself.
    """
    return bcrypt.gensalt(cost) + b"." * 31


@implementer(IUsernamePassword)
class PasswordAttempt:
    """
    One password (from C{password} or a keyboard-interactive answer), with what the userauth
    service decided for this attempt: the file to check it against, and whether the access lists
    already refused the user (then the password is checked all the same, and the login fails).
    """

    def __init__(
        self,
        username: bytes,
        password: bytes,
        method: str,
        hashes_file: str | None,
        refusal: str | None = None,
    ) -> None:
        self.username = username
        self.password = password
        self.method = method
        self.hashes_file = hashes_file
        self.refusal = refusal

    def checkPassword(self, password: bytes) -> bool:
        return hmac.compare_digest(password, self.password)


@dataclass(frozen=True)
class PasswordLogin:
    """Who logged in with a password, and by which method (C{password}, ...)."""

    user: str
    method: str


@implementer(ICredentialsChecker)
class PasswordChecker:
    """
    Accepts a L{PasswordAttempt} whose password matches the user's hash in its file.

    @param verify: C{(password, hash) -> bool}, bcrypt's C{checkpw} (replaceable for tests).
    """

    credentialInterfaces = (IUsernamePassword,)

    def __init__(
        self, reactor: object, verify: Callable[[bytes, bytes], bool] = bcrypt.checkpw
    ) -> None:
        self._threads = reactor if IReactorThreads.providedBy(reactor) else None
        self._verify = verify

    def requestAvatarId(self, credentials: Any) -> Deferred[Any]:
        if not isinstance(credentials, PasswordAttempt):
            return defer.fail(UnauthorizedLogin("not a password attempt of this server"))
        user = credentials.username.decode("utf-8", "replace")
        reason: str | None = credentials.refusal
        path = credentials.hashes_file
        hashes = PasswordHashes({})
        if path is None:
            reason = reason or "no password hashes file is set"
        else:
            read = read_password_hashes(path)
            if read is None:
                reason = reason or f"cannot read {path}"
            else:
                hashes = read
        hashed = hashes.hashes.get(user)
        if hashed is None:
            reason = reason or f"no password for this user in {path}"
        target = hashed if hashed is not None else dummy_hash(hashes.cost(user))
        password = credentials.password[:MAXIMUM_PASSWORD]
        d = self._run(target, password)

        def decided(matched: bool) -> PasswordLogin:
            if reason is not None:
                raise UnauthorizedLogin(reason)
            if not matched:
                raise UnauthorizedLogin("wrong password")
            return PasswordLogin(user, credentials.method)

        return d.addCallback(decided)

    def _run(self, hashed: bytes, password: bytes) -> Deferred[bool]:
        """bcrypt in the reactor's thread pool (it releases the GIL), or here without one."""
        if self._threads is None:
            return defer.execute(self._verify, password, hashed)
        threads: Any = self._threads
        return deferToThreadPool(threads, threads.getThreadPool(), self._verify, password, hashed)
