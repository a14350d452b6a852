"""
OpenSSH C{authorized_keys} files: parsing lines with their options (pure: the key itself stays
bytes here; L{twisted_rfwd.server.authorized_keys} turns it into a key), and the options that
matter to a forwarding server (C{restrict}, C{no-port-forwarding}, C{port-forwarding},
C{permitlisten}, C{from}, C{expiry-time}).

Options that restrict things this server never offers (C{no-pty}, C{command}, ...) are accepted
and have nothing to restrict.  An unknown option makes the whole line unusable, as in sshd.

A C{cert-authority} line names a key that signs user certificates: it authorizes certificates
signed by that key (for the user name, or for the names its C{principals=} lists), and never
that key itself as a plain key, as in sshd.  The checks a certificate needs are in
L{twisted_rfwd.server.certificates}.

sshd's C{AuthorizedPrincipalsFile} lines (C{[options] principal}) are parsed here too.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone

from twisted_rfwd.errors import ConfigError, MalformedPacket
from twisted_rfwd.protocol.policy import ListenPermission, parse_listen_permission
from twisted_rfwd.protocol.wire import Reader

__all__ = [
    "AuthorizedLine",
    "KeyOptions",
    "PrincipalLine",
    "matches_from",
    "parse_authorized_lines",
    "parse_principals_lines",
]

_KEY_TYPES = {
    "ssh-ed25519",
    "ssh-rsa",
    "ssh-dss",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
}

# Options that only restrict features this server does not have, or set things it ignores.
_IRRELEVANT_FLAGS = {
    "agent-forwarding",
    "no-agent-forwarding",
    "no-pty",
    "pty",
    "no-user-rc",
    "user-rc",
    "no-x11-forwarding",
    "x11-forwarding",
}
_IRRELEVANT_VALUES = {"command", "environment", "permitopen", "tunnel"}


@dataclass(frozen=True)
class KeyOptions:
    """What one authorized key is allowed, as far as forwarding goes."""

    port_forwarding: bool = True
    permit_listen: tuple[ListenPermission, ...] | None = None
    from_patterns: tuple[str, ...] | None = None
    expiry: datetime | None = None
    # The key signs certificates (C{cert-authority}); it never matches a plain key, as in sshd.
    cert_authority: bool = False
    # C{principals=}: the names a certificate must hold one of (None: the user's name).
    principals: tuple[str, ...] | None = None
    # Security keys only (twisted_rfwd.protocol.sk): C{no-touch-required} lets a signature made
    # without touching the token log in; C{verify-required} demands a PIN or biometric check.
    touch_required: bool = True
    verify_required: bool = False

    def allows_listen(self, address: str, port: int) -> bool:
        if not self.port_forwarding:
            return False
        if self.permit_listen is None:
            return True
        return any(p.allows(address, port) for p in self.permit_listen)


@dataclass(frozen=True)
class AuthorizedLine:
    """One usable line: the key's type and wire blob, its options, and where it was."""

    key_type: str
    blob: bytes
    options: KeyOptions
    source: str
    number: int

    def matches(self, blob: bytes) -> bool:
        """Whether a plain public key (its blob) is this line's key; never for a CA's line."""
        return not self.options.cert_authority and self.blob == blob


def parse_authorized_lines(
    text: bytes, path: str
) -> tuple[list[AuthorizedLine], list[tuple[int, str]]]:
    """
    Parse a whole file.  Returns the usable lines and, for every line that is not usable, its
    number and a warning of the form C{path line N: reason}.
    """
    keys: list[AuthorizedLine] = []
    warnings: list[tuple[int, str]] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(b"#"):
            continue
        where = f"{path} line {number}"
        try:
            entry = _parse_line(line.decode("utf-8"), where, number)
        except (ConfigError, UnicodeDecodeError, ValueError) as e:
            warnings.append((number, f"{where}: {e}"))
            continue
        keys.append(entry)
    return keys, warnings


@dataclass(frozen=True)
class PrincipalLine:
    """One C{AuthorizedPrincipalsFile} line: a principal name and the options it carries."""

    name: str
    options: KeyOptions
    source: str


def parse_principals_lines(text: bytes, path: str) -> tuple[list[PrincipalLine], list[str]]:
    """
    Parse an C{AuthorizedPrincipalsFile}: one principal a line, after optional
    authorized_keys options (sshd splits them at the last space).  Returns the usable lines
    and a warning C{path line N: reason} for each line that is not.
    """
    found: list[PrincipalLine] = []
    warnings: list[str] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(b"#"):
            continue
        where = f"{path} line {number}"
        try:
            decoded = line.decode("utf-8")
            fields = decoded.rsplit(None, 1)
            options = _parse_options(fields[0]) if len(fields) == 2 else KeyOptions()
        except (ConfigError, UnicodeDecodeError) as e:
            warnings.append(f"{where}: {e}")
            continue
        found.append(PrincipalLine(fields[-1], options, where))
    return found, warnings


def _parse_line(line: str, where: str, number: int) -> AuthorizedLine:
    first = line.split(None, 1)[0]
    options = KeyOptions()
    if first not in _KEY_TYPES and not first.endswith("-cert-v01@openssh.com"):
        option_text, line = _split_options(line)
        options = _parse_options(option_text)
    fields = line.split()
    if len(fields) < 2:
        raise ConfigError("expected 'keytype base64-key [comment]'")
    try:
        blob = base64.b64decode(fields[1].encode("ascii"), validate=True)
        stated = Reader(blob, "key").string()
    except (binascii.Error, ValueError, UnicodeEncodeError, MalformedPacket) as e:
        raise ConfigError(f"unusable key: {e}") from None
    if stated != fields[0].encode("ascii"):
        raise ConfigError(f"unusable key: the {fields[0]} key data is corrupt")
    return AuthorizedLine(fields[0], blob, options, where, number)


def _split_options(line: str) -> tuple[str, str]:
    """Split the options field (which may hold quoted spaces) from the rest."""
    quoted = False
    i = 0
    while i < len(line):
        c = line[i]
        if c == "\\" and quoted:
            i += 2
            continue
        if c == '"':
            quoted = not quoted
        elif c in " \t" and not quoted:
            return line[:i], line[i:].strip()
        i += 1
    raise ConfigError("options without a key after them" if not quoted else "unterminated quote")


def _iter_options(text: str) -> Iterator[tuple[str, str | None]]:
    i = 0
    while i < len(text):
        end = i
        while end < len(text) and text[end] not in ',="':
            end += 1
        name = text[i:end].lower()
        if end < len(text) and text[end] == "=":
            if end + 1 >= len(text) or text[end + 1] != '"':
                raise ConfigError(f"option {name} needs a double-quoted value")
            j = end + 2
            value = []
            while j < len(text) and text[j] != '"':
                if text[j] == "\\" and j + 1 < len(text) and text[j + 1] == '"':
                    j += 1
                value.append(text[j])
                j += 1
            if j >= len(text):
                raise ConfigError(f"unterminated value for option {name}")
            yield name, "".join(value)
            end = j + 1
        else:
            yield name, None
        if end < len(text) and text[end] != ",":
            raise ConfigError(f"bad option syntax near '{text[end:]}'")
        i = end + 1


def _parse_options(text: str) -> KeyOptions:
    port_forwarding = True
    restricted = False
    explicit_forwarding = False
    permit: list[ListenPermission] = []
    from_patterns: tuple[str, ...] | None = None
    expiry: datetime | None = None
    cert_authority = False
    principals: tuple[str, ...] | None = None
    touch_required = True
    verify_required = False
    for name, value in _iter_options(text):
        if name == "restrict" and value is None:
            restricted = True
        elif name == "cert-authority" and value is None:
            cert_authority = True
        elif name in ("touch-required", "no-touch-required") and value is None:
            touch_required = name == "touch-required"
        elif name in ("verify-required", "no-verify-required") and value is None:
            verify_required = name == "verify-required"
        elif name == "no-port-forwarding" and value is None:
            port_forwarding = False
        elif name == "port-forwarding" and value is None:
            explicit_forwarding = True
        elif name == "permitlisten" and value is not None:
            permit.append(parse_listen_permission(value))
        elif name == "from" and value is not None:
            from_patterns = tuple(p for p in value.split(",") if p)
        elif name == "expiry-time" and value is not None:
            expiry = _parse_expiry(value)
        elif name == "principals" and value is not None:
            principals = tuple(p for p in value.split(",") if p)
        elif (name in _IRRELEVANT_FLAGS and value is None) or (
            name in _IRRELEVANT_VALUES and value is not None
        ):
            continue
        else:
            raise ConfigError(f"unsupported option '{name}'")
    if restricted and not explicit_forwarding:
        port_forwarding = False
    return KeyOptions(
        port_forwarding=port_forwarding,
        permit_listen=tuple(permit) if permit else None,
        from_patterns=from_patterns,
        expiry=expiry,
        cert_authority=cert_authority,
        principals=principals,
        touch_required=touch_required,
        verify_required=verify_required,
    )


def _parse_expiry(text: str) -> datetime:
    """C{YYYYMMDD[HHMM[SS]][Z]}: local time unless it ends in Z, as sshd reads it."""
    utc = text.endswith(("Z", "z"))
    digits = text[:-1] if utc else text
    formats = {8: "%Y%m%d", 12: "%Y%m%d%H%M", 14: "%Y%m%d%H%M%S"}
    if not digits.isdigit() or len(digits) not in formats:
        raise ConfigError(f"bad expiry-time '{text}'")
    moment = datetime.strptime(digits, formats[len(digits)])
    if utc:
        return moment.replace(tzinfo=timezone.utc)
    return moment.astimezone()


def matches_from(patterns: tuple[str, ...], address: str) -> bool:
    """
    sshd's C{from=} list against the client's numeric address: wildcards (C{*}, C{?}),
    CIDR blocks, and C{!} to deny.  A matching negation wins.  An IPv4 client seen through a
    dual-stack socket (C{::ffff:a.b.c.d}) is matched as the IPv4 address it is.
    """
    if address.lower().startswith("::ffff:") and "." in address:
        address = address[7:]
    allowed = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        body = pattern[1:] if negate else pattern
        if _address_matches(body, address):
            if negate:
                return False
            allowed = True
    return allowed


def _address_matches(pattern: str, address: str) -> bool:
    if "/" in pattern:
        try:
            return ipaddress.ip_address(address) in ipaddress.ip_network(pattern, strict=False)
        except ValueError:
            return False
    return fnmatch.fnmatchcase(address.lower(), pattern.lower())
