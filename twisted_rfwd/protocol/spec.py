"""
The C{-R} forward specification: parsing OpenSSH's syntax and naming what goes on the wire.

Pure: no networking imports, so it can be tested and reused on its own.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from twisted_rfwd.errors import BadForwardSpec

__all__ = ["RemoteForward", "parse_remote_forward"]


@dataclass(frozen=True)
class RemoteForward:
    """
    One remote forward: the server listens on C{bind_address:listen_port}, and each connection
    it accepts there is relayed to C{host:host_port} as seen from the client.

    C{bind_address} is C{None} when the spec named none (OpenSSH then asks for C{localhost}),
    and C{""} for C{*} or an empty field (all interfaces, subject to the server's GatewayPorts).
    """

    listen_port: int
    host: str
    host_port: int
    bind_address: str | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.listen_port <= 65535:
            raise BadForwardSpec(str(self), f"listen port {self.listen_port} is out of range")
        if not 1 <= self.host_port <= 65535:
            raise BadForwardSpec(str(self), f"port {self.host_port} is out of range")
        if not self.host:
            raise BadForwardSpec(str(self), "the destination host is empty")

    @property
    def request_address(self) -> str:
        """The bind address string sent in C{tcpip-forward}, exactly as OpenSSH sends it."""
        if self.bind_address is None:
            return "localhost"
        if self.bind_address in ("", "*"):
            return ""
        return self.bind_address

    @property
    def destination(self) -> str:
        """C{host:hostport} as OpenSSH prints it in its messages."""
        return f"{self.host}:{self.host_port}"

    def __str__(self) -> str:
        fields = [str(self.listen_port), _bracket(self.host), str(self.host_port)]
        if self.bind_address is not None:
            fields.insert(0, _bracket(self.bind_address))
        return ":".join(fields)


def parse_remote_forward(spec: str) -> RemoteForward:
    """
    Parse C{[bind_address:]port:host:hostport}; IPv6 addresses go in square brackets.

    @raise BadForwardSpec: naming the problem, for anything else (including the Unix-socket and
        dynamic forms OpenSSH also accepts, which rfwd does not implement).
    """
    fields = _split_fields(spec)
    if len(fields) == 3:
        bind: str | None = None
        listen, host, host_port = fields
    elif len(fields) == 4:
        bind, listen, host, host_port = fields
    elif len(fields) in (1, 2):
        raise BadForwardSpec(
            spec,
            "expected [bind_address:]port:host:hostport "
            "(dynamic and Unix-socket forwards are not supported)",
        )
    else:
        raise BadForwardSpec(spec, "too many ':'-separated fields (bracket IPv6 addresses)")
    if "/" in host or "/" in listen:
        raise BadForwardSpec(spec, "Unix-socket forwards are not supported")
    try:
        return RemoteForward(
            listen_port=_port(spec, listen, "listen port"),
            host=host,
            host_port=_port(spec, host_port, "destination port"),
            bind_address=bind,
        )
    except BadForwardSpec as e:
        raise BadForwardSpec(spec, e.reason) from None


def _split_fields(spec: str) -> list[str]:
    """Split on ':' outside square brackets, dropping the brackets, as OpenSSH does."""
    fields: list[str] = []
    rest = spec
    while True:
        if rest.startswith("["):
            end = rest.find("]")
            if end < 0:
                raise BadForwardSpec(spec, "unmatched '['")
            field, rest = rest[1:end], rest[end + 1 :]
            if rest and not rest.startswith(":"):
                raise BadForwardSpec(spec, "expected ':' after ']'")
            fields.append(field)
            if not rest:
                return fields
            rest = rest[1:]
        else:
            field, sep, rest = rest.partition(":")
            fields.append(field)
            if not sep:
                return fields


def _port(spec: str, text: str, what: str) -> int:
    if text.isascii() and text.isdigit():
        port = int(text)
        if port > 65535:
            raise BadForwardSpec(spec, f"{what} {text} is out of range")
        return port
    if not text:
        raise BadForwardSpec(spec, f"the {what} is empty")
    try:
        return socket.getservbyname(text, "tcp")
    except (OSError, ValueError):
        raise BadForwardSpec(spec, f"{what} '{text}' is not a number or a known service") from None


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host
