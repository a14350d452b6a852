"""C{twistd rfwd-client}: the SSH client end (HostA), with ssh's -R syntax and -o names."""

from __future__ import annotations

import getpass
import os
import re
from typing import Any

from twisted.application.service import IService
from twisted.logger import Logger
from twisted.python import usage

from twisted_rfwd.allocator import tune_allocator
from twisted_rfwd.client.config import ClientConfig, HostKeyPolicy, SSHOptions
from twisted_rfwd.client.identity import (
    EncryptedKey,
    Identity,
    default_identity_paths,
    load_identity,
    load_public_identity,
)
from twisted_rfwd.client.service import TunnelService
from twisted_rfwd.errors import ConfigError, KeyLoadError
from twisted_rfwd.protocol.spec import parse_remote_forward
from twisted_rfwd.protocol.units import parse_duration, parse_rekey_limit
from twisted_rfwd.tap import parsing
from twisted_rfwd.tap._exit import ExitStatus
from twisted_rfwd.tap.logs import LoggedService, LogOptions

__all__ = ["Options", "makeService"]

_log = Logger()


class Options(LogOptions):
    synopsis = "[options] -R [bind_address:]port:host:hostport [user@]host"
    longdesc = (
        "Connects to an SSH server and asks it to listen for remote forwards, like "
        "ssh -N -R: every connection to the server's port is relayed to host:hostport "
        "as seen from here."
    )

    optParameters = [
        ["port", "p", None, "SSH port of the server [default: 22]."],
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
        ["reconnect-delay", None, "1", "Seconds before the first reconnection attempt."],
        ["reconnect-max-delay", None, "60", "Longest wait between attempts (backoff, jitter)."],
        ["drain-time", None, "10", "On stop, seconds to let open connections finish."],
    ]
    optFlags = [
        ["no-reconnect", None, "Exit (255) when the connection ends instead of reconnecting."],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["remote-forward"] = []
        self["identity"] = []
        self.ssh_options = SSHOptions()

    def opt_remote_forward(self, spec: str) -> None:
        """[bind_address:]port:host:hostport, as ssh -R; repeatable."""
        self["remote-forward"].append(spec)

    opt_R = opt_remote_forward

    def opt_identity(self, path: str) -> None:
        """Private key file; repeatable [default: ~/.ssh/id_ed25519, id_ecdsa, id_rsa]."""
        self["identity"].append(path)

    opt_i = opt_identity

    def opt_option(self, option: str) -> None:
        """ssh option as Name=Value: StrictHostKeyChecking, UserKnownHostsFile,
        ExitOnForwardFailure, Port, User, IdentityFile, ConnectTimeout, RemoteForward,
        Ciphers, MACs, KexAlgorithms, ServerAliveInterval, ServerAliveCountMax, RekeyLimit,
        IdentityAgent, IdentitiesOnly."""
        try:
            self.ssh_options.add(option)
        except ConfigError as e:
            raise usage.UsageError(str(e)) from None

    opt_o = opt_option

    def parseArgs(self, destination: str | None = None) -> None:
        if destination is None:
            raise usage.UsageError("no destination: give [user@]host")
        self["destination"] = destination

    def postOptions(self) -> None:
        try:
            self["config"] = build_config(self)
        except ConfigError as e:
            raise usage.UsageError(str(e)) from None


def build_config(options: Options) -> ClientConfig:
    """Turn the command line into a L{ClientConfig}, OpenSSH's precedence included."""
    o = options.ssh_options
    user_part, _, host = options["destination"].rpartition("@")
    host = host.strip("[]")
    if not host:
        raise ConfigError(f"no host in destination '{options['destination']}'")
    forwards = [parse_remote_forward(spec) for spec in options["remote-forward"]]
    forwards += [parse_remote_forward(_config_forward(v)) for v in o.get_all("RemoteForward")]
    if not forwards:
        raise ConfigError("nothing to forward: give at least one -R")
    port = parsing.port(options["port"]) if options["port"] else o.number("Port", 1, 65535) or 22
    user = options["login"] or user_part or o.get("User") or getpass.getuser()
    timeout = o.number("ConnectTimeout", 1, 86400)
    known = o.get("UserKnownHostsFile")
    agent_socket = _agent_socket(o.get("IdentityAgent"))
    password = _password(options["password-file"])
    config = ClientConfig(
        host=host,
        user=user,
        port=port,
        forwards=forwards,
        identities=_identities(
            options["identity"] + o.get_all("IdentityFile"),
            _passphrase(options),
            agent=agent_socket is not None,
            password=password is not None,
        ),
        agent_socket=agent_socket,
        identities_only=bool(o.flag("IdentitiesOnly")),
        password=password,
        strict_host_key_checking=HostKeyPolicy.parse(o.get("StrictHostKeyChecking") or "yes"),
        exit_on_forward_failure=bool(o.flag("ExitOnForwardFailure")),
        status_file=options["status-file"],
        reconnect=not options["no-reconnect"],
        reconnect_initial_delay=parsing.seconds(options["reconnect-delay"], "--reconnect-delay"),
        reconnect_max_delay=parsing.seconds(
            options["reconnect-max-delay"], "--reconnect-max-delay"
        ),
        drain_time=parsing.seconds(options["drain-time"], "--drain-time"),
        **parsing.algorithms(lambda name, _: o.get(name)),
    )
    if timeout:
        config.connect_timeout = float(timeout)
    interval = o.get("ServerAliveInterval")
    if interval is not None:
        config.server_alive_interval = parse_duration(interval, "ServerAliveInterval")
    count = o.number("ServerAliveCountMax", 0, 1000)
    if count is not None:
        config.server_alive_count_max = count
    rekey = o.get("RekeyLimit")
    if rekey is not None:
        config.rekey_bytes, config.rekey_seconds = parse_rekey_limit(rekey)
    if known:
        config.known_hosts = [os.path.expanduser(p) for p in known.split()]
    return config


def _config_forward(value: str) -> str:
    """ssh_config's C{RemoteForward [bind:]port host:hostport} as a -R argument."""
    return ":".join(value.split())


def _identities(
    paths: list[str], passphrase: bytes | None, agent: bool, password: bool
) -> list[Identity]:
    """
    The key files, loaded (with the passphrase if encrypted).  With an agent, a file that is
    encrypted and has no passphrase keeps its public key, in case the agent holds it.
    """
    if paths:
        return [_load(path, passphrase, agent) for path in paths]
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
    tunnel = TunnelService(r, options["config"], lambda error: status.fail(str(error)))
    return LoggedService(tunnel, options)
