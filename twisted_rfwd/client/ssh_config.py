"""
rfwd-client's command line and OpenSSH client configuration, resolved into the settings of one
tunnel (L{Settings}) before any key is loaded; and C{-G}'s printout of them in C{ssh -G}'s
format.

Precedence: C{-l}, C{-p}, C{user@} and C{-i} first, then C{-o} options, then the files (see
L{twisted_rfwd.protocol.ssh_config}); the first value wins.  rfwd-client's own defaults apply
where nothing is said (keepalives every 15 s, a 30 s connect timeout, re-keying after 1G or
1h), so C{-G} prints what the client will do, in ssh's spelling.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from twisted.logger import Logger

from twisted_rfwd.client.config import HostKeyPolicy
from twisted_rfwd.client.identity import DEFAULT_IDENTITY_NAMES
from twisted_rfwd.errors import ConfigError
from twisted_rfwd.protocol.algorithms import (
    CIPHERS,
    KEY_EXCHANGES,
    MACS,
    PUBLIC_KEY_ALGORITHMS,
    choose,
)
from twisted_rfwd.protocol.socks import RemoteOpenPolicy
from twisted_rfwd.protocol.spec import RemoteForward, parse_remote_forward
from twisted_rfwd.protocol.ssh_config import (
    COMMAND_LINE,
    Entry,
    Local,
    Sources,
    SSHConfig,
    convtime,
    evaluate,
)
from twisted_rfwd.protocol.units import (
    DEFAULT_REKEY_BYTES,
    DEFAULT_REKEY_SECONDS,
    parse_rekey_limit,
)

__all__ = ["CommandLine", "IdentityPath", "Settings", "dump", "resolve"]

_log = Logger()

# The algorithm keywords: the ClientConfig field, and rfwd's default (and supported) list.
ALGORITHMS: tuple[tuple[str, str, Sequence[bytes]], ...] = (
    ("Ciphers", "ciphers", CIPHERS),
    ("MACs", "macs", MACS),
    ("KexAlgorithms", "kex_algorithms", KEY_EXCHANGES),
    ("HostKeyAlgorithms", "host_key_algorithms", PUBLIC_KEY_ALGORITHMS),
    ("PubkeyAcceptedAlgorithms", "pubkey_accepted_algorithms", PUBLIC_KEY_ALGORITHMS),
)

# Keywords read but not acted on: said at debug level when they are set.
_ACCEPTED_ONLY = ("AddKeysToAgent", "BatchMode", "CheckHostIP", "HashKnownHosts")


@dataclass
class CommandLine:
    """What rfwd-client's command line says: the destination, flags, C{-o}, C{-R}, C{-F}."""

    destination: str
    options: list[str] = field(default_factory=list)
    forwards: list[str] = field(default_factory=list)
    identities: list[str] = field(default_factory=list)
    port: int | None = None
    login: str | None = None
    config_file: str | None = None


@dataclass(frozen=True)
class IdentityPath:
    """A key file: as written (C{shown}), expanded (C{path}); C{required}: missing is an error."""

    shown: str
    path: str
    required: bool


@dataclass
class Settings:
    """One tunnel's settings from the command line and the files, before keys are loaded."""

    config: SSHConfig
    host: str
    port: int
    user: str
    forwards: list[RemoteForward]
    identity_files: list[IdentityPath]
    certificate_files: list[str]
    # The same, with ~ and % tokens expanded: the files read.
    certificate_paths: list[str]
    identity_agent: str | None
    identities_only: bool
    strict_host_key_checking: HostKeyPolicy
    user_known_hosts: list[str] | None
    global_known_hosts: list[str]
    exit_on_forward_failure: bool
    connect_timeout: float | None
    connection_attempts: int
    server_alive_interval: float | None
    server_alive_count_max: int | None
    rekey: tuple[int | None, float | None] | None
    algorithms: dict[str, list[bytes]]
    address_family: str
    bind_address: str | None
    log_level: str | None
    # PermitRemoteOpen, checked: where dynamic forwards' SOCKS clients may connect.
    permit_remote_open: RemoteOpenPolicy = field(default_factory=RemoteOpenPolicy)

    @property
    def default_identities(self) -> bool:
        """No key file was named: rfwd-client's defaults (those that exist) are used."""
        return not self.identity_files


def resolve(command: CommandLine, local: Local, sources: Sources) -> Settings:
    """Evaluate the command line and the configuration files for C{command.destination}."""
    user_part, at, host = command.destination.rpartition("@")
    host = host.strip("[]")
    if not host or (at and not user_part):
        raise ConfigError(f"no host in destination '{command.destination}'")
    seeded: list[tuple[str, str]] = []
    if command.login:
        seeded.append(("User", command.login))
    if user_part:
        seeded.append(("User", user_part))
    if command.port is not None:
        seeded.append(("Port", str(command.port)))
    seeded += [("IdentityFile", path) for path in command.identities]
    config = evaluate(host, command.options, local, sources, seeded)
    _say_ignored(config)

    forwards = [parse_remote_forward(spec) for spec in command.forwards]
    for entry in config.entries("RemoteForward"):
        forward = parse_remote_forward(":".join(entry.args))  # one argument: dynamic
        if forward not in forwards:  # ssh adds each forward once
            forwards.append(forward)
    permit_remote_open = _permit_remote_open(config.entry("PermitRemoteOpen"))

    identity_files = [
        IdentityPath(
            entry.value,
            config.expand("IdentityFile", entry),
            required=entry.file == COMMAND_LINE,
        )
        for entry in config.entries("IdentityFile")
    ]
    certificates = [entry.value for entry in config.entries("CertificateFile")]
    certificate_paths = [
        config.expand("CertificateFile", entry) for entry in config.entries("CertificateFile")
    ]

    agent = config.entry("IdentityAgent")
    strict = config.get("StrictHostKeyChecking")
    timeout = config.get("ConnectTimeout")
    interval = config.get("ServerAliveInterval")
    count = config.get("ServerAliveCountMax")
    rekey = config.get("RekeyLimit")
    return Settings(
        config=config,
        host=config.hostname,
        port=config.port,
        user=config.user,
        forwards=forwards,
        identity_files=identity_files,
        certificate_files=certificates,
        certificate_paths=certificate_paths,
        identity_agent=_agent(config, agent),
        identities_only=_flag(config, "IdentitiesOnly"),
        strict_host_key_checking=HostKeyPolicy.parse(strict or "yes"),
        user_known_hosts=_known_hosts(config, "UserKnownHostsFile", expand=True),
        global_known_hosts=_known_hosts(config, "GlobalKnownHostsFile", expand=False) or [],
        exit_on_forward_failure=_flag(config, "ExitOnForwardFailure"),
        connect_timeout=None if timeout in (None, "none") else float(convtime(timeout)),
        connection_attempts=int(config.get("ConnectionAttempts") or 1),
        server_alive_interval=(None if interval in (None, "none") else float(convtime(interval))),
        server_alive_count_max=None if count is None else int(count),
        rekey=None if rekey is None else parse_rekey_limit(rekey),
        algorithms=_algorithms(config),
        address_family=(config.get("AddressFamily") or "any").lower(),
        bind_address=config.get("BindAddress"),
        log_level=(config.get("LogLevel") or "").upper() or None,
        permit_remote_open=permit_remote_open,
    )


def _say_ignored(config: SSHConfig) -> None:
    """Keywords ssh knows and rfwd-client does not act on: named at debug level only."""
    for name, entry in config.ignored_names:
        if name == "PermitRemoteOpen":  # acted on (dynamic forwards)
            continue
        _log.debug("{where}: {name} is ignored by rfwd-client", where=entry.where, name=name)
    for entry in config.ignored:
        _log.debug(
            "{where}: unknown option {name} ignored (IgnoreUnknown)",
            where=entry.where,
            name=entry.args[0],
        )
    for name in _ACCEPTED_ONLY:
        accepted = config.entry(name)
        if accepted is not None:
            _log.debug(
                "{where}: {name} is accepted and has no effect in rfwd-client",
                where=accepted.where,
                name=name,
            )


def _permit_remote_open(entry: Entry | None) -> RemoteOpenPolicy:
    """C{PermitRemoteOpen}, checked as ssh does; an error names the file and line."""
    if entry is None:
        return RemoteOpenPolicy()
    try:
        return RemoteOpenPolicy.parse(entry.args)
    except ConfigError as e:
        raise ConfigError(f"{entry.where}: {e}") from None


def _flag(config: SSHConfig, name: str) -> bool:
    return (config.get(name) or "no").lower() in ("yes", "true")


def _agent(config: SSHConfig, entry: Entry | None) -> str | None:
    """C{IdentityAgent} with tokens expanded (C{none}, C{SSH_AUTH_SOCK}, C{$VAR} kept)."""
    if entry is None:
        return None
    value = entry.value
    if value.lower() == "none" or value == "SSH_AUTH_SOCK":
        return value
    if value.startswith("$") and not value.startswith("${"):
        return value
    return config.expand("IdentityAgent", entry)


def _known_hosts(config: SSHConfig, name: str, expand: bool) -> list[str] | None:
    entry = config.entry(name)
    if entry is None:
        return None
    if entry.args[0].lower() == "none":
        return []
    if not expand:
        return list(entry.args)
    return [config.expand(name, entry, arg) for arg in entry.args]


def _algorithms(config: SSHConfig) -> dict[str, list[bytes]]:
    """
    Each algorithm list given, applied to rfwd's.  Names ssh knows but rfwd does not implement
    are left out (said at debug level after C{+}, as a warning otherwise); a list left with
    none of rfwd's is an error naming what rfwd supports.
    """
    chosen: dict[str, list[bytes]] = {}
    for name, attribute, default in ALGORITHMS:
        entry = config.entry(name)
        if entry is None:
            continue
        spec = entry.value
        mode = spec[0] if spec[:1] in ("+", "-", "^") else ""
        names = spec[len(mode) :].split(",")
        if mode != "-":
            supported = [n for n in names if n.encode() in default]
            dropped = [n for n in names if n.encode() not in default]
            if dropped and supported:
                # The system-wide file often lists what every ssh implements (crypto
                # policies): not worth a warning at every start.
                system = entry.where.startswith("/etc/ssh/")
                (_log.debug if mode == "+" or system else _log.warn)(
                    "{where}: {name}: rfwd-client does not implement {dropped}; left out",
                    where=entry.where,
                    name=name,
                    dropped=",".join(dropped),
                )
                spec = mode + ",".join(supported)
            elif dropped and mode == "+":
                chosen[attribute] = list(default)
                continue
        try:
            chosen[attribute] = choose(name, spec, default)
        except ConfigError as e:
            raise ConfigError(f"{entry.where}: {e}") from None
    return chosen


# -G


def dump(settings: Settings, defaults: dict[str, object]) -> list[str]:
    """
    The lines C{ssh -G} prints for the keywords rfwd-client reads, in its order and spelling,
    with rfwd-client's values; C{defaults} are L{ClientConfig}'s for what was not said.
    """
    s, config = settings, settings.config

    def yes(value: bool) -> str:
        return "yes" if value else "no"

    def algorithms(attribute: str) -> str:
        chosen = s.algorithms.get(attribute) or defaults[attribute]
        assert isinstance(chosen, list)
        return ",".join(a.decode() for a in chosen)

    strict = {
        HostKeyPolicy.YES: "true",
        HostKeyPolicy.NO: "false",
        HostKeyPolicy.ACCEPT_NEW: "accept-new",
    }[s.strict_host_key_checking]
    interval = s.server_alive_interval
    if interval is None:
        interval = float(str(defaults["server_alive_interval"]))
    count = s.server_alive_count_max
    if count is None:
        count = int(str(defaults["server_alive_count_max"]))
    timeout = s.connect_timeout or float(str(defaults["connect_timeout"]))
    size, seconds = s.rekey or (DEFAULT_REKEY_BYTES, DEFAULT_REKEY_SECONDS)
    lines = [
        f"host {config.host_arg}",
        f"user {s.user}",
        f"hostname {s.host}",
        f"port {s.port}",
        f"addressfamily {s.address_family}",
        f"batchmode {yes(_flag(config, 'BatchMode'))}",
        f"checkhostip {yes(_flag(config, 'CheckHostIP'))}",
        f"exitonforwardfailure {yes(s.exit_on_forward_failure)}",
        f"hashknownhosts {yes(_flag(config, 'HashKnownHosts'))}",
        f"identitiesonly {yes(s.identities_only)}",
        f"stricthostkeychecking {strict}",
        f"connectionattempts {s.connection_attempts}",
        f"serveralivecountmax {count}",
        f"serveraliveinterval {_number(interval)}",
    ]
    if s.bind_address is not None:
        lines.append(f"bindaddress {s.bind_address}")
    lines += [
        f"ciphers {algorithms('ciphers')}",
        f"hostkeyalgorithms {algorithms('host_key_algorithms')}",
    ]
    if s.identity_agent is not None:
        lines.append(f"identityagent {s.identity_agent}")
    lines += [
        f"kexalgorithms {algorithms('kex_algorithms')}",
        f"loglevel {s.log_level or 'INFO'}",
        f"macs {algorithms('macs')}",
        f"pubkeyacceptedalgorithms {algorithms('pubkey_accepted_algorithms')}",
    ]
    lines += [f"remoteforward {_forward(f)}" for f in s.forwards]
    identities = [i.shown for i in s.identity_files] or [
        f"~/.ssh/{name}" for name in DEFAULT_IDENTITY_NAMES
    ]
    lines += [f"identityfile {path}" for path in identities]
    lines += [f"certificatefile {path}" for path in s.certificate_files]
    lines.append(f"globalknownhostsfile {' '.join(s.global_known_hosts) or 'none'}")
    user_known = s.user_known_hosts
    if user_known is None:
        known = defaults["known_hosts"]
        assert isinstance(known, list)
        user_known = [str(p) for p in known]
    lines.append(f"userknownhostsfile {' '.join(user_known) or 'none'}")
    lines.append(f"permitremoteopen {' '.join(s.permit_remote_open.words)}")
    lines.append(f"addkeystoagent {_add_keys(config.entry('AddKeysToAgent'))}")
    lines.append(f"connecttimeout {_number(timeout)}")
    lines.append(f"rekeylimit {size or 0} {_number(seconds or 0)}")
    return lines


def _number(value: float) -> str:
    return str(int(value)) if value == int(value) else str(value)


def _forward(forward: RemoteForward) -> str:
    """C{ssh -G}'s form: C{[bind]:port} or C{port}, then C{[host]:port}."""
    bind = forward.bind_address
    listen = str(forward.listen_port)
    if bind is not None:
        listen = f"[{bind or '*'}]:{listen}"
    if forward.listen_path is not None:
        listen = forward.listen_path
    if forward.host_path is not None:
        return f"{listen} {forward.host_path}"
    host = "socks" if forward.dynamic else forward.host  # ssh's name for a dynamic forward
    return f"{listen} [{host}]:{forward.host_port}"


def _add_keys(entry: Entry | None) -> str:
    if entry is None:
        return "false"
    first = entry.args[0].lower()
    names = {"yes": "true", "true": "true", "no": "false", "false": "false"}
    if len(entry.args) == 2:
        return f"confirm {convtime(entry.args[1])}"
    if first in names or first in ("ask", "confirm"):
        return names.get(first, first)
    return str(convtime(entry.args[0]))
