"""C{twistd rfwd-client}: the SSH client end (HostA), with ssh's -R syntax and -o names."""

from __future__ import annotations

import getpass
import os
import re
import sys
from dataclasses import fields, replace
from typing import Any, TextIO

from twisted.application.service import IService
from twisted.logger import Logger, LogLevel
from twisted.python import usage

from twisted_rfwd.allocator import tune_allocator
from twisted_rfwd.client.config import ClientConfig
from twisted_rfwd.client.identity import (
    EncryptedKey,
    Identity,
    default_identity_paths,
    load_identity,
    load_public_identity,
    load_user_certificate,
)
from twisted_rfwd.client.known_hosts import known_hosts_paths
from twisted_rfwd.client.service import TunnelService
from twisted_rfwd.client.ssh_config import CommandLine, Settings, dump, resolve
from twisted_rfwd.errors import ConfigError, KeyLoadError
from twisted_rfwd.protocol.ssh_config import Local, Sources
from twisted_rfwd.ssh.metrics import NO_METRICS
from twisted_rfwd.tap import parsing, sd_notify
from twisted_rfwd.tap._exit import ExitStatus
from twisted_rfwd.tap.logs import LoggedService, LogOptions
from twisted_rfwd.tap.metrics import MetricsService, PrometheusMetrics, metrics_endpoint

__all__ = ["Options", "makeService"]

_log = Logger()


class Options(LogOptions):
    synopsis = "[options] [-F FILE] [-G] -R [bind_address:]port:host:hostport [user@]host"
    longdesc = (
        "Connects to an SSH server and asks it to listen for remote forwards, like "
        "ssh -N -R: every connection to the server's port is relayed to host:hostport "
        "as seen from here.  Reads ~/.ssh/config and /etc/ssh/ssh_config as ssh does."
    )

    optParameters = [
        ["port", "p", None, "SSH port of the server [default: 22]."],
        [
            "config-file",
            "F",
            None,
            "ssh_config file to read instead of ~/.ssh/config and /etc/ssh/ssh_config "
            "('none': no file).",
        ],
        ["login", "l", None, "User to log in as [default: the local user]."],
        ["passphrase-file", None, None, "Passphrase of encrypted keys: the first line of PATH."],
        ["passphrase-env", None, None, "Passphrase of encrypted keys: environment variable NAME."],
        [
            "password-file",
            None,
            None,
            "Password (first line of PATH), tried if the server accepts no key; never prompts.",
        ],
        [
            "status-file",
            None,
            None,
            "Keep a JSON status (connection and forwards) in this file, replaced atomically.",
        ],
        [
            "metrics",
            None,
            None,
            "Serve Prometheus metrics over HTTP on this endpoint (tcp:9101; loopback unless it "
            "names an interface); needs twisted-rfwd[metrics].",
        ],
        ["reconnect-delay", None, "1", "Seconds before the first reconnection attempt."],
        ["reconnect-max-delay", None, "60", "Longest wait between attempts (backoff, jitter)."],
        ["drain-time", None, "10", "On stop, seconds to let open connections finish."],
    ]
    optFlags = [
        ["no-reconnect", None, "Exit (255) when the connection ends instead of reconnecting."],
        ["print-config", "G", "Print the effective configuration, as ssh -G does, and exit."],
    ]

    # Where -G prints, and where the configuration files are (tests replace these).
    stdout: TextIO = sys.stdout
    sources = Sources()

    def __init__(self) -> None:
        super().__init__()
        self["remote-forward"] = []
        self["identity"] = []
        self["ssh-options"] = []
        self.log_level_given = False

    def opt_verbose(self) -> None:
        """Log at debug level (the same as --log-level debug)."""
        super().opt_verbose()
        self.log_level_given = True

    opt_v = opt_verbose

    def opt_log_level(self, name: str) -> None:
        """Log at this level and above: critical, error, warn, info or debug."""
        super().opt_log_level(name)
        self.log_level_given = True

    def opt_remote_forward(self, spec: str) -> None:
        """[bind_address:]port:host:hostport, as ssh -R; repeatable."""
        self["remote-forward"].append(spec)

    opt_R = opt_remote_forward

    def opt_identity(self, path: str) -> None:
        """Private key file; repeatable [default: ~/.ssh/id_ed25519, id_ecdsa, id_rsa]."""
        self["identity"].append(path)

    opt_i = opt_identity

    def opt_option(self, option: str) -> None:
        """ssh_config option as Name=Value (before the files; the first value wins):
        HostName, Port, User, IdentityFile, RemoteForward, StrictHostKeyChecking,
        UserKnownHostsFile, ExitOnForwardFailure, ServerAliveInterval, ConnectTimeout...;
        options ssh knows and rfwd-client does not use are accepted and ignored."""
        self["ssh-options"].append(option)

    opt_o = opt_option

    def parseArgs(self, destination: str | None = None) -> None:
        if destination is None:
            raise usage.UsageError("no destination: give [user@]host")
        self["destination"] = destination

    def postOptions(self) -> None:
        try:
            if self["print-config"]:
                lines = dump(settings(self), _defaults())
                self.stdout.write("".join(line + "\n" for line in lines))
                self.stdout.flush()
                raise SystemExit(0)
            self["config"] = build_config(self)
            if self["metrics"] is not None:
                self["metrics"] = metrics_endpoint(self["metrics"])
        except ConfigError as e:
            raise usage.UsageError(str(e)) from None


def settings(options: Options) -> Settings:
    """The command line and the ssh_config files, resolved for the destination."""
    command = CommandLine(
        destination=options["destination"],
        options=list(options["ssh-options"]),
        forwards=list(options["remote-forward"]),
        identities=list(options["identity"]),
        port=parsing.port(options["port"]) if options["port"] else None,
        login=options["login"],
        config_file=options["config-file"],
    )
    sources = options.sources
    if command.config_file is not None:
        sources = replace(sources, config_file=command.config_file)
    return resolve(command, Local.current(getpass.getuser()), sources)


def build_config(options: Options) -> ClientConfig:
    """Turn the command line and ssh_config into a L{ClientConfig}, OpenSSH's precedence."""
    s = settings(options)
    if not s.forwards:
        raise ConfigError("nothing to forward: give at least one -R (or RemoteForward)")
    if s.log_level is not None and not options.log_level_given:
        options["log-level"] = _LOG_LEVELS[s.log_level]
    agent_socket = _agent_socket(s.identity_agent)
    password = _password(options["password-file"])
    config = ClientConfig(
        host=s.host,
        user=s.user,
        port=s.port,
        forwards=s.forwards,
        identities=_identities(
            [(i.path, i.required) for i in s.identity_files],
            _passphrase(options),
            agent=agent_socket is not None,
            password=password is not None,
        ),
        agent_socket=agent_socket,
        identities_only=s.identities_only,
        certificates=_certificates(
            [i.path for i in s.identity_files] or default_identity_paths(), s.certificate_paths
        ),
        password=password,
        strict_host_key_checking=s.strict_host_key_checking,
        exit_on_forward_failure=s.exit_on_forward_failure,
        connection_attempts=s.connection_attempts,
        address_family=s.address_family,
        bind_address=s.bind_address,
        status_file=options["status-file"],
        permit_remote_open=s.permit_remote_open,
        reconnect=not options["no-reconnect"],
        reconnect_initial_delay=parsing.seconds(options["reconnect-delay"], "--reconnect-delay"),
        reconnect_max_delay=parsing.seconds(
            options["reconnect-max-delay"], "--reconnect-max-delay"
        ),
        drain_time=parsing.seconds(options["drain-time"], "--drain-time"),
    )
    for name, chosen in s.algorithms.items():
        setattr(config, name, chosen)
    if s.connect_timeout:
        config.connect_timeout = s.connect_timeout
    if s.server_alive_interval is not None:
        config.server_alive_interval = s.server_alive_interval
    if s.server_alive_count_max is not None:
        config.server_alive_count_max = s.server_alive_count_max
    if s.rekey is not None:
        config.rekey_bytes, config.rekey_seconds = s.rekey
    if s.user_known_hosts is not None:
        config.known_hosts = s.user_known_hosts or [os.devnull]
    config.known_hosts = known_hosts_paths(config.known_hosts) + [
        os.path.expanduser(p) for p in s.global_known_hosts
    ]
    return config


# ssh's LogLevel names, for when neither -v nor --log-level is given.
_LOG_LEVELS = {
    "QUIET": LogLevel.critical,
    "FATAL": LogLevel.critical,
    "ERROR": LogLevel.error,
    "INFO": LogLevel.info,
    "VERBOSE": LogLevel.info,
    "DEBUG": LogLevel.debug,
    "DEBUG1": LogLevel.debug,
    "DEBUG2": LogLevel.debug,
    "DEBUG3": LogLevel.debug,
}


def _defaults() -> dict[str, object]:
    """L{ClientConfig}'s defaults, for C{-G} to print what was not said."""
    example = ClientConfig(host="", user="")
    return {f.name: getattr(example, f.name) for f in fields(example)}


def _identities(
    paths: list[tuple[str, bool]], passphrase: bytes | None, agent: bool, password: bool
) -> list[Identity]:
    """
    The key files, loaded (with the passphrase if encrypted).  With an agent, a file that is
    encrypted and has no passphrase keeps its public key, in case the agent holds it.  Key
    files named in ssh_config files may be missing (ssh skips them); the command line's may not.
    """
    if paths:
        loaded = []
        for path, required in paths:
            if not required and not os.path.exists(path):
                _log.debug("Skipping identity {path}: no such file", path=path)
                continue
            loaded.append(_load(path, passphrase, agent))
        if not loaded and not agent and not password:
            raise ConfigError(
                "no identity: none of the IdentityFile keys exists ("
                + ", ".join(path for path, _ in paths)
                + "); give -i KEYFILE, run ssh-agent or give --password-file"
            )
        return loaded
    found = []
    for path in default_identity_paths():
        try:
            found.append(_load(path, passphrase, agent))
        except KeyLoadError as e:
            _log.warn("Skipping identity: {error}", error=str(e))
    if not found and not agent and not password:
        raise ConfigError(
            "no identity: give -i KEYFILE, run ssh-agent or give --password-file "
            "(none of ~/.ssh/id_ed25519, id_ecdsa, id_rsa is usable)"
        )
    return found


def _certificates(key_paths: list[str], certificate_paths: list[str]) -> list[tuple[str, bytes]]:
    """
    User certificates: C{CertificateFile}s (which must exist, as in ssh), then C{KEY-cert.pub}
    beside each key file (if there is one).
    """
    found = [(path, load_user_certificate(path)) for path in certificate_paths]
    for key_path in key_paths:
        path = os.path.expanduser(key_path) + "-cert.pub"
        if not os.path.exists(path):
            continue
        try:
            found.append((path, load_user_certificate(path)))
        except KeyLoadError as e:
            _log.warn("Skipping certificate: {error}", error=str(e))
    return found


def _load(path: str, passphrase: bytes | None, agent: bool) -> Identity:
    try:
        return load_identity(path, passphrase)
    except EncryptedKey as encrypted:
        if not agent:
            raise
        try:
            return load_public_identity(path)
        except KeyLoadError:
            raise encrypted from None


def _agent_socket(value: str | None) -> str | None:
    """C{IdentityAgent} (default C{SSH_AUTH_SOCK}) as ssh reads it: the socket, or None."""
    if value is None or value == "SSH_AUTH_SOCK":
        return os.environ.get("SSH_AUTH_SOCK") or None
    if value.lower() == "none":
        return None
    if value.startswith("$") and not value.startswith("${"):
        return os.environ.get(value[1:]) or None  # ssh's older form: an unset variable, no agent

    def variable(match: re.Match[str]) -> str:
        found = os.environ.get(match.group(1))
        if not found:
            raise ConfigError(f"IdentityAgent: environment variable {match.group(1)} is not set")
        return found

    return os.path.expanduser(re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", variable, value))


def _passphrase(options: Options) -> bytes | None:
    """From --passphrase-file or --passphrase-env, kept only while the keys are loaded."""
    path, name = options["passphrase-file"], options["passphrase-env"]
    if path is not None and name is not None:
        raise ConfigError("give --passphrase-file or --passphrase-env, not both")
    if path is not None:
        return _first_line(path, "passphrase file")
    if name is not None:
        if name not in os.environ:
            raise ConfigError(f"--passphrase-env: environment variable {name} is not set")
        return os.fsencode(os.environ[name])
    return None


def _password(path: str | None) -> str | None:
    if path is None:
        return None
    try:
        return _first_line(path, "password file").decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"password file {path}: the password is not UTF-8") from None


def _first_line(path: str, what: str) -> bytes:
    """The first line of a secret's file, without its line ending."""
    try:
        with open(os.path.expanduser(path), "rb") as f:
            line = f.readline()
    except OSError as e:
        raise ConfigError(f"cannot read {what} {path}: {e.strerror or e}") from None
    if line.endswith(b"\n"):
        line = line[:-1]
        if line.endswith(b"\r"):
            line = line[:-1]
    return line


def makeService(options: Options) -> IService:
    from twisted.internet import reactor

    tune_allocator()

    r: Any = reactor
    status = ExitStatus(r)
    notifier = sd_notify.Notifier.from_environment(r)
    metrics = PrometheusMetrics("client") if options["metrics"] is not None else None
    tunnel = TunnelService(
        r,
        options["config"],
        lambda error: status.fail(str(error)),
        on_status=sd_notify.TunnelNotifier(notifier) if notifier.enabled else None,
        metrics=metrics or NO_METRICS,
    )
    service = LoggedService(tunnel, options)
    if metrics is not None:
        MetricsService(r, options["metrics"], metrics.registry, status.fail).setServiceParent(
            service
        )
    sd_notify.StoppingNotice(notifier).setServiceParent(service)
    return service
