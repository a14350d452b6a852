"""
The client side of C{ssh-userauth} (RFC 4252): public keys (from files or ssh-agent), then a
password given up front (C{keyboard-interactive}, RFC 4256, with one password prompt, and
C{password}), the order of OpenSSH's client.  Nothing ever prompts.

Conch's L{twisted.conch.ssh.userauth.SSHUserAuthClient} signs RSA keys with SHA-1 (C{ssh-rsa}),
which OpenSSH servers refuse; this service picks C{rsa-sha2-512}/C{-256} from the server's
C{server-sig-algs}, as OpenSSH's client does, and reports a refusal as one
L{AuthenticationFailed} listing what was tried (never a secret).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from enum import Enum

from twisted.conch.ssh.keys import Key
from twisted.conch.ssh.service import SSHService
from twisted.conch.ssh.transport import (
    DISCONNECT_NO_MORE_AUTH_METHODS_AVAILABLE,
    SSHTransportBase,
)
from twisted.internet.defer import maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from twisted_rfwd.client.agent import AgentKeys, prepare_identities
from twisted_rfwd.client.identity import Identity
from twisted_rfwd.errors import AuthenticationFailed
from twisted_rfwd.protocol.certificates import CERT_ALGORITHMS
from twisted_rfwd.protocol.userauth import MSG_USERAUTH_REQUEST, publickey_signed_data
from twisted_rfwd.protocol.wire import Reader, pack_string

__all__ = ["KeyboardInteractive", "Method", "PublicKeyAuth", "signature_algorithm"]

MSG_USERAUTH_FAILURE = 51
MSG_USERAUTH_SUCCESS = 52
MSG_USERAUTH_BANNER = 53
# PK_OK, PASSWD_CHANGEREQ or INFO_REQUEST: one number, read by the method in progress.
MSG_USERAUTH_60 = 60
MSG_USERAUTH_INFO_RESPONSE = 61
# A server asking keyboard-interactive questions for longer than this is not asking for a password.
MAX_INFO_REQUESTS = 5


class Method(Enum):
    """An authentication method we may have a request in progress for, named as on the wire."""

    PUBLICKEY = b"publickey"
    PASSWORD = b"password"
    KEYBOARD_INTERACTIVE = b"keyboard-interactive"


class KeyboardInteractive(Enum):
    """
    How a C{keyboard-interactive} attempt went so far; the value is what the failure message
    adds after the method's name.
    """

    NOTHING_ASKED = ""
    PASSWORD_SENT = " (password)"
    UNANSWERED_PROMPTS = " (unanswered prompts)"
    TOO_MANY_QUESTIONS = " (too many questions)"


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
    """
    Tries each identity in turn (query the key, sign when the server says it would do), then
    the password if there is one: C{keyboard-interactive} answering a single password prompt,
    then C{password}.  With C{agent}, the agent's keys are listed first and merged with
    C{identities} as ssh does (see L{prepare_identities}); C{identities_only} keeps to the
    files.  An identity's signature may come later (a Deferred), as the agent's does.
    """

    name = b"ssh-userauth"
    _log = Logger()
    transport: SSHTransportBase

    def __init__(
        self,
        user: str,
        identities: Sequence[Identity],
        next_service: SSHService,
        on_failure: Callable[[AuthenticationFailed], None],
        *,
        password: str | None = None,
        agent: AgentKeys | None = None,
        identities_only: bool = False,
        accepted_algorithms: Sequence[bytes] | None = None,
        certificates: Sequence[tuple[str, bytes]] = (),
    ) -> None:
        self.user = user.encode("utf-8")
        # PubkeyAcceptedAlgorithms: keys whose signature algorithm is not listed are not offered.
        self._accepted = None if accepted_algorithms is None else set(accepted_algorithms)
        self._identities = list(identities)
        self._next_service = next_service
        self._on_failure = on_failure
        self._password = password
        self._agent = agent
        self._identities_only = identities_only
        # User certificates from files (where from, blob), paired with their keys at the start.
        self._certificates = list(certificates)
        # The request in progress: C{publickey} with its identity and algorithm, C{password}
        # or C{keyboard-interactive}; None when waiting for nothing in particular (the first
        # C{none} request included).
        self._method: Method | None = None
        self._current: tuple[Identity, bytes] | None = None
        self._methods: list[bytes] = []
        self._password_tried: set[Method] = set()
        self._password_rejected = False
        self._info_requests = 0
        self._keyboard = KeyboardInteractive.NOTHING_ASKED
        self._tried: list[str] = []
        self._stopped = False
        self.authenticated_with: Identity | None = None
        self.authenticated_by: str | None = None
        self._handlers = {
            MSG_USERAUTH_FAILURE: self._on_userauth_failure,
            MSG_USERAUTH_SUCCESS: self._on_success,
            MSG_USERAUTH_BANNER: self._on_banner,
            MSG_USERAUTH_60: self._on_method_message,
        }

    def serviceStarted(self) -> None:
        if self._agent is None:
            self._identities = prepare_identities(
                self._identities, [], self._identities_only, self._certificates
            )
            self._request(b"none", b"")
            return

        def listed(agent_keys: list[Identity]) -> None:
            if self._stopped:
                return
            self._identities = prepare_identities(
                self._identities, agent_keys, self._identities_only, self._certificates
            )
            self._request(b"none", b"")

        self._agent.identities().addCallback(listed).addErrback(self._unexpected)

    def serviceStopped(self) -> None:
        self._stopped = True
        if self._agent is not None:
            self._agent.close()

    def packetReceived(self, messageNum: int, packet: bytes) -> None:
        handler = self._handlers.get(messageNum)
        if handler is None:
            self.transport.sendUnimplemented()
            return
        handler(packet)

    def _request(self, method: bytes, data: bytes) -> None:
        self.transport.sendPacket(
            MSG_USERAUTH_REQUEST,
            pack_string(self.user)
            + pack_string(self._next_service.name)
            + pack_string(method)
            + data,
        )

    def _on_userauth_failure(self, packet: bytes) -> None:
        reader = Reader(packet, "SSH_MSG_USERAUTH_FAILURE")
        self._methods = [m for m in reader.string().split(b",") if m]
        partial = reader.boolean()
        self._finish_attempt(" (partial success)" if partial else "")
        self._next()

    def _finish_attempt(self, note: str = "") -> None:
        """Record the request in progress as tried (its outcome in C{note})."""
        if self._method is Method.PUBLICKEY and self._current is not None:
            self._tried.append(f"{self._current[0]}{note}")
        elif self._method is Method.KEYBOARD_INTERACTIVE:
            self._tried.append(f"keyboard-interactive{self._keyboard.value}{note}")
            if self._keyboard is KeyboardInteractive.PASSWORD_SENT and not note:
                self._password_rejected = True
        elif self._method is Method.PASSWORD:
            self._tried.append(f"password{note}")
        self._method, self._current = None, None

    def _next(self) -> None:
        """Make the next request the server's methods allow, or give up."""
        methods = self._methods
        while Method.PUBLICKEY.value in methods and self._identities:
            identity = self._identities.pop(0)
            algorithm = identity.algorithm(self._server_sig_algs())
            # A certificate algorithm is accepted with its plain one (as OpenSSH's defaults).
            plain = CERT_ALGORITHMS.get(algorithm, algorithm)
            if self._accepted is not None and plain not in self._accepted:
                self._log.debug(
                    "Skipping {source}: {algorithm} is not in PubkeyAcceptedAlgorithms",
                    source=identity.source,
                    algorithm=algorithm.decode("ascii", "replace"),
                )
                continue
            self._query(identity, algorithm)
            return
        if self._password is not None and not self._password_rejected:
            for method in (Method.KEYBOARD_INTERACTIVE, Method.PASSWORD):
                if method.value in methods and method not in self._password_tried:
                    self._password_tried.add(method)
                    self._start_password_method(method)
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

    def _query(self, identity: Identity, algorithm: bytes) -> None:
        self._method, self._current = Method.PUBLICKEY, (identity, algorithm)
        blob = identity.public_blob
        self._request(Method.PUBLICKEY.value, b"\x00" + pack_string(algorithm) + pack_string(blob))

    def _start_password_method(self, method: Method) -> None:
        assert self._password is not None
        self._method = method
        if method is Method.PASSWORD:
            password = self._password.encode("utf-8")
            self._request(Method.PASSWORD.value, b"\x00" + pack_string(password))
        else:
            self._info_requests, self._keyboard = 0, KeyboardInteractive.NOTHING_ASKED
            # language, submethods
            self._request(Method.KEYBOARD_INTERACTIVE.value, pack_string(b"") + pack_string(b""))

    def _on_method_message(self, packet: bytes) -> None:
        """Message 60: PK_OK, PASSWD_CHANGEREQ or INFO_REQUEST, by the method in progress."""
        if self._method is Method.PUBLICKEY:
            self._on_pk_ok(packet)
        elif self._method is Method.KEYBOARD_INTERACTIVE:
            self._on_info_request(packet)
        elif self._method is Method.PASSWORD:
            # An expired password: changing it needs a person.
            self._finish_attempt(" (the server demands a new password)")
            self._password_rejected = True
            self._next()
        else:
            self.transport.sendUnimplemented()

    def _on_pk_ok(self, packet: bytes) -> None:
        if self._current is None:
            return
        identity, algorithm = self._current
        blob = identity.public_blob
        assert self.transport.sessionID is not None
        signed = publickey_signed_data(
            self.transport.sessionID, self.user, self._next_service.name, algorithm, blob
        )

        def signed_ok(signature: bytes) -> None:
            if self._stopped or self._current is None or self._current[0] is not identity:
                return
            self._request(
                Method.PUBLICKEY.value,
                b"\x01" + pack_string(algorithm) + pack_string(blob) + pack_string(signature),
            )

        def sign_failed(failure: Failure) -> None:
            if self._stopped or self._current is None or self._current[0] is not identity:
                return
            reason = failure.getErrorMessage()
            self._log.warn(
                "Cannot sign with {identity}: {reason}", identity=str(identity), reason=reason
            )
            self._finish_attempt(f" (not signed: {reason})")
            self._next()

        d = maybeDeferred(identity.sign, signed, algorithm)
        d.addCallbacks(signed_ok, sign_failed).addErrback(self._unexpected)

    def _on_info_request(self, packet: bytes) -> None:
        assert self._password is not None
        reader = Reader(packet, "SSH_MSG_USERAUTH_INFO_REQUEST")
        reader.string(), reader.string(), reader.string()  # name, instruction, language
        prompts = [(reader.string(), reader.boolean()) for _ in range(reader.uint32())]
        self._info_requests += 1
        if self._info_requests > MAX_INFO_REQUESTS:
            self._keyboard = KeyboardInteractive.TOO_MANY_QUESTIONS
            self._finish_attempt()
            self._next()  # a new request abandons keyboard-interactive (RFC 4256 3.1)
            return
        answers: list[bytes] = []
        first = self._keyboard is KeyboardInteractive.NOTHING_ASKED
        if len(prompts) == 1 and first and _asks_password(*prompts[0]):
            answers = [self._password.encode("utf-8")]
            self._keyboard = KeyboardInteractive.PASSWORD_SENT
        elif prompts:
            # Questions we cannot answer (a one-time code, a second factor): empty answers.
            answers = [b""] * len(prompts)
            if first:
                self._keyboard = KeyboardInteractive.UNANSWERED_PROMPTS
        response = len(answers).to_bytes(4, "big") + b"".join(pack_string(a) for a in answers)
        self.transport.sendPacket(MSG_USERAUTH_INFO_RESPONSE, response)

    def _on_success(self, packet: bytes) -> None:
        user = self.user.decode("utf-8", "replace")
        if self._method is Method.PUBLICKEY and self._current is not None:
            self.authenticated_with = self._current[0]
            self.authenticated_by = str(self._current[0])
        elif self._method is not None:
            self.authenticated_by = self._method.value.decode("ascii")
        if self.authenticated_by is not None:
            self._log.info(
                "Authenticated as {user} with {identity}",
                user=user,
                identity=self.authenticated_by,
            )
        self.transport.setService(self._next_service)

    def _on_banner(self, packet: bytes) -> None:
        message = Reader(packet, "SSH_MSG_USERAUTH_BANNER").string()
        self._log.info("Server banner: {banner}", banner=message.decode("utf-8", "replace"))

    def _unexpected(self, failure: Failure) -> None:
        self._log.failure("Unexpected error during authentication", failure=failure)
        if not self._stopped:
            self.transport.loseConnection()


def _asks_password(prompt: bytes, echo: bool) -> bool:
    """A prompt such as sshd's C{Password:} or C{user@host's password:}."""
    return not echo and b"password" in prompt.lower()
