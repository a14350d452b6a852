"""
OpenSSH's client configuration (ssh_config(5)), read and evaluated as OpenSSH 9.2's C{ssh} does,
without Twisted.

The rules, as C{readconf.c} and C{ssh.c} have them unless said otherwise:

  - Sources, in order: the C{-o} options (file C{command-line}, line 0), then C{-F FILE} (C{-F
    none}: no file), or else C{~/.ssh/config} then C{/etc/ssh/ssh_config}.  Missing files are
    skipped, except the C{-F} one.  Values the command line's flags give (C{-l}, C{-p}, C{-i},
    C{user@}) are seeded before all of these.
  - The first value obtained for a keyword is used; C{IdentityFile}, C{CertificateFile} and
    C{RemoteForward} add up; C{UserKnownHostsFile} and C{GlobalKnownHostsFile} take all their
    values from the first line that gives them.
  - A line is C{Keyword arguments} or C{Keyword=arguments}; keywords are case-insensitive; C{#}
    starts a comment at the start of a line or of an argument; arguments may be quoted with
    C{"} or C{'}, and a backslash escapes a quote, a backslash, or (outside quotes) a space.
  - C{Host pattern ...} applies the lines after it when one pattern matches the name given on
    the command line and no C{!pattern} does (C{*} and C{?} are wildcards, case-sensitive).
    C{Match} applies them when every criterion holds: C{all}, C{host} (the C{HostName} so far,
    else the name given), C{originalhost}, C{user} (the remote user so far), C{localuser}; a
    pattern list is comma-separated, C{!} negates, host names compare case-insensitively.
    C{Match exec} is refused once the criteria before it hold (ssh would run a command there).
    C{Match final} (and C{canonical}, which is the same without canonicalization) is false on
    the first reading; if one was seen, the files are read a second time, where it is true and
    C{Host} patterns compare with the host name the first reading settled on.
  - C{Include} reads the files a glob matches, in sorted order; a relative path is relative to
    C{~/.ssh} in user files (C{-F} included) and to C{/etc/ssh} in the system file, where C{~} is
    an error.  Included files share the includer's block; an C{Include} in a block that does not
    apply is read for errors only.  At most 16 levels.
  - Values are checked whether or not their block applies, for the keywords rfwd-client acts on;
    a keyword ssh knows but rfwd-client ignores is only recorded (L{SSHConfig.ignored}).  An
    unknown keyword is an error unless C{IgnoreUnknown} (once set) matches it.  Errors are a
    L{ConfigError} C{FILE line N: reason}.
  - C{%} tokens (ssh_config(5) TOKENS) are expanded by L{SSHConfig.expand}: C{HostName} takes
    C{%%} and C{%h}; C{IdentityFile}, C{CertificateFile}, C{IdentityAgent},
    C{UserKnownHostsFile} (and C{RemoteForward}'s socket paths, which rfwd does not do) take
    C{%% %C %d %h %i %k %L %l %n %p %r %u}, and C{${VAR}} too.
"""

from __future__ import annotations

import glob
import hashlib
import os
import posixpath
import re
import socket
import stat
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from twisted_rfwd.errors import ConfigError
from twisted_rfwd.protocol.config_words import split_words
from twisted_rfwd.protocol.spec import parse_remote_forward
from twisted_rfwd.protocol.units import parse_rekey_limit

__all__ = [
    "ACCUMULATE",
    "ACTED",
    "COMMAND_LINE",
    "KEYWORDS",
    "LOG_LEVELS",
    "Entry",
    "Local",
    "SSHConfig",
    "Sources",
    "convtime",
    "evaluate",
    "match_pattern",
    "match_pattern_list",
    "split_line",
]

COMMAND_LINE = "command-line"
"""The file name of C{-o} options in messages, as ssh says it."""

MAX_INCLUDE_DEPTH = 16


def _words(text: str) -> list[str]:
    return text.split()


# Every keyword OpenSSH 9.2 (Debian's build, with its GSSAPI key exchange patch) knows, in
# readconf.c's spelling; aliases map to the keyword they stand for.
_NAMES = """
AddKeysToAgent AddressFamily BatchMode BindAddress BindInterface CanonicalDomains
CanonicalizeFallbackLocal CanonicalizeHostname CanonicalizeMaxDots CanonicalizePermittedCNAMEs
CASignatureAlgorithms CertificateFile CheckHostIP Ciphers ClearAllForwardings Compression
ConnectionAttempts ConnectTimeout ControlMaster ControlPath ControlPersist DynamicForward
EnableEscapeCommandline EnableSSHKeysign EscapeChar ExitOnForwardFailure FingerprintHash
ForkAfterAuthentication ForwardAgent ForwardX11 ForwardX11Timeout ForwardX11Trusted
GatewayPorts GlobalKnownHostsFile GSSAPIAuthentication GSSAPIClientIdentity
GSSAPIDelegateCredentials GSSAPIKeyExchange GSSAPIKexAlgorithms GSSAPIRenewalForcesRekey
GSSAPIServerIdentity GSSAPITrustDns HashKnownHosts Host HostbasedAcceptedAlgorithms
HostbasedAuthentication HostKeyAlgorithms HostKeyAlias HostName IdentitiesOnly IdentityAgent
IdentityFile IgnoreUnknown Include IPQoS KbdInteractiveAuthentication KbdInteractiveDevices
KexAlgorithms KnownHostsCommand LocalCommand LocalForward LogLevel LogVerbose MACs Match
NoHostAuthenticationForLocalhost NumberOfPasswordPrompts PasswordAuthentication
PermitLocalCommand PermitRemoteOpen PKCS11Provider Port PreferredAuthentications ProxyCommand
ProxyJump ProxyUseFdpass PubkeyAcceptedAlgorithms PubkeyAuthentication RekeyLimit
RemoteCommand RemoteForward RequestTTY RequiredRSASize RevokedHostKeys SecurityKeyProvider
SendEnv ServerAliveCountMax ServerAliveInterval SessionType SetEnv SmartcardDevice StdinNull
StreamLocalBindMask StreamLocalBindUnlink StrictHostKeyChecking SyslogFacility TCPKeepAlive
Tunnel TunnelDevice UpdateHostKeys User UserKnownHostsFile VerifyHostKeyDNS VisualHostKey
XAuthLocation
"""
_ALIASES = {
    # Deprecated or unsupported by ssh itself: accepted and ignored, as ssh does.
    "protocol": "Protocol",
    "cipher": "Cipher",
    "fallbacktorsh": "FallBackToRsh",
    "globalknownhostsfile2": "GlobalKnownHostsFile2",
    "rhostsauthentication": "RhostsAuthentication",
    "userknownhostsfile2": "UserKnownHostsFile2",
    "useroaming": "UseRoaming",
    "usersh": "UseRsh",
    "useprivilegedport": "UsePrivilegedPort",
    "afstokenpassing": "AFSTokenPassing",
    "kerberosauthentication": "KerberosAuthentication",
    "kerberostgtpassing": "KerberosTgtPassing",
    "rsaauthentication": "RSAAuthentication",
    "rhostsrsaauthentication": "RhostsRSAAuthentication",
    "compressionlevel": "CompressionLevel",
    # Other names of current keywords.
    "challengeresponseauthentication": "KbdInteractiveAuthentication",
    "skeyauthentication": "KbdInteractiveAuthentication",
    "tisauthentication": "KbdInteractiveAuthentication",
    "dsaauthentication": "PubkeyAuthentication",
    "identityfile2": "IdentityFile",
    "keepalive": "TCPKeepAlive",
    "hostbasedkeytypes": "HostbasedAcceptedAlgorithms",
    "pubkeyacceptedkeytypes": "PubkeyAcceptedAlgorithms",
    "gssapiclientidentity": "GSSAPIClientIdentity",
}
KEYWORDS: dict[str, str] = {name.lower(): name for name in _words(_NAMES)} | _ALIASES
"""Every keyword ssh knows, by lower-case name, with its spelling."""

ACTED = frozenset(
    _words(
        """
    HostName Port User IdentityFile CertificateFile IdentitiesOnly IdentityAgent AddKeysToAgent
    RemoteForward ExitOnForwardFailure ServerAliveInterval ServerAliveCountMax ConnectTimeout
    ConnectionAttempts StrictHostKeyChecking UserKnownHostsFile GlobalKnownHostsFile
    HashKnownHosts CheckHostIP Ciphers MACs KexAlgorithms HostKeyAlgorithms
    PubkeyAcceptedAlgorithms RekeyLimit BatchMode AddressFamily BindAddress LogLevel
    """
    )
)
"""The keywords rfwd-client reads (some only to say they are ignored); the rest of L{KEYWORDS}
is recorded and otherwise ignored."""

ACCUMULATE = frozenset({"IdentityFile", "CertificateFile", "RemoteForward"})

LOG_LEVELS = ("QUIET", "FATAL", "ERROR", "INFO", "VERBOSE", "DEBUG", "DEBUG1", "DEBUG2", "DEBUG3")

# OpenSSH 9.2's algorithm names (ssh -Q cipher, mac, kex, key-sig): a name outside these is an
# error as in ssh; one inside them that rfwd does not implement is the caller's business.
_CIPHERS = _words("""3des-cbc aes128-cbc aes192-cbc aes256-cbc aes128-ctr aes192-ctr aes256-ctr
aes128-gcm@openssh.com aes256-gcm@openssh.com chacha20-poly1305@openssh.com""")
_MACS = _words("""hmac-sha1 hmac-sha1-96 hmac-sha2-256 hmac-sha2-512 hmac-md5 hmac-md5-96
umac-64@openssh.com umac-128@openssh.com hmac-sha1-etm@openssh.com hmac-sha1-96-etm@openssh.com
hmac-sha2-256-etm@openssh.com hmac-sha2-512-etm@openssh.com hmac-md5-etm@openssh.com
hmac-md5-96-etm@openssh.com umac-64-etm@openssh.com umac-128-etm@openssh.com""")
_KEX = _words("""mlkem768x25519-sha256 diffie-hellman-group1-sha1 diffie-hellman-group14-sha1
diffie-hellman-group14-sha256
diffie-hellman-group16-sha512 diffie-hellman-group18-sha512 diffie-hellman-group-exchange-sha1
diffie-hellman-group-exchange-sha256 ecdh-sha2-nistp256 ecdh-sha2-nistp384 ecdh-sha2-nistp521
curve25519-sha256 curve25519-sha256@libssh.org sntrup761x25519-sha512
sntrup761x25519-sha512@openssh.com""")
_KEYS = _words("""ssh-ed25519 ssh-ed25519-cert-v01@openssh.com sk-ssh-ed25519@openssh.com
sk-ssh-ed25519-cert-v01@openssh.com ecdsa-sha2-nistp256 ecdsa-sha2-nistp256-cert-v01@openssh.com
ecdsa-sha2-nistp384 ecdsa-sha2-nistp384-cert-v01@openssh.com ecdsa-sha2-nistp521
ecdsa-sha2-nistp521-cert-v01@openssh.com sk-ecdsa-sha2-nistp256@openssh.com
sk-ecdsa-sha2-nistp256-cert-v01@openssh.com webauthn-sk-ecdsa-sha2-nistp256@openssh.com ssh-dss
ssh-dss-cert-v01@openssh.com ssh-rsa ssh-rsa-cert-v01@openssh.com rsa-sha2-256
rsa-sha2-256-cert-v01@openssh.com rsa-sha2-512 rsa-sha2-512-cert-v01@openssh.com""")
OPENSSH_ALGORITHMS: dict[str, frozenset[str]] = {
    "Ciphers": frozenset(_CIPHERS),
    "MACs": frozenset(_MACS),
    "KexAlgorithms": frozenset(_KEX),
    "HostKeyAlgorithms": frozenset(_KEYS),
    "PubkeyAcceptedAlgorithms": frozenset(_KEYS),
}

# Which tokens each keyword takes (ssh_config(5) TOKENS); the rest take none.
_ALL_TOKENS = "%CdhikLlnpru"
TOKENS: dict[str, str] = {
    "HostName": "%h",
    "IdentityFile": _ALL_TOKENS,
    "CertificateFile": _ALL_TOKENS,
    "IdentityAgent": _ALL_TOKENS,
    "UserKnownHostsFile": _ALL_TOKENS,
}
_DOLLAR = frozenset({"IdentityFile", "CertificateFile", "IdentityAgent", "UserKnownHostsFile"})


@dataclass(frozen=True)
class Entry:
    """One keyword's arguments, and where they were read (for messages)."""

    args: tuple[str, ...]
    file: str
    line: int

    @property
    def where(self) -> str:
        """C{FILE line N}, the prefix of messages about this entry."""
        return f"{self.file} line {self.line}"

    @property
    def value(self) -> str:
        return " ".join(self.args)


@dataclass(frozen=True)
class Local:
    """What ssh knows about this side: the local user, home, uid, and host name."""

    user: str
    home: str
    uid: int
    hostname: str
    environ: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def current(cls, user: str) -> Local:
        """This process's: C{$HOME} (not the password database ssh reads) and C{gethostname}."""
        return cls(
            user=user,
            home=os.path.expanduser("~"),
            uid=os.getuid(),
            hostname=socket.gethostname(),
            environ=dict(os.environ),
        )


@dataclass(frozen=True)
class Sources:
    """
    Where configuration is read: C{config_file} is C{-F} (C{"none"}: no file; C{None}: the
    user's file then the system's).  Relative C{Include}s resolve in C{user_dir} (user files,
    C{~} for the home) or C{system_dir}.
    """

    config_file: str | None = None
    user_config: str = "~/.ssh/config"
    system_config: str = "/etc/ssh/ssh_config"
    user_dir: str = "~/.ssh"
    system_dir: str = "/etc/ssh"
    check_permissions: bool = True


class SSHConfig:
    """
    The values one destination gets (first value winning), where each came from, and the
    keywords seen that rfwd-client ignores.
    """

    def __init__(self, host_arg: str, local: Local) -> None:
        self.host_arg = host_arg
        self.local = local
        self._values: dict[str, list[Entry]] = {}
        self.ignored: list[Entry] = []
        self.ignored_names: list[tuple[str, Entry]] = []
        self.ignore_unknown: str | None = None

    def set(self, name: str, entry: Entry) -> None:
        """
        Record C{entry} for C{name} unless it already has a value; the accumulating keywords
        keep each value once, as ssh does.
        """
        entries = self._values.setdefault(name, [])
        if not entries or (name in ACCUMULATE and all(e.args != entry.args for e in entries)):
            entries.append(entry)

    def entry(self, name: str) -> Entry | None:
        entries = self._values.get(name)
        return entries[0] if entries else None

    def entries(self, name: str) -> list[Entry]:
        return list(self._values.get(name, []))

    def get(self, name: str) -> str | None:
        """The winning value as written (arguments joined by a space), or None."""
        found = self.entry(name)
        return found.value if found else None

    # What ssh computes from the values.

    @property
    def hostname(self) -> str:
        """C{HostName} with C{%h} expanded, else the name given; lower case unless an address."""
        entry = self.entry("HostName")
        host = self.host_arg if entry is None else self._expand(entry, "HostName", {})
        return host if _is_address(host) else host.lower()

    @property
    def port(self) -> int:
        entry = self.entry("Port")
        return 22 if entry is None else _port(entry.args[0])

    @property
    def user(self) -> str:
        return self.get("User") or self.local.user

    def tokens(self) -> dict[str, str]:
        """The values of ssh's C{%} tokens for this destination."""
        local, host, port, user = self.local, self.hostname, str(self.port), self.user
        full = local.hostname
        connection = hashlib.sha1((full + host + port + user).encode(), usedforsecurity=False)
        return {
            "C": connection.hexdigest(),
            "L": full.split(".")[0],
            "i": str(local.uid),
            "k": self.get("HostKeyAlias") or self.host_arg,
            "l": full,
            "n": self.host_arg,
            "p": port,
            "d": local.home,
            "h": host,
            "r": user,
            "u": local.user,
        }

    def expand(self, name: str, entry: Entry, text: str | None = None) -> str:
        """
        C{text} (default: the entry's value) of keyword C{name} with C{~}, its C{%} tokens and
        (where ssh does) C{${VAR}} expanded; a L{ConfigError} at the entry for a bad token.
        """
        return self._expand(entry, name, self.tokens(), text)

    def _expand(
        self, entry: Entry, name: str, tokens: Mapping[str, str], text: str | None = None
    ) -> str:
        text = entry.value if text is None else text
        if name == "HostName":
            tokens = {"h": self.host_arg}
        elif text.startswith("~"):
            text = _tilde(text, self.local.home)
        try:
            return _percent(text, TOKENS.get(name, "%"), tokens, dollar=name in _DOLLAR,
                            environ=self.local.environ)  # fmt: skip
        except ValueError as e:
            raise ConfigError(f"{entry.where}: {name}: {e}") from None


def evaluate(
    host_arg: str,
    options: Sequence[str],
    local: Local,
    sources: Sources,
    seeded: Iterable[tuple[str, str]] = (),
) -> SSHConfig:
    """
    Read every source for destination C{host_arg}: C{seeded} (keyword, value) pairs from the
    command line's flags first, then the C{-o} C{options}, then the files.
    """
    config = SSHConfig(host_arg, local)
    for name, value in seeded:
        config.set(name, Entry((value,), COMMAND_LINE, 0))
    reader = _Reader(config, sources, final=False, host=host_arg)
    for text in options:
        reader.line(text, COMMAND_LINE, 0, None, user=True, depth=0)
    reader.files()
    if reader.want_final:
        # ssh's second reading: the host name is settled (HostName lines no longer apply).
        hostname = config.hostname
        if config.entry("HostName") is None:
            config.set("HostName", Entry((hostname.replace("%", "%%"),), COMMAND_LINE, 0))
        _Reader(config, sources, final=True, host=hostname).files()
    return config


class _Block:
    """Whether the lines being read apply (flipped by C{Host} and C{Match})."""

    def __init__(self, active: bool, never: bool) -> None:
        self.active = active
        self.never = never


class _Reader:
    """
    One reading of the files; C{host} is what C{Host} patterns compare with; C{final} whether
    this is the second reading that C{Match final} asks for.
    """

    def __init__(self, config: SSHConfig, sources: Sources, final: bool, host: str) -> None:
        self.config = config
        self.sources = sources
        self.final = final
        self.host = host
        self.want_final = False

    def files(self) -> None:
        sources, home = self.sources, self.config.local.home
        if sources.config_file is not None:
            path = sources.config_file
            if path.lower() != "none" and not self.file(path, user=True, depth=0, active=True):
                raise ConfigError(f"Can't open user config file {path}: No such file or directory")
        else:
            self.file(_tilde(sources.user_config, home), user=True, depth=0, active=True)
            self.file(sources.system_config, user=False, depth=0, active=True, check=False)

    def file(
        self, path: str, user: bool, depth: int, active: bool, never: bool = False,
        check: bool = True,
    ) -> bool:  # fmt: skip
        """Read one file; False if it does not exist."""
        if depth > MAX_INCLUDE_DEPTH:
            raise ConfigError(f"{path}: too many recursive configuration includes")
        try:
            with open(path, "rb") as f:
                if check and self.sources.check_permissions:
                    _check_permissions(path, os.fstat(f.fileno()))
                data = f.read()
        except FileNotFoundError:
            return False
        except IsADirectoryError:
            raise ConfigError(f"Can't open user config file {path}: Is a directory") from None
        except OSError as e:
            raise ConfigError(f"Can't open user config file {path}: {e.strerror}") from None
        block = _Block(active, never)
        text = data.decode("utf-8", "surrogateescape")
        for number, line in enumerate(text.split("\n"), 1):
            self.line(line, path, number, block, user, depth)
        return True

    def line(
        self, text: str, path: str, number: int, block: _Block | None, user: bool, depth: int
    ) -> None:
        where = f"{path} line {number}"
        try:
            split = split_line(text)
        except ValueError as e:
            raise ConfigError(f"{where}: {e}") from None
        if split is None:
            return
        keyword, args = split
        name = KEYWORDS.get(keyword.lower())
        if name is None:
            pattern = self.config.ignore_unknown
            if pattern is not None and match_pattern_list(keyword.lower(), pattern, True) == 1:
                self.config.ignored.append(Entry((keyword, *args), path, number))
                return
            raise ConfigError(f"{where}: unsupported option '{keyword}'")
        entry = Entry(tuple(args), path, number)
        if name in ("Host", "Match", "Include") and block is None:
            raise ConfigError(f"{where}: {name} is not supported as a command-line option")
        active = block is None or (block.active and not block.never)
        if name == "Host":
            assert block is not None
            block.active = not block.never and self._host(args, where)
        elif name == "Match":
            assert block is not None
            block.active = not block.never and self._match(args, where)
        elif name == "Include":
            assert block is not None
            self._include(args, where, user, depth, block)
        elif name in ACTED:
            try:
                _check(name, args)
            except ValueError as e:
                raise ConfigError(f"{where}: {e}") from None
            if active:
                self.config.set(name, entry)
        elif active:
            if name == "IgnoreUnknown" and self.config.ignore_unknown is None:
                self.config.ignore_unknown = args[0]
            self.config.set(name, entry)
            self.config.ignored_names.append((name, entry))

    def _host(self, patterns: Sequence[str], where: str) -> bool:
        matched = False
        for pattern in patterns:
            negated = pattern.startswith("!")
            if match_pattern(self.host, pattern[1:] if negated else pattern):
                if negated:
                    return False
                matched = True
        return matched

    def _match(self, args: Sequence[str], where: str) -> bool:
        config = self.config
        host = config.hostname if config.entry("HostName") else config.host_arg
        result = True
        attributes = 0
        i = 0
        while i < len(args):
            attribute = args[i]
            negate = attribute.startswith("!")
            criterion = attribute[1:].lower() if negate else attribute.lower()
            i += 1
            if criterion == "all":
                if attributes > 1 or i < len(args):
                    raise ConfigError(
                        f"{where}: '{attribute}' cannot be combined with other Match attributes"
                    )
                return result and not negate
            attributes += 1
            if criterion in ("canonical", "final"):
                self.want_final = self.want_final or criterion == "final"
                if self.final == negate:
                    result = False
                continue
            if criterion == "exec":
                i += 1
                if result:
                    raise ConfigError(
                        f"{where}: Match exec is not supported: "
                        "rfwd-client never runs commands from its configuration"
                    )
                continue
            if i >= len(args):
                raise ConfigError(f"{where}: Missing Match criteria for {attribute}")
            patterns = args[i]
            i += 1
            if criterion == "host":
                found = match_pattern_list(host.lower(), patterns, True) == 1
            elif criterion == "originalhost":
                found = match_pattern_list(config.host_arg.lower(), patterns, True) == 1
            elif criterion == "user":
                found = match_pattern_list(config.user, patterns, False) == 1
            elif criterion == "localuser":
                found = match_pattern_list(config.local.user, patterns, False) == 1
            else:
                raise ConfigError(f"{where}: Unsupported Match attribute {attribute}")
            if found == negate:
                result = False
        if attributes == 0:
            raise ConfigError(f"{where}: One or more attributes required for Match")
        return result

    def _include(
        self, args: Sequence[str], where: str, user: bool, depth: int, block: _Block
    ) -> None:
        home = self.config.local.home
        for arg in args:
            if arg.startswith("~") and not user:
                raise ConfigError(f"{where}: bad include path {arg}")
            path = arg
            if not arg.startswith(("/", "~")):
                base = self.sources.user_dir if user else self.sources.system_dir
                path = posixpath.join(base, arg)
            pattern = _tilde(path, home) if path.startswith("~") else path
            for found in sorted(glob.glob(pattern)):
                outer = block.active
                self.file(found, user, depth + 1, active=outer, never=block.never or not outer)
                block.active = outer


def split_line(text: str) -> tuple[str, list[str]] | None:
    """
    A line as ssh splits it: the keyword and its arguments, or None for a blank line or a
    comment; a C{ValueError} for a keyword without arguments or unbalanced quotes.
    """
    line = text.rstrip(" \t\r\n\f")
    match = re.match(r"[ \t\r\n]*([^ \t\r\n=\"']*)", line)
    assert match is not None
    keyword = match.group(1)
    if not keyword or keyword.startswith("#"):
        return None
    rest = line[match.end() :]
    rest = re.sub(r"^[ \t\r\n]*(=[ \t\r\n]*)?", "", rest)
    if not rest:
        raise ValueError(f'no argument after keyword "{keyword.lower()}"')
    return keyword, split_words(rest)


def match_pattern(text: str, pattern: str) -> bool:
    """ssh's C{match_pattern}: C{*} any run of characters, C{?} one character."""
    regex = "".join(
        ".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern
    )  # fmt: skip
    return re.fullmatch(regex, text, re.DOTALL) is not None


def match_pattern_list(text: str, patterns: str, lower: bool) -> int:
    """ssh's C{match_pattern_list}: 1 on a match, -1 on a negated match, else 0."""
    found = 0
    for item in patterns.split(","):
        negated = item.startswith("!")
        pattern = item[1:] if negated else item
        if match_pattern(text, pattern.lower() if lower else pattern):
            if negated:
                return -1
            found = 1
    return found


def convtime(text: str) -> int:
    """ssh's time format: C{90}, C{30s}, C{1h30m}; a C{ValueError} otherwise."""
    parts = re.findall(r"([0-9]+)([sSmMhHdDwW]?)", text)
    if not text or "".join(n + u for n, u in parts) != text:
        raise ValueError(text)
    units = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    total = sum(int(n) * units[u.lower()] for n, u in parts)
    if total > 2**31 - 1:
        raise ValueError(text)
    return total


def _port(text: str) -> int:
    if text.isascii() and text.isdigit():
        value = int(text)
        if 1 <= value <= 65535:
            return value
        raise ValueError(f"Bad port '{text}'.")
    try:
        return socket.getservbyname(text, "tcp")
    except (OSError, ValueError):
        raise ValueError(f"Bad port '{text}'.") from None


_FLAGS = {"yes": True, "true": True, "no": False, "false": False}
_STRICT = ("yes", "no", "true", "false", "ask", "off", "accept-new")
_ONE = frozenset(
    _words(
        """HostName Port User IdentityFile CertificateFile IdentitiesOnly IdentityAgent
    ExitOnForwardFailure ServerAliveInterval ServerAliveCountMax ConnectTimeout
    ConnectionAttempts StrictHostKeyChecking HashKnownHosts CheckHostIP Ciphers MACs
    KexAlgorithms HostKeyAlgorithms PubkeyAcceptedAlgorithms BatchMode AddressFamily
    BindAddress LogLevel"""
    )
)


def _check(name: str, args: Sequence[str]) -> None:
    """Check the value of a keyword rfwd-client acts on, as ssh would; C{ValueError} if bad."""
    if any(not a for a in args):
        raise ValueError(f"keyword {name} empty argument")
    limit = 1 if name in _ONE else 2 if name in ("RekeyLimit", "RemoteForward") else None
    if name == "AddKeysToAgent":
        limit = 2
    if limit is not None and len(args) > limit:
        raise ValueError(f"keyword {name} extra arguments at end of line")
    value = args[0]
    if name == "Port":
        _port(value)
    elif name in ("ExitOnForwardFailure", "HashKnownHosts", "CheckHostIP", "BatchMode",
                  "IdentitiesOnly"):  # fmt: skip
        if value.lower() not in _FLAGS:
            raise ValueError(f"{name} must be yes or no, not '{value}'")
    elif name == "StrictHostKeyChecking":
        if value.lower() not in _STRICT:
            raise ValueError(f"StrictHostKeyChecking must be yes, accept-new or no, not '{value}'")
    elif name == "AddressFamily":
        if value.lower() not in ("any", "inet", "inet6"):
            raise ValueError(f"AddressFamily must be any, inet or inet6, not '{value}'")
    elif name in ("ConnectTimeout", "ServerAliveInterval"):
        if value != "none":
            try:
                convtime(value)
            except ValueError:
                raise ValueError(
                    f"{name} must be a number of seconds or a time like 30s, not '{value}'"
                ) from None
    elif name in ("ServerAliveCountMax", "ConnectionAttempts"):
        if not (value.isascii() and value.isdigit()) or int(value) > 2**31 - 1:
            raise ValueError(f"{name} must be a number, not '{value}'")
        if name == "ConnectionAttempts" and int(value) < 1:
            raise ValueError("ConnectionAttempts must be 1 or more")
    elif name == "LogLevel":
        if value.upper() not in LOG_LEVELS:
            raise ValueError(f"unsupported log level '{value}'")
    elif name in OPENSSH_ALGORITHMS:
        names = value[1:] if value[:1] in "+-^" else value
        if value[:1] != "-":
            unknown = [n for n in names.split(",") if n not in OPENSSH_ALGORITHMS[name]]
            if unknown or not names:
                raise ValueError(f"Bad {name} '{value}'")
    elif name == "RekeyLimit":
        try:
            parse_rekey_limit(" ".join(args))
        except ConfigError as e:
            raise ValueError(str(e)) from None
    elif name == "RemoteForward":
        try:
            parse_remote_forward(":".join(args[:2]))
        except ConfigError as e:
            raise ValueError(str(e)) from None
    elif name in ("UserKnownHostsFile", "GlobalKnownHostsFile"):
        if any(a.lower() == "none" for a in args) and len(args) > 1:
            raise ValueError(f'keyword {name} "none" argument must appear alone.')
    elif name == "AddKeysToAgent":
        modes = ("yes", "no", "true", "false", "ask", "confirm")
        ok = value.lower() in modes and (len(args) == 1 or value.lower() == "confirm")
        timed = [args[1]] if len(args) == 2 else ([] if value.lower() in modes else [value])
        try:
            for t in timed:
                convtime(t)
        except ValueError:
            ok = False
        else:
            ok = ok or (len(args) == 1 and bool(timed))
        if not ok:
            raise ValueError(f"AddKeysToAgent: unsupported option '{' '.join(args)}'")


def _percent(
    text: str, allowed: str, tokens: Mapping[str, str], dollar: bool, environ: Mapping[str, str]
) -> str:
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if dollar and text.startswith("${", i):
            end = text.find("}", i + 2)
            if end < 0:
                raise ValueError(f"environment variable '{text[i + 2 :]}' missing closing '}}'")
            var = text[i + 2 : end]
            if var not in environ:
                raise ValueError(f"environment variable {var} is not set")
            out.append(environ[var])
            i = end + 1
            continue
        if c != "%":
            out.append(c)
            i += 1
            continue
        if i + 1 >= n:
            raise ValueError("a lone '%' at the end")
        token = text[i + 1]
        if token == "%":
            out.append("%")
        elif token in allowed and token in tokens:
            out.append(tokens[token])
        else:
            raise ValueError(f"unknown token %{token}")
        i += 2
    return "".join(out)


def _tilde(path: str, home: str) -> str:
    """C{~/x} in C{home}; C{~user/x} from the password database, as ssh does."""
    if path == "~" or path.startswith("~/"):
        return home + path[1:]
    return os.path.expanduser(path)


def _is_address(host: str) -> bool:
    return bool(re.fullmatch(r"[0-9.]+|[0-9A-Fa-f:.]*:[0-9A-Fa-f:.%a-zA-Z]*", host))


def _check_permissions(path: str, info: os.stat_result) -> None:
    """ssh refuses a user configuration file that others could have written."""
    if (info.st_uid not in (0, os.getuid())) or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise ConfigError(f"Bad owner or permissions on {path}")
