"""C{twistd rfwd-client}: the SSH client end (HostA), with ssh's -R syntax and -o names."""

from __future__ import annotations

import getpass
import os
from typing import Any

from twisted.application.service import IService
from twisted.logger import Logger
from twisted.python import usage

from twisted_rfwd.algorithms import CIPHERS, KEY_EXCHANGES, MACS, choose
from twisted_rfwd.allocator import tune_allocator
from twisted_rfwd.client.config import ClientConfig, HostKeyPolicy, SSHOptions
from twisted_rfwd.client.identity import Identity, default_identity_paths, load_identity
from twisted_rfwd.client.service import TunnelService
from twisted_rfwd.errors import ConfigError, KeyLoadError
from twisted_rfwd.limits import parse_duration, parse_rekey_limit
from twisted_rfwd.spec import parse_remote_forward
from twisted_rfwd.tap._exit import ExitStatus

__all__ = ["Options", "makeService"]

_log = Logger()


class Options(usage.Options):
    synopsis = "[options] -R [bind_address:]port:host:hostport [user@]host"
    longdesc = (
        "Connects to an SSH server and asks it to listen for remote forwards, like "
        "ssh -N -R: every connection to the server's port is relayed to host:hostport "
        "as seen from here."
    )

    optParameters = [
        ["port", "p", None, "SSH port of the server [default: 22]."],
        ["login", "l", None, "User to log in as [default: the local user]."],
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

    def opt_o(self, option: str) -> None:
        """ssh option as Name=Value: StrictHostKeyChecking, UserKnownHostsFile,
        ExitOnForwardFailure, Port, User, IdentityFile, ConnectTimeout, RemoteForward,
        Ciphers, MACs, KexAlgorithms, ServerAliveInterval, ServerAliveCountMax, RekeyLimit."""
        try:
            self.ssh_options.add(option)
        except ConfigError as e:
            raise usage.UsageError(str(e)) from None

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
    port = _port(options["port"]) if options["port"] else o.number("Port", 1, 65535) or 22
    user = options["login"] or user_part or o.get("User") or getpass.getuser()
    timeout = o.number("ConnectTimeout", 1, 86400)
    known = o.get("UserKnownHostsFile")
    config = ClientConfig(
        host=host,
        user=user,
        port=port,
        forwards=forwards,
        identities=_identities(options["identity"] + o.get_all("IdentityFile")),
        strict_host_key_checking=HostKeyPolicy.parse(o.get("StrictHostKeyChecking") or "yes"),
        exit_on_forward_failure=bool(o.flag("ExitOnForwardFailure")),
        status_file=options["status-file"],
        reconnect=not options["no-reconnect"],
        reconnect_initial_delay=_seconds(options["reconnect-delay"], "--reconnect-delay"),
        reconnect_max_delay=_seconds(options["reconnect-max-delay"], "--reconnect-max-delay"),
        drain_time=_seconds(options["drain-time"], "--drain-time"),
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
    for option, field_name, default in (
        ("Ciphers", "ciphers", CIPHERS),
        ("MACs", "macs", MACS),
        ("KexAlgorithms", "kex_algorithms", KEY_EXCHANGES),
    ):
        value = o.get(option)
        if value is not None:
            setattr(config, field_name, choose(option, value, default))
    return config


def _seconds(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{what} must be a number of seconds, not '{text}'") from None
    if value < 0:
        raise ConfigError(f"{what} must not be negative")
    return value


def _port(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= 65535:
        raise ConfigError(f"bad port '{text}'")
    return int(text)


def _config_forward(value: str) -> str:
    """ssh_config's C{RemoteForward [bind:]port host:hostport} as a -R argument."""
    return ":".join(value.split())


def _identities(paths: list[str]) -> list[Identity]:
    if paths:
        return [load_identity(path) for path in paths]
    found = []
    for path in default_identity_paths():
        try:
            found.append(load_identity(path))
        except KeyLoadError as e:
            _log.warn("Skipping identity: {error}", error=str(e))
    if not found:
        raise ConfigError(
            "no identity: give -i KEYFILE (none of ~/.ssh/id_ed25519, id_ecdsa, id_rsa is usable)"
        )
    return found


def makeService(options: Options) -> IService:
    from twisted.internet import reactor

    tune_allocator()

    r: Any = reactor
    status = ExitStatus(r)
    return TunnelService(r, options["config"], lambda error: status.fail(str(error)))
