"""
Server-side forwarding policy as sshd defines it: which addresses a C{tcpip-forward} binds
(C{GatewayPorts}) and which requests are allowed at all (C{PermitListen}, C{permitlisten=}).

Pure decisions over strings and ports; binding and logging happen elsewhere.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

from twisted_rfwd.errors import ConfigError

LOOPBACK = ("127.0.0.1", "::1")
WILDCARD = ("0.0.0.0", "::")


class GatewayPorts(Enum):
    """sshd's C{GatewayPorts}: may remote forwards listen on non-loopback addresses?"""

    NO = "no"
    YES = "yes"
    CLIENTSPECIFIED = "clientspecified"

    @classmethod
    def parse(cls, text: str) -> GatewayPorts:
        try:
            return cls(text.lower())
        except ValueError:
            raise ConfigError(
                f"GatewayPorts must be no, yes or clientspecified, not '{text}'"
            ) from None


def listen_addresses(requested: str, gateway_ports: GatewayPorts) -> tuple[str, ...]:
    """
    The addresses to bind for a forward whose client asked for C{requested}, in bind order.

    Mirrors sshd: with C{no}, only loopback (the asked-for loopback address, or both families);
    with C{yes}, every interface; with C{clientspecified}, what the client named.
    """
    if gateway_ports is GatewayPorts.YES:
        return WILDCARD
    if gateway_ports is GatewayPorts.NO:
        return (requested,) if requested in LOOPBACK else LOOPBACK
    if requested in ("", "*"):
        return WILDCARD
    if requested == "localhost":
        return LOOPBACK
    return (requested,)


def is_ip_literal(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class ListenPermission:
    """One C{PermitListen} entry: C{None} host or port means any."""

    host: str | None
    port: int | None

    def allows(self, address: str, port: int) -> bool:
        port_ok = self.port is None or (port != 0 and port == self.port)
        host_ok = self.host is None or self.host == address
        return port_ok and host_ok

    def __str__(self) -> str:
        port = "*" if self.port is None else str(self.port)
        return port if self.host is None else f"{self.host}:{port}"


@dataclass(frozen=True)
class ListenPolicy:
    """
    The set of permitted listens: C{None} permissions means C{any}; an empty tuple means C{none}.
    """

    permissions: tuple[ListenPermission, ...] | None = None

    def allows(self, address: str, port: int) -> bool:
        if self.permissions is None:
            return True
        return any(p.allows(address, port) for p in self.permissions)

    def names_port(self, address: str, port: int) -> bool:
        """Whether an entry names C{port} itself (not C{*}) and allows C{address} with it."""
        return any(p.port == port and p.allows(address, port) for p in self.permissions or ())

    @classmethod
    def parse(cls, entries: Iterable[str]) -> ListenPolicy:
        """Parse sshd's C{PermitListen} arguments: C{any}, C{none}, C{port}, C{host:port}."""
        items = [e for entry in entries for e in entry.split()]
        if not items or items == ["any"]:
            return cls(None)
        if items == ["none"]:
            return cls(())
        return cls(tuple(parse_listen_permission(item) for item in items))


def parse_listen_permission(text: str) -> ListenPermission:
    """C{port}, C{host:port}, C{[v6]:port}; C{*} for any port or host."""
    host: str | None
    if text.startswith("["):
        end = text.find("]:")
        if end < 0:
            raise ConfigError(f"bad listen permission '{text}'")
        host, port_text = text[1:end], text[end + 2 :]
    elif ":" in text:
        host, _, port_text = text.rpartition(":")
    else:
        host, port_text = None, text
    if host == "*":
        host = None
    if port_text == "*":
        return ListenPermission(host, None)
    if not (port_text.isascii() and port_text.isdigit()) or not 0 < int(port_text) <= 65535:
        raise ConfigError(f"bad port in listen permission '{text}'")
    return ListenPermission(host, int(port_text))


# Ports below this are the operating system's privileged ports (IPPORT_RESERVED).
PRIVILEGED_PORTS = 1024


def privileged_port_refusal(user: str, address: str, port: int, policy: ListenPolicy) -> str | None:
    """
    sshd lets only root listen below 1024 (C{bind_permitted}); rfwd-server's users need not be
    system users, so it is the login name C{root}, or a C{PermitListen} entry naming the port.
    """
    if port == 0 or port >= PRIVILEGED_PORTS or user == "root":
        return None
    if policy.names_port(address, port):
        return None
    return (
        f"port {port} is privileged (below {PRIVILEGED_PORTS}): only root may listen on it, "
        "or a PermitListen entry naming it"
    )
