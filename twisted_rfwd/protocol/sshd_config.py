"""
rfwd-server's configuration file: sshd_config(5) syntax, parsed and evaluated without Twisted.

The rules, as OpenSSH 9.2's C{servconf.c} has them unless said otherwise:

  - A line is C{Keyword arguments} or C{Keyword=arguments}.  Keywords are case-insensitive;
    C{#} starts a comment at the start of a line or of an argument; an argument may be quoted
    with C{"} or C{'}; a backslash escapes a quote, a backslash, or (outside quotes) a space.
  - The first value obtained for a keyword is used, except that C{Port}, C{ListenAddress},
    C{HostKey}, C{AllowUsers}, C{DenyUsers}, C{AllowGroups} and C{DenyGroups} add up over every
    line; C{AuthorizedKeysFile} and C{PermitListen} take all their values from their first line.
  - C{Include FILE|GLOB ...} reads the matching files in place, in sorted order.  A relative
    path is relative to the directory of the file that includes it (sshd: to C{/etc/ssh}), so a
    configuration directory can be moved whole.  A pattern that matches nothing is not an
    error.  Included files share the includer's C{Match} block; a C{Match} inside an included
    file ends at that file's end.  At most 16 levels deep.
  - C{Match criterion patterns ...} applies the lines after it, until the next C{Match} (or the
    end of its file), to connections that meet every criterion: C{User}, C{Group} (the user's
    system groups), C{Host} (the client's address: rfwd does no DNS), C{Address},
    C{LocalAddress} (wildcards and CIDR blocks), C{LocalPort}, or C{All} alone.  A pattern list
    is comma-separated; C{!} negates one, and a negated match fails the criterion.  Only the
    keywords sshd allows in a Match block may appear in one.  Values set by matching blocks
    replace the global ones (the first matching value wins; the access lists add up over the
    matching blocks).
  - A keyword sshd has but rfwd-server does not act on is a warning, once per keyword.  Any
    other keyword, a bad value or extra arguments: a L{ConfigError} C{FILE line N: reason}.

Values are parsed into what L{twisted_rfwd.server.config.ServerConfig} holds, keyed by its field
names; the few settings it does not hold (ports, listen addresses, host key files, the log
level, two algorithm lists) have keys of their own (L{EXTRA_KEYS}).
"""

from __future__ import annotations

import ipaddress
import posixpath
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from twisted_rfwd.errors import ConfigError, ConfigFileError
from twisted_rfwd.protocol.algorithms import (
    CIPHERS,
    KEY_EXCHANGES,
    MACS,
    PUBLIC_KEY_ALGORITHMS,
    choose,
)
from twisted_rfwd.protocol.certificates import USER_CERTIFICATE_ALGORITHMS
from twisted_rfwd.protocol.config_words import split_words
from twisted_rfwd.protocol.policy import GatewayPorts, ListenPolicy, is_ip_literal
from twisted_rfwd.protocol.sk import SK_ALGORITHMS
from twisted_rfwd.protocol.units import parse_duration, parse_rekey_limit

__all__ = [
    "EXTRA_KEYS",
    "KEYWORDS",
    "LOG_LEVELS",
    "SSHD_ONLY_KEYWORDS",
    "ConfigFileError",
    "Connection",
    "Files",
    "Keyword",
    "ListenAddress",
    "Match",
    "Setting",
    "SshdConfig",
    "effective",
    "parse_config",
    "parse_test_spec",
]

MAX_INCLUDE_DEPTH = 16

# sshd's log levels, as -T prints them.
LOG_LEVELS = ("QUIET", "FATAL", "ERROR", "INFO", "VERBOSE", "DEBUG", "DEBUG1", "DEBUG2", "DEBUG3")

# The settings ServerConfig has no field for, handled by rfwd-server's command line instead.
EXTRA_KEYS = frozenset(
    {
        "ports",
        "listen_addresses",
        "host_key_files",
        "host_certificate_files",
        "log_level",
        "host_key_algorithms",
        "pubkey_accepted_algorithms",
    }
)


class Files(Protocol):
    """What the parser reads through: whole files, and glob patterns (sorted matches)."""

    def read_text(self, path: str) -> str: ...

    def glob(self, pattern: str) -> list[str]: ...


@dataclass(frozen=True)
class ListenAddress:
    """One C{ListenAddress}: an IP address, and a port of its own or C{None} (every C{Port})."""

    host: str
    port: int | None


@dataclass(frozen=True)
class Keyword:
    """
    A keyword rfwd-server acts on.

    @ivar name: sshd's spelling (rfwd's own for its own keywords).
    @ivar key: the L{ServerConfig} field (or L{EXTRA_KEYS} entry) its value sets.
    @ivar in_match: whether sshd allows it in a Match block.
    @ivar adds_up: every line adds to the value, instead of the first value winning.
    @ivar parse: the arguments to the value; raises L{ConfigError} with the reason.
    """

    name: str
    key: str
    in_match: bool
    parse: Callable[[str, list[str]], object]
    adds_up: bool = False


# --- values -----------------------------------------------------------------------------------


def _one(name: str, args: list[str]) -> str:
    if len(args) != 1:
        raise ConfigError(f"{name}: extra arguments at end of line")
    return args[0]


def _flag(name: str, args: list[str]) -> bool:
    value = _one(name, args).lower()
    if value not in ("yes", "no"):
        raise ConfigError(f"{name} must be yes or no, not '{args[0]}'")
    return value == "yes"


def _whole(name: str, text: str, least: int) -> int:
    if not (text.isascii() and text.isdigit()) or int(text) < least:
        kind = "a positive number" if least > 0 else "a number (0 or more)"
        raise ConfigError(f"{name} must be {kind}, not '{text}'")
    return int(text)


def _count(name: str, args: list[str]) -> int:
    return _whole(name, _one(name, args), 0)


def _positive(name: str, args: list[str]) -> int:
    return _whole(name, _one(name, args), 1)


def _time(name: str, args: list[str]) -> float:
    return parse_duration(_one(name, args), name)


def _port(name: str, args: list[str]) -> list[int]:
    text = _one(name, args)
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= 65535:
        raise ConfigError(f"{name}: bad port number '{text}'")
    return [int(text)]


def _listen_address(name: str, args: list[str]) -> list[ListenAddress]:
    if len(args) > 1:
        raise ConfigError(f"{name}: rdomain is not supported; give an address and a port only")
    text = args[0]
    port_text: str | None = None
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ConfigError(f"{name}: bad address '{text}'")
        port_text = rest[1:] if rest else None
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:
        host = text
    if not is_ip_literal(host):
        raise ConfigError(
            f"{name} must be an IP address (rfwd-server does not resolve names): '{host}'"
        )
    port = _port(name, [port_text])[0] if port_text is not None else None
    return [ListenAddress(host, port)]


def _path(name: str, args: list[str]) -> str:
    return _one(name, args)


def _path_or_none(name: str, args: list[str]) -> str | None:
    value = _one(name, args)
    return None if value.lower() == "none" else value


def _patterns(name: str, args: list[str]) -> list[str]:
    for pattern in args:
        if not pattern:
            raise ConfigError(f"{name}: empty pattern")
    return list(args)


def _authorized_keys(name: str, args: list[str]) -> str:
    """
    The first file (rfwd reads one; the reader warns about the others): sshd's relative paths
    are relative to the user's home, and C{none} reads nothing.
    """
    first = args[0]
    if first.lower() == "none":
        return "none"
    if first.startswith(("/", "%", "~")):
        return first
    return f"%h/{first}"


def _tcp_forwarding(name: str, args: list[str]) -> bool:
    value = _one(name, args).lower()
    if value not in ("yes", "all", "remote", "no", "local"):
        raise ConfigError(f"{name} must be yes, all, remote, local or no, not '{args[0]}'")
    # rfwd-server does remote forwarding only: "local" forbids everything it does.
    return value in ("yes", "all", "remote")


def _stream_local_bind_mask(name: str, args: list[str]) -> int:
    """An octal umask of at most 0777, as sshd reads it."""
    text = _one(name, args)
    if not text or any(c not in "01234567" for c in text) or int(text, 8) > 0o777:
        raise ConfigError(f"{name}: bad mask '{text}' (an octal number up to 0777)")
    return int(text, 8)


def _gateway_ports(name: str, args: list[str]) -> GatewayPorts:
    return GatewayPorts.parse(_one(name, args))


def _permit_listen(name: str, args: list[str]) -> ListenPolicy:
    if args[0] in ("any", "none") and len(args) > 1:
        raise ConfigError(f"{name}: '{args[0]}' must appear alone")
    return ListenPolicy.parse(args)


def _max_startups(name: str, args: list[str]) -> tuple[int, int, int]:
    text = _one(name, args)
    fields = text.split(":")
    if len(fields) not in (1, 3) or not all(f.isascii() and f.isdigit() for f in fields):
        raise ConfigError(f"{name}: '{text}' is not start:rate:full or a number")
    numbers = [int(f) for f in fields]
    start, rate, full = (numbers[0], 30, numbers[0]) if len(numbers) == 1 else numbers
    if start <= 0 or full <= 0 or start > full or not 1 <= rate <= 100:
        raise ConfigError(f"{name}: invalid '{text}' (start <= full, both positive; rate 1-100)")
    return (start, rate, full)


def _per_source(name: str, args: list[str]) -> int | None:
    text = _one(name, args)
    return None if text == "none" else _whole(name, text, 1)


def _rekey_limit(name: str, args: list[str]) -> tuple[int | None, float | None]:
    if len(args) > 2:
        raise ConfigError(f"{name}: extra arguments at end of line")
    return parse_rekey_limit(" ".join(args))


def _algorithms(default: Sequence[bytes]) -> Callable[[str, list[str]], list[bytes]]:
    def parse(name: str, args: list[str]) -> list[bytes]:
        return choose(name, _one(name, args), default)

    return parse


def _log_level(name: str, args: list[str]) -> str:
    value = _one(name, args).upper()
    if value not in LOG_LEVELS:
        raise ConfigError(f"{name}: unsupported log level '{args[0]}'")
    return value


_TABLE = [
    # sshd's keywords that rfwd-server acts on.
    Keyword("Port", "ports", False, _port, adds_up=True),
    Keyword("ListenAddress", "listen_addresses", False, _listen_address, adds_up=True),
    Keyword("HostKey", "host_key_files", False, lambda n, a: [_path(n, a)], adds_up=True),
    Keyword(
        "HostCertificate", "host_certificate_files", False, lambda n, a: [_path(n, a)], adds_up=True
    ),
    Keyword("AuthorizedKeysFile", "authorized_keys", True, _authorized_keys),
    Keyword("PubkeyAuthentication", "pubkey_authentication", True, _flag),
    Keyword("PasswordAuthentication", "password_authentication", True, _flag),
    Keyword("KbdInteractiveAuthentication", "kbd_interactive_authentication", True, _flag),
    Keyword("AllowUsers", "allow_users", True, _patterns, adds_up=True),
    Keyword("DenyUsers", "deny_users", True, _patterns, adds_up=True),
    Keyword("AllowGroups", "allow_groups", True, _patterns, adds_up=True),
    Keyword("DenyGroups", "deny_groups", True, _patterns, adds_up=True),
    Keyword("AllowTcpForwarding", "allow_tcp_forwarding", True, _tcp_forwarding),
    Keyword("GatewayPorts", "gateway_ports", True, _gateway_ports),
    Keyword("AllowStreamLocalForwarding", "allow_stream_local_forwarding", True, _tcp_forwarding),
    Keyword("StreamLocalBindMask", "stream_local_bind_mask", True, _stream_local_bind_mask),
    Keyword("StreamLocalBindUnlink", "stream_local_bind_unlink", True, _flag),
    Keyword("PermitListen", "permit_listen", True, _permit_listen),
    Keyword("ClientAliveInterval", "client_alive_interval", True, _time),
    Keyword("ClientAliveCountMax", "client_alive_count_max", True, _count),
    Keyword("LoginGraceTime", "login_grace_time", False, _time),
    Keyword("MaxAuthTries", "max_auth_tries", True, _positive),
    Keyword("MaxSessions", "max_sessions", True, _count),
    Keyword("MaxStartups", "max_startups", False, _max_startups),
    Keyword("PerSourceMaxStartups", "per_source_max_startups", False, _per_source),
    Keyword("RekeyLimit", "rekey_limit", True, _rekey_limit),
    Keyword("Ciphers", "ciphers", False, _algorithms(CIPHERS)),
    Keyword("MACs", "macs", False, _algorithms(MACS)),
    Keyword("KexAlgorithms", "kex_algorithms", False, _algorithms(KEY_EXCHANGES)),
    Keyword("HostKeyAlgorithms", "host_key_algorithms", False, _algorithms(PUBLIC_KEY_ALGORITHMS)),
    Keyword(
        "PubkeyAcceptedAlgorithms",
        "pubkey_accepted_algorithms",
        True,
        _algorithms([*USER_CERTIFICATE_ALGORITHMS, *PUBLIC_KEY_ALGORITHMS, *SK_ALGORITHMS]),
    ),
    Keyword("Banner", "banner", True, _path_or_none),
    Keyword("TrustedUserCAKeys", "trusted_user_ca_keys", True, _path_or_none),
    Keyword("RevokedKeys", "revoked_keys", True, _path_or_none),
    Keyword("AuthorizedPrincipalsFile", "authorized_principals_file", True, _path_or_none),
    Keyword("LogLevel", "log_level", True, _log_level),
    # rfwd-server's own.
    Keyword("Sessions", "sessions", True, _flag),
    Keyword("PasswordHashesFile", "password_hashes", True, _path_or_none),
    Keyword("MaxForwardsPerConnection", "max_forwards_per_connection", True, _positive),
    Keyword("MaxForwardsPerUser", "max_forwards_per_user", True, _positive),
    Keyword("MaxChannelsPerConnection", "max_channels_per_connection", True, _positive),
    Keyword("DrainTime", "drain_time", False, _time),
]

KEYWORDS: dict[str, Keyword] = {k.name.lower(): k for k in _TABLE}
# sshd's other spellings of the same keywords (servconf.c's aliases).
_ALIASES = {
    "challengeresponseauthentication": "kbdinteractiveauthentication",
    "skeyauthentication": "kbdinteractiveauthentication",
    "pubkeyacceptedkeytypes": "pubkeyacceptedalgorithms",
    "hostdsakey": "hostkey",
}
# RekeyLimit fills two ServerConfig fields.
_REKEY_FIELDS = ("rekey_bytes", "rekey_seconds")


# OpenSSH 9.2's other keywords (Debian's build included), and whether sshd allows each in a
# Match block: rfwd-server warns about them and goes on.
def _words(text: str) -> list[str]:
    return text.split()


SSHD_ONLY_KEYWORDS: dict[str, bool] = {
    **dict.fromkeys(
        _words(
            """usepam pamauthenticationviakbdint hostkeyagent pidfile modulifile serverkeybits
        keyregenerationinterval syslogfacility rhostsauthentication
        kerberosorlocalpasswd kerberosticketcleanup kerberosgetafstoken
        kerberostgtpassing afstokenpassing gssapicleanupcredentials gssapistrictacceptorcheck
        gssapikeyexchange gssapistorecredentialsonrekey gssapikexalgorithms checkmail
        addressfamily printmotd printlastlog ignoreuserknownhosts xauthlocation strictmodes
        permituserenvironment uselogin compression tcpkeepalive keepalive protocol subsystem
        persourcenetblocksize usedns verifyreversemapping reversemappingcheck
        useprivilegeseparation versionaddendum fingerprinthash
        securitykeyprovider debianbanner"""
        ),
        False,
    ),
    **dict.fromkeys(
        _words(
            """permitrootlogin logverbose rhostsrsaauthentication hostbasedauthentication
        hostbasedusesnamefrompacketonly hostbasedacceptedalgorithms hostbasedacceptedkeytypes
        rsaauthentication pubkeyauthoptions kerberosauthentication gssapiauthentication
        ignorerhosts x11forwarding x11displayoffset x11uselocalhost permitemptypasswords
        allowagentforwarding authorizedkeysfile2 acceptenv setenv permittunnel permittty
        permituserrc permitopen forcecommand chrootdirectory ipqos authorizedkeyscommand
        authorizedkeyscommanduser authorizedprincipalscommand authorizedprincipalscommanduser
        authenticationmethods
        disableforwarding
        exposeauthinfo rdomain casignaturealgorithms requiredrsasize channeltimeout
        unusedconnectiontimeout"""
        ),
        True,
    ),
}
# DSAAuthentication is an alias of PubkeyAuthentication that sshd allows only globally.
_GLOBAL_ALIASES = {"dsaauthentication": "pubkeyauthentication"}


# --- Match --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Connection:
    """
    What Match blocks are evaluated against (sshd's C{connection_info}).  C{None} means "not
    known": as in C{sshd -T -C}, a criterion on it does not match, except C{LocalPort}, which is
    an error then (as in sshd).
    """

    user: str | None = None
    groups: tuple[str, ...] = ()
    host: str | None = None
    address: str | None = None
    local_address: str | None = None
    local_port: int | None = None


_ATTRIBUTES = ("all", "user", "group", "host", "address", "localaddress", "localport")


@dataclass(frozen=True, eq=False)
class Match:
    """One C{Match} line: criteria that must all hold, as (attribute, pattern list) pairs."""

    criteria: tuple[tuple[str, str], ...]
    where: str

    def matches(self, connection: Connection) -> bool:
        result = True
        for attribute, patterns in self.criteria:
            if attribute == "all":
                return True
            if attribute == "localport":
                if connection.local_port is None:
                    raise ConfigError(
                        "'Match LocalPort' in configuration but 'lport' not in connection "
                        "test specification"
                    )
                result = result and int(patterns) == connection.local_port
            elif attribute in ("user", "group") and connection.user is None:
                result = False
            elif attribute == "user":
                result = result and _pattern_list(connection.user or "", patterns) == 1
            elif attribute == "group":
                result = result and _group_list(connection.groups, patterns)
            elif attribute == "host":
                host = connection.host
                result = (
                    result and host is not None and _pattern_list(host.lower(), patterns, True) == 1
                )
            else:
                address = connection.address if attribute == "address" else connection.local_address
                result = result and address is not None and _address_list(address, patterns) == 1
        return result


def _wildcard(text: str, pattern: str) -> bool:
    """OpenSSH's C{match_pattern}: C{*} and C{?} only (no character classes)."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, text, re.DOTALL) is not None


def _pattern_list(text: str, patterns: str, lower: bool = False) -> int:
    """C{match_pattern_list}: 1 on a match, -1 if a negated pattern matches, else 0."""
    found = 0
    for pattern in patterns.split(","):
        negated = pattern.startswith("!")
        body = pattern[1:] if negated else pattern
        if _wildcard(text, body.lower() if lower else body):
            if negated:
                return -1
            found = 1
    return found


def _group_list(groups: Sequence[str], patterns: str) -> bool:
    """C{ga_match_pattern_list}: some group matches, and none matches a negated pattern."""
    found = False
    for group in groups:
        outcome = _pattern_list(group, patterns)
        if outcome < 0:
            return False
        found = found or outcome == 1
    return found


def _network(pattern: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    """
    A CIDR block or single address (C{addr_pton_cidr}); C{None} if it is not an address (then
    it is a wildcard); L{ConfigError} for an address with a bad mask.
    """
    host, slash, bits = pattern.partition("/")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if slash and not (bits.isascii() and bits.isdigit() and int(bits) <= address.max_prefixlen):
        raise ConfigError(f"bad mask length in '{pattern}'")
    try:
        return ipaddress.ip_network(pattern, strict=True)
    except ValueError:
        raise ConfigError(f"'{pattern}' has bits set beyond its mask length") from None


def _check_addresses(patterns: str) -> None:
    for pattern in patterns.split(","):
        body = pattern[1:] if pattern.startswith("!") else pattern
        if not body:
            raise ConfigError(f"empty address pattern in '{patterns}'")
        _network(body)


def _address_list(address: str, patterns: str) -> int:
    """C{addr_match_list}: CIDR blocks, else wildcards; -1 if a negated entry matches."""
    if address.lower().startswith("::ffff:") and "." in address:
        address = address[7:]
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return 0
    found = 0
    for pattern in patterns.split(","):
        negated = pattern.startswith("!")
        body = pattern[1:] if negated else pattern
        network = _network(body)
        hit = parsed in network if network is not None else _wildcard(address, body)
        if hit:
            if negated:
                return -1
            found = 1
    return found


def _parse_match(args: list[str]) -> tuple[tuple[str, str], ...]:
    """A Match line's criteria, checked as sshd checks them at start."""
    criteria: list[tuple[str, str]] = []
    rest = list(args)
    while rest:
        attribute = rest.pop(0).lower()
        if attribute == "all":
            if criteria or rest:
                raise ConfigError("'all' cannot be combined with other Match attributes")
            return (("all", ""),)
        if attribute == "rdomain":
            raise ConfigError("Match RDomain is not supported by rfwd-server")
        if attribute not in _ATTRIBUTES:
            raise ConfigError(f"unsupported Match attribute '{attribute}'")
        if not rest:
            raise ConfigError(f"missing Match criteria for {attribute}")
        patterns = rest.pop(0)
        if attribute in ("address", "localaddress"):
            try:
                _check_addresses(patterns)
            except ConfigError as e:
                raise ConfigError(f"invalid Match {attribute} argument: {e}") from None
        if attribute == "localport" and not (
            patterns.isascii() and patterns.isdigit() and 0 < int(patterns) <= 65535
        ):
            raise ConfigError(f"invalid LocalPort '{patterns}' on Match line")
        criteria.append((attribute, patterns))
    if not criteria:
        raise ConfigError("one or more attributes required for Match")
    return tuple(criteria)


# --- the file ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    """One line's value, where it was, and the Match block it is in (C{None}: global)."""

    keyword: Keyword
    value: object
    where: str
    match: Match | None


@dataclass(frozen=True)
class SshdConfig:
    """A parsed file: its settings in order, and the warnings to show once."""

    path: str
    settings: tuple[Setting, ...]
    warnings: tuple[str, ...] = ()
    # Whether a Match block has a Group criterion: only then are users' groups looked up.
    needs_groups: bool = False

    def global_values(self) -> dict[str, object]:
        """The values outside Match blocks, by L{ServerConfig} field (or L{EXTRA_KEYS})."""
        return _resolve(s for s in self.settings if s.match is None)

    def match_values(self, connection: Connection) -> dict[str, object]:
        """What the Match blocks that hold for C{connection} set: they replace global values."""
        outcome: dict[int, bool] = {}
        chosen = []
        for setting in self.settings:
            if setting.match is None:
                continue
            key = id(setting.match)
            if key not in outcome:
                outcome[key] = setting.match.matches(connection)
            if outcome[key]:
                chosen.append(setting)
        return _resolve(chosen)

    def values(self, connection: Connection) -> dict[str, object]:
        """The global values with the matching blocks' values over them (C{sshd -T -C})."""
        return {**self.global_values(), **self.match_values(connection)}


def _resolve(settings: Iterable[Setting]) -> dict[str, object]:
    values: dict[str, object] = {}
    for setting in settings:
        keyword = setting.keyword
        if keyword.key == "rekey_limit":
            assert isinstance(setting.value, tuple)
            for name, part in zip(_REKEY_FIELDS, setting.value, strict=True):
                values.setdefault(name, part)
        elif keyword.adds_up:
            previous = values.get(keyword.key, [])
            assert isinstance(previous, list) and isinstance(setting.value, list)
            values[keyword.key] = previous + setting.value
        else:
            values.setdefault(keyword.key, setting.value)
    return values


def effective(
    config: SshdConfig,
    user: str,
    groups: Sequence[str],
    address: str,
    local_address: str,
    local_port: int,
) -> dict[str, object]:
    """
    The overrides the Match blocks give one connection once its user is known (as sshd applies
    them after the user name arrives): L{ServerConfig} field names to values.  The client's
    address doubles as its host name: rfwd-server does no DNS (sshd's C{UseDNS no}).
    """
    connection = Connection(user, tuple(groups), address, address, local_address, local_port)
    return config.match_values(connection)


def parse_test_spec(spec: str) -> Connection:
    """C{sshd -C}'s C{user=U,addr=A,host=H,laddr=L,lport=P}; an empty item ends the list."""
    found: dict[str, str] = {}
    port: int | None = None
    for item in spec.split(","):
        if not item:
            break
        name, equals, value = item.partition("=")
        if not equals or name not in ("user", "addr", "host", "laddr", "lport"):
            raise ConfigError(f"invalid test mode specification {item}")
        if name == "lport":
            if not (value.isascii() and value.isdigit() and 0 < int(value) <= 65535):
                raise ConfigError(f"invalid port '{value}' in test mode specification {item}")
            port = int(value)
        else:
            found[name] = value
    return Connection(
        user=found.get("user"),
        host=found.get("host"),
        address=found.get("addr"),
        local_address=found.get("laddr"),
        local_port=port,
    )


# --- reading -----------------------------------------------------------------------------------


_KEYWORD = re.compile(r"([^\s=\"]+)[ \t]*(?:=[ \t]*)?(.*)", re.DOTALL)


class _Reader:
    def __init__(self, files: Files) -> None:
        self.files = files
        self.settings: list[Setting] = []
        self.warnings: list[str] = []
        self.warned: set[str] = set()
        self.needs_groups = False

    def read(self, path: str, match: Match | None, depth: int, where: str | None) -> None:
        try:
            text = self.files.read_text(path)
        except (OSError, UnicodeDecodeError) as e:
            reason = getattr(e, "strerror", None) or "not a UTF-8 text file"
            if where is None:
                raise ConfigError(f"cannot read {path}: {reason}") from None
            raise ConfigFileError(where, f"cannot read {path}: {reason}") from None
        for number, line in enumerate(text.split("\n"), 1):
            location = f"{path} line {number}"
            try:
                match = self.line(path, line, location, match, depth)
            except ConfigFileError:
                raise
            except ConfigError as e:
                raise ConfigFileError(location, str(e)) from None

    def line(
        self, path: str, line: str, where: str, match: Match | None, depth: int
    ) -> Match | None:
        """Take one line; returns the Match block in force after it."""
        stripped = line.strip(" \t\r\n\f")
        if not stripped or stripped.startswith("#"):
            return match
        found = _KEYWORD.fullmatch(stripped)
        if found is None or not found.group(1):
            raise ConfigError("bad line")
        word, rest = found.group(1), found.group(2)
        try:
            args = split_words(rest)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        if not args:
            raise ConfigError(f'no argument after keyword "{word}"')
        name = word.lower()
        if name == "match":
            self.needs_groups = self.needs_groups or any(a.lower() == "group" for a in args)
            return Match(_parse_match(args), where)
        if name == "include":
            self.include(path, args, where, match, depth)
            return match
        canonical = _ALIASES.get(name, _GLOBAL_ALIASES.get(name, name))
        keyword = KEYWORDS.get(canonical)
        in_match = keyword.in_match if keyword else SSHD_ONLY_KEYWORDS.get(name)
        if in_match is None:
            raise ConfigError(f"bad configuration option: {word}")
        if name in _GLOBAL_ALIASES:
            in_match = False
        if match is not None and not in_match:
            raise ConfigError(f"directive '{word}' is not allowed within a Match block")
        if keyword is None:
            if name not in self.warned:
                self.warned.add(name)
                self.warnings.append(f"{where}: rfwd-server does not act on sshd's {word}; ignored")
            return match
        if keyword.name == "AuthorizedKeysFile" and len(args) > 1:
            self.warnings.append(
                f"{where}: rfwd-server reads one AuthorizedKeysFile per user; "
                f"ignoring {' '.join(args[1:])}"
            )
        self.settings.append(Setting(keyword, keyword.parse(keyword.name, args), where, match))
        return match

    def include(
        self, path: str, patterns: list[str], where: str, match: Match | None, depth: int
    ) -> None:
        if depth >= MAX_INCLUDE_DEPTH:
            raise ConfigError(f"too many nested Includes (at most {MAX_INCLUDE_DEPTH})")
        base = posixpath.dirname(path)
        for pattern in patterns:
            full = pattern if pattern.startswith(("/", "~")) else posixpath.join(base, pattern)
            for included in sorted(self.files.glob(full)):
                self.read(included, match, depth + 1, where)


def parse_config(path: str, files: Files) -> SshdConfig:
    """Read C{path} (and what it includes) through C{files}; L{ConfigError} on a bad line."""
    reader = _Reader(files)
    reader.read(path, None, 0, None)
    return SshdConfig(path, tuple(reader.settings), tuple(reader.warnings), reader.needs_groups)
