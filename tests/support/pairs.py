"""
Real SSH server and client processes on loopback, in the three pairings the tests cover:
rfwd-client with rfwd-server, OpenSSH's ssh with rfwd-server, rfwd-client with OpenSSH's sshd.

Each pair gets fresh keys, its own authorized_keys and known_hosts, and for OpenSSH its own
sshd_config (and C{ssh -F} file); every process is stopped by the test that started it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from twisted.trial.unittest import TestCase

from harness.keys import Keys, make_keys
from harness.openssh import (
    SSHD_LISTENING,
    SYSTEM_OPENSSH,
    prepare_sshd,
    ssh_argv,
    sshd_argv,
    sshd_config_template,
    sshd_version_settings,
)
from harness.openssh import ssh_config as ssh_config_text
from harness.plugins import SERVER_LISTENING, rfwd_client_argv, rfwd_server_argv
from tests.support.processes import (
    ChildProcess,
    free_port,
    openssh_binary,
    plugin_env,
    spawn,
)

__all__ = [
    "SSHD_CONFIG",
    "Keys",
    "make_keys",
    "ssh_config",
    "start_rfwd_client",
    "start_rfwd_server",
    "start_ssh",
    "start_sshd",
]


async def start_rfwd_server(
    test: TestCase, reactor: Any, keys: Keys, *extra: str, port: int = 0
) -> tuple[ChildProcess, int]:
    """rfwd-server on loopback (a free port unless given); returns the process and its port."""
    argv = rfwd_server_argv(keys, *extra, port=port)
    server = spawn(test, reactor, "rfwd-server", argv, env=plugin_env())
    match = await server.wait_for(SERVER_LISTENING)
    return server, int(match.group(1))


SSHD_CONFIG = sshd_config_template("VERBOSE")
"""The tests' sshd_config, with C{host_key} and C{authorized_keys} (format fields) to fill in."""

SSH_HOST = "rfwd-test"
"""The host name of the tests' C{ssh -F} files."""


async def start_sshd(
    test: TestCase,
    reactor: Any,
    keys: Keys,
    extra: str = "",
    port: int = 0,
    *,
    version: str = SYSTEM_OPENSSH,
    options: Sequence[str] = (),
) -> tuple[ChildProcess, int]:
    """
    OpenSSH's sshd (the system's, or C{version}) with its own config (plus C{extra} lines) on a
    free loopback port; C{options} (C{-o Keyword=value}) win over the config file.
    """
    sshd = openssh_binary("sshd", version)
    prepare_sshd()
    config = keys.workdir / "sshd_config"
    config.write_text(
        SSHD_CONFIG.format(host_key=keys.host_key, authorized_keys=keys.authorized_keys)
        + sshd_version_settings(version)
        + extra
    )
    port = port or free_port()
    server = spawn(test, reactor, "sshd", [*sshd_argv(sshd, config, port), *options])
    await server.wait_for(SSHD_LISTENING)
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
    argv = rfwd_client_argv(
        keys,
        ssh_port,
        forwards,
        *options,
        known_hosts=keys.workdir / "known_hosts",
        host_key_checking=host_key_checking,
        identity=identity,
    )
    environment = {"SSH_AUTH_SOCK": "", **plugin_env(), **(env or {})}
    return spawn(test, reactor, "rfwd-client", argv, env=environment)


def ssh_config(keys: Keys, ssh_port: int, extra: str = "") -> Path:
    """An C{ssh -F} file for host C{rfwd-test}: our key, our port, a known_hosts of its own."""
    config = keys.workdir / "ssh_config"
    known_hosts = keys.workdir / "known_hosts_ssh"
    config.write_text(ssh_config_text(keys, SSH_HOST, ssh_port, known_hosts, "INFO", extra))
    return config


def start_ssh(
    test: TestCase,
    reactor: Any,
    keys: Keys,
    ssh_port: int,
    forwards: list[str],
    *options: str,
    config_extra: str = "",
    session: bool = False,
    version: str = SYSTEM_OPENSSH,
) -> ChildProcess:
    """
    OpenSSH's C{ssh -N -F file [options] -R ...} (the system's, or C{version}); without C{-N}
    if C{session}.
    """
    ssh = openssh_binary("ssh", version)
    config = ssh_config(keys, ssh_port, config_extra)
    argv = ssh_argv(ssh, config, SSH_HOST, forwards, *options, session=session)
    return spawn(test, reactor, "ssh", argv)
