"""C{twistd rfwd-server}: the SSH server end (HostB)."""

from __future__ import annotations

import sys
from dataclasses import astuple, replace
from pathlib import Path
from typing import Any, NoReturn

from twisted.application.service import IService
from twisted.conch.ssh.keys import Key
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.logger import Logger
from twisted.python import usage

from twisted_rfwd.allocator import tune_allocator
from twisted_rfwd.errors import ConfigError
from twisted_rfwd.protocol.policy import GatewayPorts, ListenPolicy
from twisted_rfwd.protocol.sshd_config import (
    ConfigFileError,
    Connection,
    SshdConfig,
    parse_test_spec,
)
from twisted_rfwd.protocol.units import parse_rekey_limit
from twisted_rfwd.server.admission import MaxStartups, parse_per_source_max_startups
from twisted_rfwd.server.config import ServerConfig
from twisted_rfwd.server.config_file import (
    DEFAULT_PORT,
    MatchRules,
    SeveralEndpoints,
    listen_endpoints,
    load_config_file,
    server_fields,
    sshd_level_name,
    sshd_test_lines,
    system_groups,
)
from twisted_rfwd.server.descriptors import raise_nofile_limit
from twisted_rfwd.server.factory import ForwardingServerFactory
from twisted_rfwd.server.host_keys import (
    DEFAULT_KEY_NAME,
    default_state_directory,
    ensure_host_key,
    host_key_tables,
    load_host_certificate,
    load_host_key,
)
from twisted_rfwd.server.service import ServerService
from twisted_rfwd.server.status import ServerStatus, StatusFileService
from twisted_rfwd.ssh.metrics import combine
from twisted_rfwd.tap import parsing, sd_notify
from twisted_rfwd.tap._exit import ExitStatus
from twisted_rfwd.tap.logs import LEVELS, LoggedService, LogOptions
from twisted_rfwd.tap.metrics import MetricsService, PrometheusMetrics, metrics_endpoint

__all__ = ["Options", "makeService"]


class ConfigFileOptions(usage.Options):
    """
    C{--config FILE}, C{-T} and C{-C}; and which options were given on the command line,
    since those override the file (L{usage.Options} keeps only the values, defaults included).
    """

    optFlags = [
        [
            "print-config",
            "T",
            "Print the effective configuration as sshd -T does (keyword, value), and exit.",
        ]
    ]
    optParameters = [
        [
            "config",
            None,
            None,
            "An sshd_config-style file (see examples/rfwd-server.conf); options given on the "
            "command line override it.  No file is read unless named.",
        ],
        [
            "connection",
            "C",
            None,
            "With -T: evaluate the Match blocks for this connection, as sshd -C: "
            "user=U,addr=A,host=H,laddr=L,lport=P.",
        ],
    ]

    def __init__(self) -> None:
        super().__init__()
        self.given: set[str] = set()
        for name, handler in list(self._dispatch.items()):
            self._dispatch[name] = _Recorded(name, handler, self.given)

    def read_config_file(self) -> None:
        """
        Read C{--config} (and check C{-T}/C{-C}).  A bad line ends the process at once, as
        sshd does: one line C{FILE line N: reason} on stderr and exit status 255 (twistd would
        print its whole usage text and exit 1).
        """
        try:
            _read_config_file(self)
        except ConfigError as e:
            _exit_at_start(str(e))


class Options(ConfigFileOptions, LogOptions):
    synopsis = "[options]"
    longdesc = (
        "An SSH server that does remote port forwarding (ssh -R) and nothing else. "
        "Clients log in with public keys listed in their authorized_keys."
    )

    optParameters = [
        [
            "listen",
            None,
            "tcp:2222",
            "Where to serve SSH: a Twisted server endpoint string, or a port number (tcp:PORT).",
        ],
        [
            "authorized-keys",
            None,
            "%h/.ssh/authorized_keys",
            "authorized_keys file; %u is the user name, %h their home directory.",
        ],
        [
            "state-dir",
            None,
            None,
            f"Where the generated host key is kept [default: {default_state_directory()}].",
        ],
        [
            "gateway-ports",
            None,
            "no",
            "sshd's GatewayPorts: no (loopback only), yes, or clientspecified.",
        ],
        [
            "client-alive-interval",
            None,
            "15",
            "sshd's ClientAliveInterval: probe a silent client after this long (0: never).",
        ],
        [
            "client-alive-count-max",
            None,
            "3",
            "sshd's ClientAliveCountMax: unanswered probes before disconnecting.",
        ],
        ["login-grace-time", None, "120", "sshd's LoginGraceTime: time allowed to log in."],
        ["rekey-limit", None, "1G 1h", "sshd's RekeyLimit: re-exchange keys after this much."],
        ["drain-time", None, "10", "On stop, seconds to let forwarded connections finish."],
        ["ciphers", None, None, "sshd's Ciphers: a list, or +list, -list, ^list on the default."],
        ["macs", None, None, "sshd's MACs, in the same form."],
        ["kex-algorithms", None, None, "sshd's KexAlgorithms, in the same form."],
        [
            "permit-listen",
            None,
            "any",
            "sshd's PermitListen: any, none, or a space-separated list of [host:]port.",
        ],
        [
            "max-startups",
            None,
            "10:30:100",
            "sshd's MaxStartups start:rate:full (or N): drop new unauthenticated connections "
            "beyond start with probability rate%, rising to 100% at full.",
        ],
        [
            "per-source-max-startups",
            None,
            "none",
            "sshd's PerSourceMaxStartups: unauthenticated connections per source address.",
        ],
        ["max-auth-tries", None, "6", "sshd's MaxAuthTries: failed logins per connection."],
        ["max-forwards-per-connection", None, "100", "Forwards one SSH connection may hold."],
        ["max-forwards-per-user", None, "200", "Forwards one user name may hold, all connections."],
        [
            "max-channels-per-connection",
            None,
            "16384",
            "Open channels (forwarded connections) per SSH connection (OpenSSH's own ceiling).",
        ],
        [
            "sessions",
            None,
            "yes",
            "yes: ssh without -N gets a session that runs nothing and holds the forwards open "
            "until the user leaves; no: session channels are refused (ssh -N only).",
        ],
        ["max-sessions", None, "10", "sshd's MaxSessions: open sessions per SSH connection."],
        [
            "password-hashes",
            None,
            None,
            "File of bcrypt password hashes, one user:$2b$... a line; add a user with "
            "python -m twisted_rfwd.server.passwd FILE USER.",
        ],
        [
            "password-authentication",
            None,
            "no",
            "sshd's PasswordAuthentication: yes checks passwords against --password-hashes.",
        ],
        [
            "kbd-interactive-authentication",
            None,
            "no",
            "sshd's KbdInteractiveAuthentication: yes asks for that password with one prompt.",
        ],
        [
            "trusted-user-ca-keys",
            None,
            None,
            "sshd's TrustedUserCAKeys: a file of CA public keys whose user certificates log in "
            "when the user name is one of their principals.",
        ],
        [
            "authorized-principals-file",
            None,
            None,
            "sshd's AuthorizedPrincipalsFile: the principals (one a line; %u user, %h home) a "
            "TrustedUserCAKeys certificate must hold one of, instead of the user name.",
        ],
        [
            "revoked-keys",
            None,
            None,
            "sshd's RevokedKeys: public keys (one a line) or a KRL (ssh-keygen -k) refused "
            "as keys, CAs and certificates.",
        ],
        [
            "status-file",
            None,
            None,
            "Keep a JSON status (connections and their forwards) in this file, replaced "
            "atomically, at most once a second.",
        ],
        [
            "metrics",
            None,
            None,
            "Serve Prometheus metrics over HTTP on this endpoint (tcp:9100; loopback unless it "
            "names an interface); needs twisted-rfwd[metrics].",
        ],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["host-key"] = []
        self["host-certificate"] = []

    def opt_host_certificate(self, path: str) -> None:
        """sshd's HostCertificate: a host certificate (ssh-keygen -s CA -h) for one of the
        host keys, offered with it; repeatable."""
        self["host-certificate"].append(path)

    def opt_host_key(self, path: str) -> None:
        """Private host key (OpenSSH format); repeatable.  Default: one generated in
        the state directory."""
        self["host-key"].append(path)

    def postOptions(self) -> None:
        self.read_config_file()
        try:
            self["listen"] = listen_endpoint(self["listen"])
            self["host-keys"] = [load_host_key(path) for path in self["host-key"]]
            self["host-certificates"] = [
                load_host_certificate(path) for path in self["host-certificate"]
            ]
            self["gateway-ports-policy"] = GatewayPorts.parse(self["gateway-ports"])
            self["permit-listen-policy"] = ListenPolicy.parse([self["permit-listen"]])
            self["timing"] = {
                "client_alive_interval": parsing.seconds(
                    self["client-alive-interval"], "--client-alive-interval"
                ),
                "client_alive_count_max": parsing.count(
                    self["client-alive-count-max"], "--client-alive-count-max"
                ),
                "login_grace_time": parsing.seconds(self["login-grace-time"], "--login-grace-time"),
                "drain_time": parsing.seconds(self["drain-time"], "--drain-time"),
            }
            rekey_bytes, rekey_seconds = parse_rekey_limit(self["rekey-limit"])
            self["timing"]["rekey_bytes"] = rekey_bytes
            self["timing"]["rekey_seconds"] = rekey_seconds
            self["algorithms"] = parsing.algorithms(lambda _, field: self[field.replace("_", "-")])
            self["limits"] = _limits(self)
            self["logins"] = _logins(self)
            if self["metrics"] is not None:
                self["metrics"] = metrics_endpoint(self["metrics"])
        except ConfigError as e:
            raise usage.UsageError(str(e)) from None


_log = Logger()


def listen_endpoint(text: str) -> str:
    """
    C{--listen}: a server endpoint string, checked here so that a mistake is one line, not a
    traceback when the service starts; a bare port number means C{tcp:PORT}.
    """
    description = text.strip()
    if description.isascii() and description.isdigit():
        description = f"tcp:{description}"
    kind, _, rest = description.partition(":")
    port = rest.split(":", 1)[0]
    numeric = port.isascii() and port.isdigit() and int(port) <= 65535
    if kind.lower() in ("tcp", "tcp6") and "=" not in port and not numeric:
        raise ConfigError(f"--listen '{text}': bad port '{port}'")
    try:
        # Parsed only: the endpoint is made again, with the reactor, by makeService.
        serverFromString(_PARSE_ONLY, description)
    except (ValueError, TypeError, KeyError, IndexError, ImportError, OSError) as e:
        reason = " ".join(str(e).split()) or type(e).__name__
        raise ConfigError(f"--listen '{text}' is not a server endpoint string: {reason}") from None
    return description


# Stands in for the reactor while an endpoint string is only parsed (nothing is listening).
_PARSE_ONLY: Any = object()


def _positive(options: usage.Options, name: str) -> int:
    return parsing.positive(options[name], f"--{name}")


def _limits(options: usage.Options) -> dict[str, Any]:
    """The admission limits, as ServerConfig fields."""
    return {
        "max_startups": astuple(MaxStartups.parse(options["max-startups"], "--max-startups")),
        "per_source_max_startups": parse_per_source_max_startups(
            options["per-source-max-startups"], "--per-source-max-startups"
        ),
        "max_auth_tries": _positive(options, "max-auth-tries"),
        "max_forwards_per_connection": _positive(options, "max-forwards-per-connection"),
        "max_forwards_per_user": _positive(options, "max-forwards-per-user"),
        "max_channels_per_connection": _positive(options, "max-channels-per-connection"),
        "sessions": parsing.yes_no(options["sessions"], "--sessions"),
        "max_sessions": parsing.count(options["max-sessions"], "--max-sessions"),
    }


def _logins(options: usage.Options) -> dict[str, Any]:
    """The password settings, as ServerConfig fields."""
    return {
        "password_hashes": options["password-hashes"],
        "trusted_user_ca_keys": options["trusted-user-ca-keys"],
        "authorized_principals_file": options["authorized-principals-file"],
        "revoked_keys": options["revoked-keys"],
        "password_authentication": parsing.yes_no(
            options["password-authentication"], "--password-authentication"
        ),
        "kbd_interactive_authentication": parsing.yes_no(
            options["kbd-interactive-authentication"], "--kbd-interactive-authentication"
        ),
    }


def makeService(options: Options) -> IService:
    from twisted.internet import reactor

    tune_allocator()

    host_keys: list[Key] = options["host-keys"]
    if not host_keys and not options["print-config"]:
        state = Path(options["state-dir"]) if options["state-dir"] else default_state_directory()
        key, path, generated = ensure_host_key(state)
        host_keys = [key]
        if generated:
            _log.info("Generated a new ed25519 host key in {path}", path=str(path))
        else:
            _log.info("Using host key {path}", path=str(path))
    try:
        host_key_tables(host_keys, options["host-certificates"])
    except ValueError as e:
        _exit_at_start(f"--host-certificate: {e}")
    config = ServerConfig(
        host_keys=host_keys,
        host_certificates=options["host-certificates"],
        authorized_keys=options["authorized-keys"],
        gateway_ports=options["gateway-ports-policy"],
        permit_listen=options["permit-listen-policy"],
        **options["algorithms"],
        **options["timing"],
        **options["limits"],
        **options["logins"],
    )
    config = _with_config_file(config, options)
    soft, hard = raise_nofile_limit()
    _log.info("File descriptor limit (RLIMIT_NOFILE): {soft} (hard {hard})", soft=soft, hard=hard)
    r: Any = reactor
    status = ExitStatus(r)
    factory = ForwardingServerFactory(r, config, match=options["match-rules"])
    endpoint = _listen_endpoint(r, options["listen-endpoints"] or [options["listen"]])
    notifier = sd_notify.Notifier.from_environment(r)
    server: IService = ServerService(
        endpoint,
        factory,
        status.fail,
        on_listening=lambda port: sd_notify.server_listening(notifier, port),
    )
    metrics = PrometheusMetrics("server") if options["metrics"] is not None else None
    server_status = None
    if options["status-file"] is not None:
        server_status = ServerStatus(r, factory.connections, options["status-file"])
        server = StatusFileService(server, server_status)
    factory.metrics = combine(metrics, server_status)
    service = LoggedService(server, options)
    if metrics is not None:
        MetricsService(r, options["metrics"], metrics.registry, status.fail).setServiceParent(
            service
        )
    sd_notify.StoppingNotice(notifier).setServiceParent(service)
    return service


# --- the configuration file, -T and -C ---------------------------------------------------------

# Options that set other ServerConfig fields (or file settings) than their own name says.
_OPTION_FIELDS: dict[str, tuple[str, ...]] = {
    "host-key": ("host_keys", "host_key_files"),
    "host-certificate": ("host_certificates", "host_certificate_files"),
    "rekey-limit": ("rekey_bytes", "rekey_seconds"),
    "listen": ("ports", "listen_addresses"),
    "log-level": ("log_level",),
    "verbose": ("log_level",),
}
# File settings ServerConfig has no field for yet (they apply once it has).
NOT_YET_FIELDS: dict[str, str] = {}
# sshd's LogLevel names to rfwd's levels (VERBOSE adds key fingerprints, which info has).
_SSHD_LEVELS = {
    "QUIET": "critical",
    "FATAL": "critical",
    "ERROR": "error",
    "INFO": "info",
    "VERBOSE": "info",
}


class _Recorded:
    """An option handler that notes its option was given before it runs."""

    def __init__(self, name: str, handler: Any, given: set[str]) -> None:
        self.name = name
        self.handler = handler
        self.given = given

    def __call__(self, name: str, value: Any) -> None:
        self.given.add(self.name)
        if isinstance(self.handler, usage.CoerceParameter):
            self.handler.dispatch(name, value)
        else:
            self.handler(name, value)


def _exit_at_start(message: str) -> NoReturn:
    """sshd's way with a configuration it cannot use: one line, exit status 255."""
    print(message, file=sys.stderr)
    raise SystemExit(255)


def _read_config_file(options: ConfigFileOptions) -> None:
    """Fill in the options the rest of the plugin reads from C{--config}, C{-T} and C{-C}."""
    if options["connection"] is not None and not options["print-config"]:
        raise ConfigError("-C needs -T: it names the connection -T evaluates Match blocks for")
    options["test-connection"] = (
        parse_test_spec(options["connection"]) if options["connection"] is not None else None
    )
    pinned: set[str] = set()
    for name in options.given:
        pinned.update(_OPTION_FIELDS.get(name, (name.replace("-", "_"),)))
    options["pinned"] = frozenset(pinned)
    options["config-model"] = None
    options["config-fields"] = {}
    options["match-rules"] = None
    options["listen-endpoints"] = None
    options["listen-ports"] = []
    if options["config"] is None:
        return
    model = load_config_file(options["config"])
    options["config-model"] = model
    for warning in model.warnings:
        if options["print-config"]:
            print(warning, file=sys.stderr)
        else:
            _log.warn("{warning}", warning=warning)
    values = model.global_values()
    options["config-fields"] = server_fields(values, pinned)
    for key, name in NOT_YET_FIELDS.items():
        if key in values and key not in options["config-fields"] and not options["print-config"]:
            _log.warn("{name} is checked and shown by -T, but not enforced yet", name=name)
    if any(setting.match is not None for setting in model.settings):
        options["match-rules"] = MatchRules(model, pinned)
    ports, addresses = values.get("ports", []), values.get("listen_addresses", [])
    if "listen" not in options.given and (ports or addresses):
        assert isinstance(ports, list) and isinstance(addresses, list)
        options["listen-endpoints"] = listen_endpoints(ports, addresses)
        options["listen-ports"] = ports or [DEFAULT_PORT]
    if "host-key" not in options.given:
        for setting in model.settings:
            if setting.keyword.name == "HostKey":
                assert isinstance(setting.value, list)
                try:
                    load_host_key(setting.value[0])
                except ConfigError as e:
                    raise ConfigFileError(setting.where, str(e)) from None
                options["host-key"].extend(setting.value)
    if "host-certificate" not in options.given:
        for setting in model.settings:
            if setting.keyword.name == "HostCertificate":
                assert isinstance(setting.value, list)
                try:
                    load_host_certificate(setting.value[0])
                except ConfigError as e:
                    raise ConfigFileError(setting.where, str(e)) from None
                options["host-certificate"].extend(setting.value)
    level = values.get("log_level")
    if isinstance(level, str) and "log_level" not in pinned:
        options["log-level"] = LEVELS[_SSHD_LEVELS.get(level, "debug")]


def _with_config_file(config: ServerConfig, options: usage.Options) -> ServerConfig:
    """C{config} (the command line's) with the file's settings under it; C{-T} prints it."""
    config = replace(config, **options["config-fields"])
    if options["print-config"]:
        try:
            lines = _test_lines(config, options)
        except ConfigError as e:
            _exit_at_start(str(e))
        print("\n".join(lines))
        raise SystemExit(0)
    return config


def _test_lines(config: ServerConfig, options: usage.Options) -> list[str]:
    """C{-T}'s lines: the Match blocks evaluated for C{-C}'s connection, or for none."""
    model: SshdConfig | None = options["config-model"]
    spec: Connection = options["test-connection"] or Connection()
    values: dict[str, object] = {}
    if model is not None:
        groups = (system_groups(spec.user) or ()) if spec.user and model.needs_groups else ()
        connection = replace(spec, groups=groups)
        config = MatchRules(model, options["pinned"]).apply(config, connection)
        values = model.values(connection)
    level = values.get("log_level")
    if not isinstance(level, str) or "log_level" in options["pinned"]:
        level = sshd_level_name(options["log-level"].name)
    paths = list(options["host-key"])
    if not paths:
        state = Path(options["state-dir"]) if options["state-dir"] else default_state_directory()
        paths = [str(state / DEFAULT_KEY_NAME)]
    return sshd_test_lines(
        config,
        endpoints=options["listen-endpoints"] or [options["listen"]],
        ports=options["listen-ports"],
        host_key_paths=paths,
        host_certificate_paths=list(options["host-certificate"]),
        log_level=level,
        values=values,
    )


def _listen_endpoint(reactor: Any, descriptions: list[str]) -> IStreamServerEndpoint:
    """One endpoint, or one that listens on each of several (several ListenAddress or Port)."""
    endpoints = [serverFromString(reactor, description) for description in descriptions]
    return endpoints[0] if len(endpoints) == 1 else SeveralEndpoints(endpoints)
