"""
Everything rfwd-client can be told, as one value, and OpenSSH's C{-o Name=Value} options.

OpenSSH rules apply: option names are case-insensitive, C{Name=Value} and C{Name Value} are both
accepted, the first value given for an option wins, and C{IdentityFile} and C{RemoteForward}
accumulate.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any

from twisted_rfwd.client.identity import Identity
from twisted_rfwd.errors import ConfigError
from twisted_rfwd.protocol.algorithms import PUBLIC_KEY_ALGORITHMS
from twisted_rfwd.protocol.settings import SharedSettings
from twisted_rfwd.protocol.socks import RemoteOpenPolicy
from twisted_rfwd.protocol.spec import RemoteForward

if TYPE_CHECKING:
    from twisted_rfwd.protocol.wire import ForwardedTcpip
    from twisted_rfwd.ssh.channel import Channel

__all__ = ["ChannelHandler", "ClientConfig", "HostKeyPolicy", "SSHOptions"]

ChannelHandler = Callable[[RemoteForward, "ForwardedTcpip", "Channel"], Any]
"""
Takes a forwarded channel instead of connecting to the forward's destination (the C{rfwd:}
endpoint): attaches a local stream and returns (or fires a Deferred) to confirm, raises
L{twisted_rfwd.errors.ChannelOpenFailed} to refuse.
"""


class HostKeyPolicy(Enum):
    """C{StrictHostKeyChecking}; C{ask} means C{yes}, as rfwd-client never prompts."""

    YES = "yes"
    ACCEPT_NEW = "accept-new"
    NO = "no"

    @classmethod
    def parse(cls, text: str) -> HostKeyPolicy:
        value = text.lower()
        aliases = {"ask": "yes", "true": "yes", "off": "no", "false": "no"}
        try:
            return cls(aliases.get(value, value))
        except ValueError:
            raise ConfigError(
                f"StrictHostKeyChecking must be yes, accept-new or no, not '{text}'"
            ) from None


@dataclass
class ClientConfig(SharedSettings):
    """
    One client's settings.  C{identities} are loaded keys; C{known_hosts} the files checked,
    the first of which receives keys added under C{accept-new}.
    """

    host: str
    user: str
    forwards: list[RemoteForward] = field(default_factory=list)
    port: int = 22
    identities: list[Identity] = field(default_factory=list)
    # ssh-agent's socket (C{IdentityAgent}); its keys are offered before C{identities}.
    agent_socket: str | None = None
    # C{IdentitiesOnly}: offer only C{identities} (the agent may still sign for them).
    identities_only: bool = False
    # User certificates (where from, blob): C{KEY-cert.pub} beside the keys, C{CertificateFile};
    # each is offered before its key, which signs for it (a file's or the agent's).
    certificates: list[tuple[str, bytes]] = field(default_factory=list)
    # Tried (keyboard-interactive, then password) only once public keys have not succeeded.
    password: str | None = field(default=None, repr=False)
    strict_host_key_checking: HostKeyPolicy = HostKeyPolicy.YES
    # One path or a list of paths.
    known_hosts: str | list[str] = field(
        default_factory=lambda: [os.path.expanduser("~/.ssh/known_hosts")]
    )
    exit_on_forward_failure: bool = False
    # Covers the whole way to "authenticated and every forward answered", not just TCP.
    connect_timeout: float = 30.0
    server_alive_interval: float = 15.0
    server_alive_count_max: int = 3
    # ConnectionAttempts: tries before a connection counts as failed (ssh's; default 1).
    connection_attempts: int = 1
    # AddressFamily (any, inet, inet6) and BindAddress for the SSH connection.
    address_family: str = "any"
    bind_address: str | None = None
    # HostKeyAlgorithms and PubkeyAcceptedAlgorithms, in preference order.
    host_key_algorithms: list[bytes] = field(default_factory=lambda: list(PUBLIC_KEY_ALGORITHMS))
    pubkey_accepted_algorithms: list[bytes] = field(
        default_factory=lambda: list(PUBLIC_KEY_ALGORITHMS)
    )
    reconnect: bool = True
    reconnect_initial_delay: float = 1.0
    reconnect_max_delay: float = 60.0
    status_file: str | None = None
    # PermitRemoteOpen: where a dynamic forward's SOCKS clients may connect (default any).
    permit_remote_open: RemoteOpenPolicy = field(default_factory=RemoteOpenPolicy)
    # Forwarded channels go to this instead of their destination (None: connect, as ssh does).
    channel_handler: ChannelHandler | None = field(default=None, repr=False, compare=False)


# OpenSSH spelling of each option we understand, by lower-case name.
_KNOWN = {
    name.lower(): name
    for name in (
        "StrictHostKeyChecking",
        "UserKnownHostsFile",
        "ExitOnForwardFailure",
        "Port",
        "User",
        "IdentityFile",
        "ConnectTimeout",
        "RemoteForward",
        "BatchMode",
        "Ciphers",
        "MACs",
        "KexAlgorithms",
        "IdentityAgent",
        "IdentitiesOnly",
        "ServerAliveInterval",
        "ServerAliveCountMax",
        "RekeyLimit",
    )
}
_ACCUMULATE = {"IdentityFile", "RemoteForward"}


class SSHOptions:
    """C{-o} options as given, first value winning, checked by name as they arrive."""

    def __init__(self) -> None:
        self._values: dict[str, list[str]] = {}

    def add(self, text: str) -> None:
        """Take one C{-o} argument."""
        name, value = _split_option(text)
        canonical = _KNOWN.get(name.lower())
        if canonical is None:
            raise ConfigError(
                f"unsupported option '{name}'; rfwd-client understands "
                + ", ".join(sorted(_KNOWN.values()))
            )
        values = self._values.setdefault(canonical, [])
        if canonical in _ACCUMULATE or not values:
            values.append(value)

    def get(self, name: str) -> str | None:
        values = self._values.get(name)
        return values[0] if values else None

    def get_all(self, name: str) -> list[str]:
        return list(self._values.get(name, []))

    def flag(self, name: str) -> bool | None:
        value = self.get(name)
        if value is None:
            return None
        lowered = value.lower()
        if lowered in ("yes", "true"):
            return True
        if lowered in ("no", "false"):
            return False
        raise ConfigError(f"{name} must be yes or no, not '{value}'")

    def number(self, name: str, low: int, high: int) -> int | None:
        value = self.get(name)
        if value is None:
            return None
        if not (value.isascii() and value.isdigit()) or not low <= int(value) <= high:
            raise ConfigError(f"{name} must be a number from {low} to {high}, not '{value}'")
        return int(value)


def _split_option(text: str) -> tuple[str, str]:
    stripped = text.strip()
    for i, c in enumerate(stripped):
        if c == "=" or c.isspace():
            name, value = stripped[:i], stripped[i + 1 :].strip()
            if value.startswith("=") and c != "=":
                value = value[1:].strip()
            if name and value:
                return name, value
            break
    raise ConfigError(f"option '{text}' is not Name=Value")
