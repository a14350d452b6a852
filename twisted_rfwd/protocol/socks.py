"""
The SOCKS server side of remote dynamic forwarding (C{-R [bind:]port}), without I/O: SOCKS4,
SOCKS4A (RFC-less, the NEC documents) and SOCKS5 (RFC 1928), CONNECT only, no authentication;
and C{PermitRemoteOpen}, which says where such connections may go.

Rules, as OpenSSH's C{channels.c} applies them to a remote dynamic forward:

  - The first byte picks the version: 4 or 5; anything else is closed without a reply.
  - SOCKS5: the client's method list must offer "no authentication" (0), else the answer is
    "no acceptable methods" (0xFF) and the connection ends.  The request must be CONNECT (else
    reply 7), with an IPv4, IPv6 or host name address (else reply 8).
  - SOCKS4: the command must be CONNECT (else 0x5B); the user id is read and ignored; an address
    of C{0.0.0.x} with x non-zero is SOCKS4A: a host name follows the user id.
  - Every field is bounded (a user id or host name of at most 255 bytes), so a client cannot
    make us buffer more than L{MAX_REQUEST} bytes; what follows the request is the client's
    first application data, kept for the destination (L{SocksParser.leftover}).
  - C{PermitRemoteOpen} (ssh_config(5)): C{any} (the default), C{none}, or C{host:port} entries
    where C{*} stands for any host or any port; there is no other pattern matching, and names are
    compared as given, with no address lookup.

Data may arrive in any pieces: L{SocksParser.receive} takes each and says what to answer.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

from twisted_rfwd.errors import ConfigError

__all__ = [
    "MAX_NAME",
    "MAX_REQUEST",
    "SOCKS4_GRANTED",
    "SOCKS4_REJECTED",
    "SOCKS5_CONNECTION_REFUSED",
    "SOCKS5_GENERAL_FAILURE",
    "SOCKS5_HOST_UNREACHABLE",
    "SOCKS5_NETWORK_UNREACHABLE",
    "SOCKS5_NOT_ALLOWED",
    "SOCKS5_SUCCEEDED",
    "AddressKind",
    "RemoteOpenPolicy",
    "SocksError",
    "SocksParser",
    "SocksRequest",
    "failure_reply",
    "success_reply",
]

MAX_NAME = 255
"""The longest SOCKS4 user id or SOCKS4A host name we read (SOCKS5's is 255 by its length byte)."""

# SOCKS4: 8 fixed bytes, a user id and a host name, each with its NUL.  SOCKS5: a greeting of
# 2 + 255 bytes, then 4 + 1 + 255 + 2.
MAX_REQUEST = max(8 + 2 * (MAX_NAME + 1), 257 + 262)
"""The most bytes a request can take before it is complete or refused."""

SOCKS4_GRANTED = 0x5A
SOCKS4_REJECTED = 0x5B

SOCKS5_SUCCEEDED = 0x00
SOCKS5_GENERAL_FAILURE = 0x01
SOCKS5_NOT_ALLOWED = 0x02
SOCKS5_NETWORK_UNREACHABLE = 0x03
SOCKS5_HOST_UNREACHABLE = 0x04
SOCKS5_CONNECTION_REFUSED = 0x05
SOCKS5_COMMAND_NOT_SUPPORTED = 0x07
SOCKS5_ADDRESS_TYPE_NOT_SUPPORTED = 0x08

_CONNECT = 1
_NO_AUTHENTICATION = 0
_NO_ACCEPTABLE_METHODS = 0xFF
_ATYP_IPV4, _ATYP_NAME, _ATYP_IPV6 = 1, 3, 4


class AddressKind(Enum):
    """How the client named the destination."""

    IPV4 = "ipv4"
    IPV6 = "ipv6"
    NAME = "name"


@dataclass(frozen=True)
class SocksRequest:
    """A complete CONNECT request: C{host} is an address literal or the name as sent."""

    version: int
    host: str
    port: int
    kind: AddressKind


class SocksError(Exception):
    """
    The client broke the SOCKS protocol or asked for what we do not do: C{reply} is what to send
    it before closing (empty when there is nothing to say, as for an unknown version).
    """

    def __init__(self, reason: str, reply: bytes = b"") -> None:
        super().__init__(reason)
        self.reason = reason
        self.reply = reply


def success_reply(version: int, bound: tuple[str, int] | None = None) -> bytes:
    """
    The reply granting a request; SOCKS5 carries C{bound}, the address our connection to the
    destination has (zeros when unknown), as RFC 1928 asks; SOCKS4 clients ignore it.
    """
    if version == 4:
        return struct.pack("!BBH4s", 0, SOCKS4_GRANTED, 0, b"\0" * 4)
    return _socks5_reply(SOCKS5_SUCCEEDED, bound)


def failure_reply(version: int, code: int) -> bytes:
    """The reply refusing a request: SOCKS5 with C{code}, SOCKS4 always with 0x5B."""
    if version == 4:
        return struct.pack("!BBH4s", 0, SOCKS4_REJECTED, 0, b"\0" * 4)
    return _socks5_reply(code, None)


def _socks5_reply(code: int, bound: tuple[str, int] | None) -> bytes:
    host, port = bound or ("0.0.0.0", 0)
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        address = ipaddress.IPv4Address(0)
    atyp = _ATYP_IPV4 if address.version == 4 else _ATYP_IPV6
    return struct.pack("!BBBB", 5, code, 0, atyp) + address.packed + struct.pack("!H", port)


class _Phase(Enum):
    VERSION = "version"
    SOCKS4 = "socks4"
    SOCKS5_METHODS = "socks5-methods"
    SOCKS5_REQUEST = "socks5-request"
    DONE = "done"


class SocksParser:
    """
    Reads one client's SOCKS handshake, in whatever pieces it arrives.

    L{receive} returns the bytes to send back now (SOCKS5's method choice) and the request once
    it is complete; it raises L{SocksError} when the handshake cannot go on.  After the request,
    L{leftover} holds what the client sent beyond it.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._phase = _Phase.VERSION
        self.version = 0
        self.leftover = b""
        self._answered = b""

    def receive(self, data: bytes) -> tuple[bytes, SocksRequest | None]:
        """Take more bytes from the client; see the class docstring."""
        if self._phase is _Phase.DONE:
            raise SocksError("data after the SOCKS request was taken")
        self._buffer += data
        self._answered = b""
        try:
            request = self._run()
        except SocksError as e:
            # What was already due (SOCKS5's method choice) still goes first.
            e.reply = self._answered + e.reply
            raise
        return self._answered, request

    def _run(self) -> SocksRequest | None:
        while True:
            phase = self._phase
            if phase is _Phase.VERSION:
                if not self._buffer:
                    return None
                version = self._buffer[0]
                if version not in (4, 5):
                    raise SocksError(f"not a SOCKS4 or SOCKS5 request (first byte {version})")
                self.version = version
                self._phase = _Phase.SOCKS4 if version == 4 else _Phase.SOCKS5_METHODS
            elif phase is _Phase.SOCKS4:
                return self._socks4()
            elif phase is _Phase.SOCKS5_METHODS:
                chosen = self._socks5_methods()
                if chosen is None:
                    return None
                self._answered += chosen
            else:
                return self._socks5_request()

    def _finish(self, used: int, request: SocksRequest) -> SocksRequest:
        self.leftover = bytes(self._buffer[used:])
        self._buffer.clear()
        self._phase = _Phase.DONE
        return request

    def _socks4(self) -> SocksRequest | None:
        buffer = self._buffer
        if len(buffer) < 8:
            return None
        _, command, port = struct.unpack_from("!BBH", buffer)
        raw = bytes(buffer[4:8])
        user_end = _nul(buffer, 8, "user id")
        if user_end is None:
            return None
        if command != _CONNECT:
            raise SocksError(
                f"SOCKS4 command {command} is not supported (only CONNECT)",
                failure_reply(4, SOCKS4_REJECTED),
            )
        if raw[:3] == b"\0\0\0" and raw[3] != 0:
            name_end = _nul(buffer, user_end + 1, "host name")
            if name_end is None:
                return None
            name = _host_name(bytes(buffer[user_end + 1 : name_end]), 4)
            return self._finish(name_end + 1, SocksRequest(4, name, port, AddressKind.NAME))
        host = str(ipaddress.IPv4Address(raw))
        return self._finish(user_end + 1, SocksRequest(4, host, port, AddressKind.IPV4))

    def _socks5_methods(self) -> bytes | None:
        buffer = self._buffer
        if len(buffer) < 2 or len(buffer) < 2 + buffer[1]:
            return None
        count = buffer[1]
        methods = bytes(buffer[2 : 2 + count])
        del buffer[: 2 + count]
        if _NO_AUTHENTICATION not in methods:
            raise SocksError(
                "the SOCKS5 client offers no method without authentication",
                bytes([5, _NO_ACCEPTABLE_METHODS]),
            )
        self._phase = _Phase.SOCKS5_REQUEST
        return bytes([5, _NO_AUTHENTICATION])

    def _socks5_request(self) -> SocksRequest | None:
        buffer = self._buffer
        if len(buffer) < 5:
            return None
        version, command, _, atyp = buffer[:4]
        if version != 5:
            raise SocksError(
                f"SOCKS5 request with version {version}",
                failure_reply(5, SOCKS5_GENERAL_FAILURE),
            )
        if command != _CONNECT:
            raise SocksError(
                f"SOCKS5 command {command} is not supported (only CONNECT)",
                failure_reply(5, SOCKS5_COMMAND_NOT_SUPPORTED),
            )
        if atyp == _ATYP_IPV4:
            start, size, kind = 4, 4, AddressKind.IPV4
        elif atyp == _ATYP_IPV6:
            start, size, kind = 4, 16, AddressKind.IPV6
        elif atyp == _ATYP_NAME:
            start, size, kind = 5, buffer[4], AddressKind.NAME
        else:
            raise SocksError(
                f"SOCKS5 address type {atyp} is not supported",
                failure_reply(5, SOCKS5_ADDRESS_TYPE_NOT_SUPPORTED),
            )
        end = start + size + 2
        if len(buffer) < end:
            return None
        raw = bytes(buffer[start : start + size])
        (port,) = struct.unpack_from("!H", buffer, start + size)
        if kind is AddressKind.IPV4:
            host = str(ipaddress.IPv4Address(raw))
        elif kind is AddressKind.IPV6:
            host = str(ipaddress.IPv6Address(raw))
        else:
            host = _host_name(raw, 5)
        return self._finish(end, SocksRequest(5, host, port, kind))


def _nul(buffer: bytearray, start: int, what: str) -> int | None:
    """Where the NUL ending a SOCKS4 field is; C{None} if not yet here; refused when too long."""
    end = buffer.find(b"\0", start, start + MAX_NAME + 1)
    if end >= 0:
        return end
    if len(buffer) > start + MAX_NAME:
        raise SocksError(
            f"SOCKS4 {what} longer than {MAX_NAME} bytes", failure_reply(4, SOCKS4_REJECTED)
        )
    return None


def _host_name(raw: bytes, version: int) -> str:
    """A host name as sent: printable ASCII with no spaces, or the request is refused."""
    if raw and all(0x21 <= b <= 0x7E for b in raw):
        return raw.decode("ascii")
    code = SOCKS4_REJECTED if version == 4 else SOCKS5_GENERAL_FAILURE
    raise SocksError(
        "the SOCKS host name is empty or not printable ASCII", failure_reply(version, code)
    )


# -- PermitRemoteOpen -------------------------------------------------------------------------


@dataclass(frozen=True)
class RemoteOpenPolicy:
    """
    C{PermitRemoteOpen}: C{rules} is C{None} for C{any}; otherwise (host, port) pairs where
    C{"*"} and C{None} mean any host and any port (an empty tuple is C{none}); C{words} are the
    arguments as given, which C{-G} prints.
    """

    rules: tuple[tuple[str, int | None], ...] | None = None
    words: tuple[str, ...] = ("any",)

    @classmethod
    def parse(cls, words: Sequence[str]) -> RemoteOpenPolicy:
        """
        ssh_config(5)'s arguments: C{any} or C{none} alone, or C{host:port} entries (IPv6
        addresses in brackets); raises L{ConfigError} naming the bad entry.
        """
        lowered = [w.lower() for w in words]
        if not words or lowered == ["any"]:
            return cls(None, ("any",))
        if lowered == ["none"]:
            return cls((), ("none",))
        rules: list[tuple[str, int | None]] = []
        for word in words:
            if word.lower() in ("any", "none"):
                raise ConfigError(f'PermitRemoteOpen "{word}" argument must appear alone')
            rules.append(_permit_entry(word))
        return cls(tuple(rules), tuple(words))

    def permits(self, host: str, port: int) -> bool:
        """Whether a SOCKS client may reach C{host:port}; names are compared exactly."""
        if self.rules is None:
            return True
        for allowed_host, allowed_port in self.rules:
            if allowed_port is not None and allowed_port != port:
                continue
            if allowed_host in ("*", host):
                return True
        return False


def _permit_entry(word: str) -> tuple[str, int | None]:
    if word.startswith("["):
        host, bracket, rest = word[1:].partition("]")
        if not bracket or not rest.startswith(":"):
            raise ConfigError(f"PermitRemoteOpen: '{word}' is not host:port")
        port_text = rest[1:]
    else:
        host, colon, port_text = word.rpartition(":")
        if not colon or ":" in host:
            raise ConfigError(
                f"PermitRemoteOpen: '{word}' is not host:port (bracket IPv6 addresses)"
            )
    if not host:
        raise ConfigError(f"PermitRemoteOpen: missing host in '{word}'")
    if port_text == "*":
        return host, None
    if not (port_text.isascii() and port_text.isdigit()) or not 1 <= int(port_text) <= 65535:
        raise ConfigError(f"PermitRemoteOpen: bad port number in '{word}'")
    return host, int(port_text)
