"""C{twistd rfwd-server}: the SSH server end (HostB)."""

from __future__ import annotations

from dataclasses import astuple
from pathlib import Path
from typing import Any

from twisted.application.service import IService
from twisted.conch.ssh.keys import Key
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger
from twisted.python import usage

from twisted_rfwd.allocator import tune_allocator
from twisted_rfwd.errors import ConfigError
from twisted_rfwd.protocol.policy import GatewayPorts, ListenPolicy
from twisted_rfwd.protocol.units import parse_rekey_limit
from twisted_rfwd.server.admission import MaxStartups, parse_per_source_max_startups
from twisted_rfwd.server.config import ServerConfig
from twisted_rfwd.server.descriptors import raise_nofile_limit
from twisted_rfwd.server.factory import ForwardingServerFactory
from twisted_rfwd.server.host_keys import default_state_directory, ensure_host_key, load_host_key
from twisted_rfwd.server.service import ServerService
from twisted_rfwd.tap import parsing
from twisted_rfwd.tap._exit import ExitStatus
from twisted_rfwd.tap.logs import LoggedService, LogOptions

__all__ = ["Options", "makeService"]


class Options(LogOptions):
    synopsis = "[options]"
    longdesc = (
        "An SSH server that does remote port forwarding (ssh -R) and nothing else. "
        "Clients log in with public keys listed in their authorized_keys."
    )

    optParameters = [
        ["listen", None, "tcp:2222", "Where to serve SSH (a Twisted server endpoint string)."],
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
    ]

    def __init__(self) -> None:
        super().__init__()
        self["host-key"] = []

    def opt_host_key(self, path: str) -> None:
        """Private host key (OpenSSH format); repeatable.  Default: one generated in
        the state directory."""
        self["host-key"].append(path)

    def postOptions(self) -> None:
        try:
            self["host-keys"] = [load_host_key(path) for path in self["host-key"]]
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
        except ConfigError as e:
            raise usage.UsageError(str(e)) from None


_log = Logger()


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
    }


def makeService(options: Options) -> IService:
    from twisted.internet import reactor

    tune_allocator()

    host_keys: list[Key] = options["host-keys"]
    if not host_keys:
        state = Path(options["state-dir"]) if options["state-dir"] else default_state_directory()
        key, path, generated = ensure_host_key(state)
        host_keys = [key]
        if generated:
            _log.info("Generated a new ed25519 host key in {path}", path=str(path))
        else:
            _log.info("Using host key {path}", path=str(path))
    config = ServerConfig(
        host_keys=host_keys,
        authorized_keys=options["authorized-keys"],
        gateway_ports=options["gateway-ports-policy"],
        permit_listen=options["permit-listen-policy"],
        **options["algorithms"],
        **options["timing"],
        **options["limits"],
    )
    soft, hard = raise_nofile_limit()
    _log.info("File descriptor limit (RLIMIT_NOFILE): {soft} (hard {hard})", soft=soft, hard=hard)
    r: Any = reactor
    status = ExitStatus(r)
    factory = ForwardingServerFactory(r, config)
    endpoint = serverFromString(r, options["listen"])
    return LoggedService(ServerService(endpoint, factory, status.fail), options)
