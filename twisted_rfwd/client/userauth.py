"""
The client side of C{ssh-userauth} (RFC 4252), public keys only.

Conch's L{twisted.conch.ssh.userauth.SSHUserAuthClient} signs RSA keys with SHA-1 (C{ssh-rsa}),
which OpenSSH servers refuse; this service picks C{rsa-sha2-512}/C{-256} from the server's
C{server-sig-algs}, as OpenSSH's client does, and reports a refusal as one
L{AuthenticationFailed} listing what was tried.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from twisted.conch.ssh.common import NS
from twisted.conch.ssh.keys import Key
from twisted.conch.ssh.service import SSHService
from twisted.conch.ssh.transport import (
    DISCONNECT_NO_MORE_AUTH_METHODS_AVAILABLE,
    SSHTransportBase,
)
from twisted.logger import Logger

from twisted_rfwd.client.identity import Identity
from twisted_rfwd.errors import AuthenticationFailed
from twisted_rfwd.wire import Reader

__all__ = ["PublicKeyAuth", "signature_algorithm"]

MSG_USERAUTH_REQUEST = 50
MSG_USERAUTH_FAILURE = 51
MSG_USERAUTH_SUCCESS = 52
MSG_USERAUTH_BANNER = 53
MSG_USERAUTH_PK_OK = 60


def signature_algorithm(key: Key, server_sig_algs: Sequence[bytes] | None) -> bytes:
    """The algorithm to sign with: for RSA the best SHA-2 one the server lists."""
    key_type: bytes = key.sshType()
    if key_type != b"ssh-rsa":
        return key_type
    if server_sig_algs is None:
        return b"ssh-rsa"  # an old server that announces nothing: what OpenSSH sends
    for candidate in (b"rsa-sha2-512", b"rsa-sha2-256"):
        if candidate in server_sig_algs:
            return candidate
    return b"ssh-rsa"


class PublicKeyAuth(SSHService):
    """Tries each identity in turn: query the key, sign when the server says it would do."""

    name = b"ssh-userauth"
    _log = Logger()
    transport: SSHTransportBase

    def __init__(
        self,
        user: str,
        identities: Sequence[Identity],
        next_service: SSHService,
        on_failure: Callable[[AuthenticationFailed], None],
    ) -> None:
        self.user = user.encode("utf-8")
        self._identities = list(identities)
        self._next_service = next_service
        self._on_failure = on_failure
        self._current: tuple[Identity, bytes] | None = None
        self._tried: list[str] = []
        self.authenticated_with: Identity | None = None
        self._handlers = {
            MSG_USERAUTH_FAILURE: self._on_userauth_failure,
            MSG_USERAUTH_SUCCESS: self._on_success,
            MSG_USERAUTH_BANNER: self._on_banner,
            MSG_USERAUTH_PK_OK: self._on_pk_ok,
        }

    def serviceStarted(self) -> None:
        self._request(b"none", b"")

    def packetReceived(self, messageNum: int, packet: bytes) -> None:
        handler = self._handlers.get(messageNum)
        if handler is None:
            self.transport.sendUnimplemented()
            return
        handler(packet)

    def _request(self, method: bytes, data: bytes) -> None:
        self.transport.sendPacket(
            MSG_USERAUTH_REQUEST,
            NS(self.user) + NS(self._next_service.name) + NS(method) + data,
        )

    def _on_userauth_failure(self, packet: bytes) -> None:
        reader = Reader(packet, "SSH_MSG_USERAUTH_FAILURE")
        methods = [m for m in reader.string().split(b",") if m]
        if self._current is not None:
            identity, _ = self._current
            self._tried.append(str(identity))
            self._current = None
        if b"publickey" in methods and self._identities:
            self._query(self._identities.pop(0))
            return
        error = AuthenticationFailed(
            self.user.decode("utf-8", "replace"),
            self._tried,
            [m.decode("ascii", "replace") for m in methods],
        )
        self._on_failure(error)
        self.transport.sendDisconnect(
            DISCONNECT_NO_MORE_AUTH_METHODS_AVAILABLE, b"no more authentication methods"
        )

    def _server_sig_algs(self) -> list[bytes] | None:
        extensions = getattr(self.transport, "peerExtensions", None) or {}
        value = extensions.get(b"server-sig-algs")
        return None if value is None else value.split(b",")

    def _query(self, identity: Identity) -> None:
        algorithm = signature_algorithm(identity.key, self._server_sig_algs())
        self._current = (identity, algorithm)
        self._request(b"publickey", b"\x00" + NS(algorithm) + NS(identity.key.blob()))

    def _on_pk_ok(self, packet: bytes) -> None:
        if self._current is None:
            return
        identity, algorithm = self._current
        blob = identity.key.blob()
        assert self.transport.sessionID is not None
        signed = (
            NS(self.transport.sessionID)
            + bytes((MSG_USERAUTH_REQUEST,))
            + NS(self.user)
            + NS(self._next_service.name)
            + NS(b"publickey")
            + b"\x01"
            + NS(algorithm)
            + NS(blob)
        )
        signature = identity.key.sign(signed, signatureType=algorithm)
        self._request(b"publickey", b"\x01" + NS(algorithm) + NS(blob) + NS(signature))

    def _on_success(self, packet: bytes) -> None:
        if self._current is not None:
            self.authenticated_with = self._current[0]
            self._log.info(
                "Authenticated as {user} with {identity}",
                user=self.user.decode("utf-8", "replace"),
                identity=str(self._current[0]),
            )
        self.transport.setService(self._next_service)

    def _on_banner(self, packet: bytes) -> None:
        message = Reader(packet, "SSH_MSG_USERAUTH_BANNER").string()
        self._log.info("Server banner: {banner}", banner=message.decode("utf-8", "replace"))
