"""
Every error twisted-rfwd raises on purpose.

Each one carries the facts as named fields and renders, through C{str()}, as a sentence for the
person who has to act on it.  A traceback means a bug; these are not bugs, except
L{LocalProtocolError}, which says whose bug it is.  Protocol errors are split by whose fault
they are, as h11 does: L{RemoteProtocolError} (the peer's) and L{LocalProtocolError} (ours).
"""

from __future__ import annotations

from collections.abc import Sequence


class RfwdError(Exception):
    """Base class: an expected failure with a message written for a person."""


class ConfigError(RfwdError):
    """A setting given by the user cannot be used."""


class BadForwardSpec(ConfigError):
    """A C{-R} argument is not C{[bind_address:]port:host:hostport}."""

    def __init__(self, spec: str, reason: str) -> None:
        super().__init__(spec, reason)
        self.spec = spec
        self.reason = reason

    def __str__(self) -> str:
        return f"Bad remote forwarding specification '{self.spec}': {self.reason}"


class KeyLoadError(ConfigError):
    """A private or public key file cannot be read or parsed."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(path, reason)
        self.path = path
        self.reason = reason

    def __str__(self) -> str:
        return f"cannot load key {self.path}: {self.reason}"


class RemoteProtocolError(RfwdError):
    """
    The peer sent something the SSH protocol does not allow: its fault, not ours.  The
    connection ends with a C{PROTOCOL_ERROR} disconnect that says what was wrong, and one log
    line without a traceback: nothing in our code needs fixing.
    """


class LocalProtocolError(RfwdError):
    """
    We were about to break the SSH protocol ourselves: a bug in rfwd, not the peer's fault.
    Like any other unexpected exception while handling the peer's bytes, it is logged with its
    traceback, and the peer gets a neutral C{BY_APPLICATION} disconnect ("internal error")
    that does not blame it.
    """


class MalformedPacket(RemoteProtocolError):
    """A message could not be parsed."""

    def __init__(self, what: str, detail: str) -> None:
        super().__init__(what, detail)
        self.what = what
        self.detail = detail

    def __str__(self) -> str:
        return f"malformed {self.what}: {self.detail}"


class HostKeyError(RfwdError):
    """The server's host key could not be verified."""

    def __init__(
        self, host: str, port: int, key_type: str, fingerprint: str, known_hosts: str
    ) -> None:
        super().__init__(host, port, key_type, fingerprint, known_hosts)
        self.host = host
        self.port = port
        self.key_type = key_type
        self.fingerprint = fingerprint
        self.known_hosts = known_hosts

    @property
    def host_id(self) -> str:
        """The name OpenSSH files this host under: C{host}, or C{[host]:port} off port 22."""
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"


class UnknownHostKey(HostKeyError):
    """No key is recorded for this host and policy forbids adding one."""

    def __str__(self) -> str:
        return (
            f"Host key verification failed: no {self.key_type} host key for {self.host_id} "
            f"is recorded in {self.known_hosts}.\n"
            f"The server presented {self.key_type} key {self.fingerprint}.\n"
            f"If that fingerprint is the server's, trust it by running once with "
            f"-o StrictHostKeyChecking=accept-new, or append the output of "
            f"'ssh-keyscan{self._keyscan_args()}' to {self.known_hosts}."
        )

    def _keyscan_args(self) -> str:
        return f" -p {self.port} {self.host}" if self.port != 22 else f" {self.host}"


class ChangedHostKey(HostKeyError):
    """The server presented a different key from the one recorded: possibly an attack."""

    def __init__(
        self,
        host: str,
        port: int,
        key_type: str,
        fingerprint: str,
        known_hosts: str,
        line: int | None,
    ) -> None:
        super().__init__(host, port, key_type, fingerprint, known_hosts)
        self.line = line

    def __str__(self) -> str:
        where = f"{self.known_hosts}:{self.line}" if self.line else self.known_hosts
        return (
            f"HOST KEY FOR {self.host_id} HAS CHANGED: someone could be intercepting this "
            f"connection, or the server's key was replaced.\n"
            f"The server presented {self.key_type} key {self.fingerprint}, which does not "
            f"match the key recorded at {where}.\n"
            f"If the new key is legitimate, remove the old entry with "
            f"'ssh-keygen -R \"{self.host_id}\" -f {self.known_hosts}' and connect again."
        )


class RevokedHostKey(HostKeyError):
    """The server presented a key marked C{@revoked} in a known_hosts file."""

    def __init__(
        self, host: str, port: int, key_type: str, fingerprint: str, known_hosts: str, line: int
    ) -> None:
        super().__init__(host, port, key_type, fingerprint, known_hosts)
        self.line = line

    def __str__(self) -> str:
        return (
            f"Host key verification failed: the {self.key_type} key {self.fingerprint} presented "
            f"by {self.host_id} is marked @revoked at {self.known_hosts}:{self.line}."
        )


class AuthenticationFailed(RfwdError):
    """The server accepted none of the credentials we offered."""

    def __init__(self, user: str, tried: list[str], server_methods: list[str]) -> None:
        super().__init__(user, tried, server_methods)
        self.user = user
        self.tried = tried
        self.server_methods = server_methods

    def __str__(self) -> str:
        tried = ", ".join(self.tried) if self.tried else "no usable credentials"
        methods = ",".join(self.server_methods) or "none"
        return (
            f"Permission denied for user '{self.user}': tried {tried}; "
            f"the server accepts ({methods})."
        )


class ForwardRefused(RfwdError):
    """The server refused a C{tcpip-forward} request."""

    def __init__(self, spec: str) -> None:
        super().__init__(spec)
        self.spec = spec

    def __str__(self) -> str:
        # ssh's words: a Unix-socket forward (its spec starts with the path) is a "listen path".
        what = "path" if self.spec.startswith("/") else "port"
        return f"remote port forwarding failed for listen {what} {self.spec}"


class ChannelOpenFailed(RfwdError):
    """The peer answered a channel open with C{SSH_MSG_CHANNEL_OPEN_FAILURE}."""

    def __init__(self, code: int, description: str) -> None:
        super().__init__(code, description)
        self.code = code
        self.description = description

    def __str__(self) -> str:
        return f"channel open failed: {self.description} (code {self.code})"


class GlobalRequestFailed(Exception):
    """The peer answered one of our global requests with C{REQUEST_FAILURE}."""

    def __init__(self, name: bytes) -> None:
        super().__init__(name)
        self.name = name


class PeerMaxPacketTooSmall(RfwdError):
    """The peer confirmed our channel with a maximum packet below the floor we require."""

    def __init__(self, max_packet: int, minimum: int) -> None:
        super().__init__(max_packet, minimum)
        self.max_packet = max_packet
        self.minimum = minimum

    def __str__(self) -> str:
        return (
            f"the peer's maximum packet size ({self.max_packet}) is below the {self.minimum} "
            "bytes required; channel closed"
        )


class ConnectionClosed(RfwdError):
    """The SSH connection ended; C{reason} says how, in words."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    def __str__(self) -> str:
        return self.reason


class ChangedHostKeyForwardingDisabled(ChangedHostKey):
    """
    Under C{StrictHostKeyChecking=no}, the server presented a different key from the one
    recorded.  ssh then goes on without password and keyboard-interactive authentication and
    without port forwarding, since a man in the middle could use them; forwarding being all
    rfwd-client does, it does not go on at all.
    """

    def __str__(self) -> str:
        where = f"{self.known_hosts}:{self.line}" if self.line else self.known_hosts
        return (
            f"HOST KEY FOR {self.host_id} HAS CHANGED: the server presented {self.key_type} key "
            f"{self.fingerprint}, which does not match the key recorded at {where}.\n"
            f"StrictHostKeyChecking=no does not allow password or keyboard-interactive "
            f"authentication or port forwarding to a host whose key changed, as in ssh; "
            f"forwarding being all rfwd-client does, it did not log in.\n"
            f"If the new key is legitimate, remove the old entry with "
            f"'ssh-keygen -R \"{self.host_id}\" -f {self.known_hosts}' and connect again."
        )


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class BindError(RfwdError):
    """No socket could be bound for a forward."""

    def __init__(self, failures: Sequence[tuple[str, int, str]]) -> None:
        super().__init__(failures)
        self.failures = list(failures)

    def __str__(self) -> str:
        return "; ".join(
            f"cannot listen on {_host_port(address, port)}: {reason}"
            for address, port, reason in self.failures
        )


class MacError(RemoteProtocolError):
    """A packet failed authentication: corrupted, forged, or keyed wrongly."""

    def __str__(self) -> str:
        return "packet authentication failed (bad MAC)"


class EncryptedKey(KeyLoadError):
    """A private key file is encrypted and no passphrase was given."""

    def __init__(self, path: str) -> None:
        super().__init__(
            path,
            "the key is encrypted and rfwd-client cannot prompt for a passphrase: "
            "give it with --passphrase-file or --passphrase-env, or add the key to ssh-agent",
        )


class AgentError(RfwdError):
    """The agent could not be used, or refused an operation."""


class ConfigFileError(ConfigError):
    """A line of the file cannot be used: C{FILE line N: reason}."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(where, reason)
        self.where = where
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"


class InvalidHostCertificate(HostKeyError):
    """The server's host certificate is not one its CA signed (ssh refuses the key outright)."""

    def __str__(self) -> str:
        return (
            f"Host key verification failed: the {self.key_type} host certificate "
            f"{self.fingerprint} presented by {self.host_id} does not carry a valid signature "
            f"of its CA ({self.known_hosts})."
        )


class CertificateRefused(RfwdError):
    """A certificate does not log in; the message says why, in sshd's words where it has some."""
