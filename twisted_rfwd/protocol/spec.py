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

    OpenSSH's other remote forwards: C{listen_path} is a Unix socket the server listens on
    instead of a port (C{-R /remote.sock:...}); C{host_path} a Unix socket on the client that
    connections go to instead of C{host:host_port} (C{-R ...:/local.sock}); C{dynamic} makes the
    client a SOCKS proxy for connections arriving on the port (C{-R [bind:]port}), with no
    fixed destination.
    """

    listen_port: int
    host: str
    host_port: int
    bind_address: str | None = None
    listen_path: str | None = None
    host_path: str | None = None
    dynamic: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.listen_port <= 65535:
            raise BadForwardSpec(str(self), f"listen port {self.listen_port} is out of range")
        if self.dynamic or self.host_path is not None:
            if self.host or self.host_port:
                raise BadForwardSpec(str(self), "a destination with no host and port")
            return
        if not 1 <= self.host_port <= 65535:
            raise BadForwardSpec(str(self), f"port {self.host_port} is out of range")
        if not self.host:
            raise BadForwardSpec(str(self), "the destination host is empty")

    @property
    def is_tcp(self) -> bool:
        """A port forwarded to host:port (the only kind before Unix sockets and SOCKS)."""
        return self.listen_path is None and self.host_path is None and not self.dynamic

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
        """C{host:hostport} as OpenSSH prints it in its messages (or the socket, or SOCKS)."""
        if self.dynamic:
            return "SOCKS"
        if self.host_path is not None:
            return self.host_path
        return f"{self.host}:{self.host_port}"

    def __str__(self) -> str:
        if self.listen_path is not None:
            fields = [self.listen_path]
        else:
            fields = [str(self.listen_port)]
            if self.bind_address is not None:
                fields.insert(0, _bracket(self.bind_address))
        if self.host_path is not None:
            fields.append(self.host_path)
        elif not self.dynamic:
            fields += [_bracket(self.host), str(self.host_port)]
        return ":".join(fields)


def parse_remote_forward(spec: str) -> RemoteForward:
    """
    Parse OpenSSH's C{-R} forms (a field with a C{/} is a Unix socket path; IPv6 addresses go
    in square brackets):

      - C{[bind_address:]port:host:hostport}
      - C{[bind_address:]port:local_socket}
      - C{remote_socket:host:hostport}, C{remote_socket:local_socket}
      - C{[bind_address:]port}: dynamic (the client is a SOCKS proxy)

    @raise BadForwardSpec: naming the problem.
    """
    fields = _split_fields(spec)
    if len(fields) > 4:
        raise BadForwardSpec(spec, "too many ':'-separated fields (bracket IPv6 addresses)")
    listen_path = fields[0] if "/" in fields[0] else None
    rest = fields[1:] if listen_path is not None else fields
    bind: str | None = None
    host_path: str | None = None
    host, host_port, listen, dynamic = "", "", "", False
    if listen_path is not None:
        if len(rest) == 2 and "/" not in rest[0]:
            host, host_port = rest
        elif len(rest) == 1 and "/" in rest[0]:
            host_path = rest[0]
        else:
            raise BadForwardSpec(spec, "expected remote_socket:host:hostport or :local_socket")
    elif len(rest) == 4:
        bind, listen, host, host_port = rest
    elif len(rest) == 3 and "/" in rest[2]:
        bind, listen, host_path = rest
    elif len(rest) == 3:
        listen, host, host_port = rest
    elif len(rest) == 2 and "/" in rest[1]:
        listen, host_path = rest
    elif len(rest) == 2:
        bind, listen = rest
        dynamic = True
    else:
        listen = rest[0]
        dynamic = True
    if "/" in host or "/" in listen or (bind is not None and "/" in bind):
        raise BadForwardSpec(spec, "a Unix socket path is not allowed there")
    tcp_destination = host_path is None and not dynamic
    try:
        return RemoteForward(
            listen_port=0 if listen_path is not None else _port(spec, listen, "listen port"),
            host=host,
            host_port=_port(spec, host_port, "destination port") if tcp_destination else 0,
            bind_address=bind,
            listen_path=listen_path,
            host_path=host_path,
            dynamic=dynamic,
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
