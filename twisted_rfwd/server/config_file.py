"""
rfwd-server's configuration file, on the server's side: reading it from disk, turning its
values into L{ServerConfig} fields, the Match blocks as a per-connection hook for
L{ForwardingServerFactory}, the listening addresses, and C{-T}'s lines.

The syntax and the Match rules are in L{twisted_rfwd.protocol.sshd_config}.
"""

from __future__ import annotations

import dataclasses
import glob
import os
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.internet.interfaces import IListeningPort, IProtocolFactory, IStreamServerEndpoint
from twisted.logger import Logger
from zope.interface import implementer

from twisted_rfwd.protocol.addresses import describe_address, host_port
from twisted_rfwd.protocol.algorithms import PUBLIC_KEY_ALGORITHMS
from twisted_rfwd.protocol.policy import GatewayPorts, ListenPolicy
from twisted_rfwd.protocol.sshd_config import (
    Connection,
    ListenAddress,
    SshdConfig,
    parse_config,
)
from twisted_rfwd.server.config import ServerConfig
from twisted_rfwd.server.system_users import system_groups

__all__ = [
    "DEFAULT_PORT",
    "LocalFiles",
    "MatchRules",
    "SeveralEndpoints",
    "listen_endpoints",
    "load_config_file",
    "server_fields",
    "sshd_test_lines",
    "system_groups",
]

_log = Logger()

# rfwd-server's port when neither --listen nor Port says (sshd's is 22).
DEFAULT_PORT = 2222

_FIELDS = frozenset(f.name for f in dataclasses.fields(ServerConfig))


def _groups_or_none(user: str) -> tuple[str, ...]:
    """For Match Group: a login name that is not a system user has no groups."""
    return system_groups(user) or ()


class LocalFiles:
    """The file system, for the parser: C{~} is the home directory, as in sshd's Include."""

    def read_text(self, path: str) -> str:
        with open(os.path.expanduser(path), encoding="utf-8") as f:
            return f.read()

    def glob(self, pattern: str) -> list[str]:
        return sorted(glob.glob(os.path.expanduser(pattern)))


def load_config_file(path: str) -> SshdConfig:
    """Read C{path} and what it includes; L{ConfigError} (C{FILE line N: ...}) if unusable."""
    return parse_config(path, LocalFiles())


def server_fields(values: Mapping[str, object], pinned: Collection[str] = ()) -> dict[str, Any]:
    """The C{values} that are L{ServerConfig} fields, except those C{pinned} (given otherwise)."""
    return {k: v for k, v in values.items() if k in _FIELDS and k not in pinned}


class MatchRules:
    """
    The file's Match blocks, as the per-connection hook of L{ForwardingServerFactory}: called
    once the user is known, it returns the connection's L{ServerConfig}.  Fields in C{pinned}
    (given on the command line) keep their value: the command line overrides the whole file.
    """

    def __init__(
        self,
        config: SshdConfig,
        pinned: Collection[str] = (),
        groups: Any = _groups_or_none,
    ) -> None:
        self.config = config
        self.pinned = frozenset(pinned)
        self._groups = groups

    def connection(
        self,
        user: str | None,
        address: str | None,
        local_address: str | None,
        local_port: int | None,
        host: str | None = None,
    ) -> Connection:
        """A L{Connection}, with the user's groups looked up if a Match block needs them."""
        groups = tuple(self._groups(user)) if user and self.config.needs_groups else ()
        return Connection(
            user, groups, host if host is not None else address, address, local_address, local_port
        )

    def apply(self, base: ServerConfig, connection: Connection) -> ServerConfig:
        """C{base} with the values of the Match blocks that hold for C{connection}."""
        overrides = server_fields(self.config.match_values(connection), self.pinned)
        return dataclasses.replace(base, **overrides) if overrides else base

    def __call__(
        self,
        base: ServerConfig,
        user: str,
        address: str | None,
        local_address: str | None,
        local_port: int | None,
    ) -> ServerConfig:
        connection = self.connection(user, address, local_address, local_port)
        overrides = server_fields(self.config.match_values(connection), self.pinned)
        if not overrides:
            return base
        _log.debug(
            "Match blocks for {user} from {address}: {fields}",
            user=user,
            address=address,
            fields=", ".join(sorted(overrides)),
        )
        return dataclasses.replace(base, **overrides)


def listen_endpoints(
    ports: Sequence[int], addresses: Sequence[ListenAddress], default: str = f"tcp:{DEFAULT_PORT}"
) -> list[str]:
    """
    Endpoint strings for C{Port} and C{ListenAddress}, as sshd pairs them: an address without
    a port listens on every C{Port}.  No ListenAddress: each port on every IPv4 address (as
    rfwd-server's C{--listen tcp:PORT}); nothing at all: C{default}.
    """
    if not ports and not addresses:
        return [default]
    ports = list(ports) or [DEFAULT_PORT]
    if not addresses:
        return [f"tcp:{port}" for port in ports]
    endpoints = []
    for address in addresses:
        kind = "tcp6" if ":" in address.host else "tcp"
        interface = address.host.replace(":", "\\:")
        for port in [address.port] if address.port is not None else ports:
            endpoints.append(f"{kind}:{port}:interface={interface}")
    return endpoints


def _endpoint_address(description: str) -> tuple[str, int] | None:
    """C{(host, port)} of a C{tcp:}/C{tcp6:} endpoint string, or None for other kinds."""
    parts, current, escaped = [], "", False
    for c in description:
        if escaped:
            current, escaped = current + c, False
        elif c == "\\":
            escaped = True
        elif c == ":":
            parts.append(current)
            current = ""
        else:
            current += c
    parts.append(current)
    if parts[0] not in ("tcp", "tcp6") or len(parts) < 2:
        return None
    port_text = parts[1][5:] if parts[1].startswith("port=") else parts[1]
    if not port_text.isdigit():
        return None
    host = "0.0.0.0" if parts[0] == "tcp" else "::"
    for option in parts[2:]:
        if option.startswith("interface="):
            host = option[len("interface=") :]
    return host, int(port_text)


@implementer(IStreamServerEndpoint)
class SeveralEndpoints:
    """Listens on every one of several endpoints (sshd's several ListenAddress), or none."""

    def __init__(self, endpoints: Sequence[IStreamServerEndpoint]) -> None:
        self.endpoints = list(endpoints)

    def listen(self, protocolFactory: IProtocolFactory) -> Deferred[IListeningPort]:
        return Deferred.fromCoroutine(self._listen(protocolFactory))

    async def _listen(self, factory: IProtocolFactory) -> IListeningPort:
        ports: list[IListeningPort] = []
        try:
            for endpoint in self.endpoints:
                ports.append(await endpoint.listen(factory))
        except BaseException:
            await _Ports(ports).stopListening()
            raise
        for port in ports[1:]:
            _log.info(
                "rfwd-server also listening on {address}", address=describe_address(port.getHost())
            )
        return _Ports(ports)


@implementer(IListeningPort)
class _Ports:
    """Several listening ports as one: the first one's address, all stopped together."""

    def __init__(self, ports: list[IListeningPort]) -> None:
        self.ports = ports

    def startListening(self) -> None:
        for port in self.ports:
            port.startListening()

    def stopListening(self) -> Deferred[None]:
        stopping = DeferredList(
            [maybeDeferred(port.stopListening) for port in self.ports], consumeErrors=True
        )
        return stopping.addCallback(lambda _: None)

    def getHost(self) -> Any:
        return self.ports[0].getHost()


# --- sshd -T --------------------------------------------------------------------------------------

_SSHD_LEVEL_NAMES = {"critical": "FATAL", "error": "ERROR", "warn": "WARN", "info": "INFO"}


def _time(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else f"{seconds:g}"


def _flag(value: bool) -> str:
    return "yes" if value else "no"


def _permit_listen(policy: ListenPolicy) -> str:
    if policy.permissions is None:
        return "any"
    if not policy.permissions:
        return "none"
    entries = []
    for p in policy.permissions:
        host = "*" if p.host is None else f"[{p.host}]" if ":" in p.host else p.host
        entries.append(f"{host}:{'*' if p.port is None else p.port}")
    return " ".join(entries)


def _algorithms(names: Sequence[bytes]) -> str:
    return ",".join(n.decode("ascii") for n in names)


def sshd_test_lines(
    config: ServerConfig,
    *,
    endpoints: Sequence[str],
    ports: Sequence[int] = (),
    host_key_paths: Sequence[str],
    host_certificate_paths: Sequence[str] = (),
    log_level: str,
    values: Mapping[str, object],
) -> list[str]:
    """
    The effective configuration as C{sshd -T} prints it (lowercase keyword, a space, the
    value, in sshd's order and spelling) for the keywords rfwd-server acts on, then rfwd's own.
    C{values} holds the file's settings that L{ServerConfig} has no field for; C{ports} are
    the file's C{Port} lines (by default, the endpoints' ports).
    """
    addresses = [_endpoint_address(e) for e in endpoints]
    if not ports:
        ports = []
        for found in addresses:
            if found is not None and found[1] not in ports:
                ports.append(found[1])
    lines = [f"port {port}" for port in ports]
    for endpoint, found in zip(endpoints, addresses, strict=True):
        lines.append(f"listenaddress {host_port(*found) if found else endpoint}")
    gateway: GatewayPorts = config.gateway_ports
    lines += [
        f"logingracetime {_time(config.login_grace_time)}",
        f"maxauthtries {config.max_auth_tries}",
        f"maxsessions {config.max_sessions}",
        f"clientaliveinterval {_time(config.client_alive_interval)}",
        f"clientalivecountmax {config.client_alive_count_max}",
        f"pubkeyauthentication {_flag(config.pubkey_authentication)}",
        f"passwordauthentication {_flag(config.password_authentication)}",
        f"kbdinteractiveauthentication {_flag(config.kbd_interactive_authentication)}",
        f"gatewayports {gateway.value}",
        f"allowtcpforwarding {_flag(config.allow_tcp_forwarding)}",
        f"allowstreamlocalforwarding {_flag(config.allow_stream_local_forwarding)}",
        f"streamlocalbindmask 0{config.stream_local_bind_mask:o}",
        f"streamlocalbindunlink {_flag(config.stream_local_bind_unlink)}",
        f"ciphers {_algorithms(config.ciphers)}",
        f"macs {_algorithms(config.macs)}",
        f"banner {config.banner or 'none'}",
        f"kexalgorithms {_algorithms(config.kex_algorithms)}",
    ]
    for key in ("host_key_algorithms", "pubkey_accepted_algorithms"):
        chosen = getattr(config, key, None)
        if chosen is None:
            given = values.get(key)
            chosen = given if isinstance(given, list) else PUBLIC_KEY_ALGORITHMS
        lines.append(f"{key.replace('_', '')} {_algorithms(chosen)}")
    lines.append(f"loglevel {log_level}")
    lines.append(f"authorizedkeysfile {config.authorized_keys}")
    lines += [
        f"trustedusercakeys {config.trusted_user_ca_keys or 'none'}",
        f"revokedkeys {config.revoked_keys or 'none'}",
        f"authorizedprincipalsfile {config.authorized_principals_file or 'none'}",
    ]
    lines += [f"hostkey {path}" for path in host_key_paths]
    lines += [f"hostcertificate {path}" for path in host_certificate_paths]
    for key in ("allow_users", "deny_users", "allow_groups", "deny_groups"):
        lines += [f"{key.replace('_', '')} {pattern}" for pattern in getattr(config, key)]
    start, rate, full = config.max_startups
    per_source = config.per_source_max_startups
    lines += [
        f"maxstartups {start}:{rate}:{full}",
        f"persourcemaxstartups {'none' if per_source is None else per_source}",
        f"rekeylimit {config.rekey_bytes or 0} {_time(config.rekey_seconds or 0)}",
        f"permitlisten {_permit_listen(config.permit_listen)}",
        # rfwd-server's own.
        f"sessions {_flag(config.sessions)}",
        f"passwordhashesfile {config.password_hashes or 'none'}",
        f"maxforwardsperconnection {config.max_forwards_per_connection}",
        f"maxforwardsperuser {config.max_forwards_per_user}",
        f"maxchannelsperconnection {config.max_channels_per_connection}",
        f"draintime {_time(config.drain_time)}",
    ]
    return lines


def sshd_level_name(level: str) -> str:
    """sshd's name for one of rfwd's log levels (C{-T}'s C{loglevel} line)."""
    return _SSHD_LEVEL_NAMES.get(level, "DEBUG")
