"""
Real SSH server and client processes on loopback, in the three pairings the tests cover:
rfwd-client with rfwd-server, OpenSSH's ssh with rfwd-server, rfwd-client with OpenSSH's sshd.

Each pair gets fresh keys, its own authorized_keys and known_hosts, and for OpenSSH its own
sshd_config (and C{ssh -F} file); every process is stopped by the test that started it.
"""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.trial.unittest import TestCase

from tests.support.keys import new_key, public_line, write_private_key
from tests.support.processes import (
    ChildProcess,
    free_port,
    openssh_binary,
    plugin_env,
    spawn,
    twistd_argv,
)

__all__ = [
    "Keys",
    "make_keys",
    "ssh_config",
    "start_rfwd_client",
    "start_rfwd_server",
    "start_ssh",
    "start_sshd",
]


@dataclass
class Keys:
    workdir: Path
    host_key: Path
    user_key: Path
    authorized_keys: Path
    user: str


def make_keys(workdir: Path, user_key_kind: str = "ed25519") -> Keys:
    # Absolute: sshd re-executes itself for each connection from "/".
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    host_key = write_private_key(new_key(), workdir / "host_key")
    user = new_key(user_key_kind)
    user_key = write_private_key(user, workdir / "user_key")
    authorized = workdir / "authorized_keys"
    authorized.write_bytes(public_line(user) + b"\n")
    return Keys(workdir, host_key, user_key, authorized, getpass.getuser())


async def start_rfwd_server(
    test: TestCase, reactor: Any, keys: Keys, *extra: str, port: int = 0
) -> tuple[ChildProcess, int]:
    """rfwd-server on loopback (a free port unless given); returns the process and its port."""
    server = spawn(
        test,
        reactor,
        "rfwd-server",
        twistd_argv(
            "rfwd-server",
            "--listen",
            f"tcp:{port}:interface=127.0.0.1",
            "--host-key",
            str(keys.host_key),
            "--authorized-keys",
            str(keys.authorized_keys),
            *extra,
        ),
        env=plugin_env(),
    )
    match = await server.wait_for(r"rfwd-server listening on 127\.0\.0\.1:(\d+)")
    return server, int(match.group(1))


SSHD_CONFIG = """\
ListenAddress 127.0.0.1
HostKey {host_key}
PidFile none
AuthorizedKeysFile {authorized_keys}
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PermitRootLogin prohibit-password
AllowTcpForwarding yes
GatewayPorts no
StrictModes no
UseDNS no
PrintMotd no
LogLevel VERBOSE
"""


async def start_sshd(
    test: TestCase, reactor: Any, keys: Keys, extra: str = "", port: int = 0
) -> tuple[ChildProcess, int]:
    """OpenSSH's sshd with its own config (plus C{extra} lines) on a free loopback port."""
    sshd = openssh_binary("sshd")
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    config = keys.workdir / "sshd_config"
    config.write_text(
        SSHD_CONFIG.format(host_key=keys.host_key, authorized_keys=keys.authorized_keys) + extra
    )
    port = port or free_port()
    server = spawn(test, reactor, "sshd", [sshd, "-D", "-e", "-f", str(config), "-p", str(port)])
    await server.wait_for(r"Server listening on 127\.0\.0\.1 port")
    return server, port


def start_rfwd_client(
    test: TestCase,
    reactor: Any,
    keys: Keys,
    ssh_port: int,
    forwards: list[str],
    *options: str,
    host_key_checking: str = "accept-new",
    identity: bool = True,
    env: dict[str, str] | None = None,
) -> ChildProcess:
    """
    rfwd-client with C{-R} for each forward; trusts the server's key on first use.  It logs
    in with C{-i keys.user_key} (unless not C{identity}) and no agent (unless C{env} says).
    """
    arguments = [
        "-p",
        str(ssh_port),
        *(["-i", str(keys.user_key)] if identity else []),
        "-o",
        f"StrictHostKeyChecking={host_key_checking}",
        "-o",
        f"UserKnownHostsFile={keys.workdir / 'known_hosts'}",
        *options,
    ]
    for spec in forwards:
        arguments += ["-R", spec]
    arguments.append(f"{keys.user}@127.0.0.1")
    environment = {"SSH_AUTH_SOCK": "", **plugin_env(), **(env or {})}
    return spawn(
        test, reactor, "rfwd-client", twistd_argv("rfwd-client", *arguments), env=environment
    )


SSH_CONFIG = """\
Host rfwd-test
  HostName 127.0.0.1
  Port {port}
  User {user}
  IdentityFile {user_key}
  IdentitiesOnly yes
  StrictHostKeyChecking no
  UserKnownHostsFile {known_hosts}
  BatchMode yes
  ExitOnForwardFailure yes
  LogLevel INFO
"""


def ssh_config(keys: Keys, ssh_port: int, extra: str = "") -> Path:
    """An C{ssh -F} file for host C{rfwd-test}: our key, our port, a known_hosts of its own."""
    config = keys.workdir / "ssh_config"
    config.write_text(
        SSH_CONFIG.format(
            port=ssh_port,
            user=keys.user,
            user_key=keys.user_key,
            known_hosts=keys.workdir / "known_hosts_ssh",
        )
        + extra
    )
    return config


def start_ssh(
    test: TestCase,
    reactor: Any,
    keys: Keys,
    ssh_port: int,
    forwards: list[str],
    *options: str,
    config_extra: str = "",
) -> ChildProcess:
    """OpenSSH's C{ssh -N -F file [options] -R ...}."""
    ssh = openssh_binary("ssh")
    arguments = [ssh, "-N", "-F", str(ssh_config(keys, ssh_port, config_extra)), *options]
    for spec in forwards:
        arguments += ["-R", spec]
    arguments.append("rfwd-test")
    return spawn(test, reactor, "ssh", arguments)
