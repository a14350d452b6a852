"""OpenSSH's sshd and ssh for a loopback pair: where they are, their configurations, their argv."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from harness.keys import Keys
from harness.plugins import CHECKOUT

SYSTEM_OPENSSH = "9.2"
"""The machine's own OpenSSH (Debian bookworm's), found on PATH or in /usr/sbin."""

OPENSSH_10 = "10.0"
"""OpenSSH 10.0 from bookworm-backports, unpacked beside the system's by C{.ci/openssh10.sh}."""

OPENSSH_VERSIONS = (SYSTEM_OPENSSH, OPENSSH_10)

OPENSSH_10_FETCH = ".ci/openssh10.sh"
"""The script that fetches and unpacks OpenSSH 10.0 (named in skip messages)."""

_OPENSSH_10_PROGRAMS = {
    "sshd": "usr/sbin/sshd",
    "sshd-session": "usr/lib/openssh/sshd-session",
    "sshd-auth": "usr/lib/openssh/sshd-auth",
}
"""Where the unpacked tree has its programs; any other name is looked for in usr/bin."""

SSHD_LISTENING = r"Server listening on 127\.0\.0\.1 port"
"""What C{sshd -e} logs once it accepts connections."""

_SSHD_CONFIG = """\
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
"""

_SSH_CONFIG = """\
Host {host}
  HostName 127.0.0.1
  Port {port}
  User {user}
  IdentityFile {user_key}
  IdentitiesOnly yes
  StrictHostKeyChecking no
  UserKnownHostsFile {known_hosts}
  BatchMode yes
  ExitOnForwardFailure yes
  LogLevel {log_level}
"""


def openssh_10_root() -> Path:
    """
    The folder C{.ci/openssh10.sh} unpacks OpenSSH 10.0 into (C{RFWD_OPENSSH10_CACHE} moves it,
    as it moves the script's).
    """
    return Path(os.environ.get("RFWD_OPENSSH10_CACHE") or CHECKOUT / ".cache" / "openssh-10")


def find_program(name: str, version: str = SYSTEM_OPENSSH) -> str | None:
    """
    Path of an OpenSSH program of C{version} (the system's 9.2 or the unpacked 10.0), or None.
    The system's sshd is often outside a user's PATH.
    """
    if version == OPENSSH_10:
        path = openssh_10_root() / _OPENSSH_10_PROGRAMS.get(name, f"usr/bin/{name}")
        return str(path) if os.access(path, os.X_OK) else None
    if version != SYSTEM_OPENSSH:
        raise ValueError(f"no OpenSSH {version}: {', '.join(OPENSSH_VERSIONS)} only")
    found = shutil.which(name)
    if found:
        return found
    if os.path.exists(f"/usr/sbin/{name}"):
        return f"/usr/sbin/{name}"
    return None


def sshd_config_template(log_level: str, settings: str = "") -> str:
    """
    An sshd_config for loopback public-key logins with forwarding, with format fields C{host_key}
    and C{authorized_keys} left to fill in; C{settings} lines follow the fixed ones.
    """
    return _SSHD_CONFIG + f"LogLevel {log_level}\n" + settings


def sshd_version_settings(version: str = SYSTEM_OPENSSH) -> str:
    """
    The sshd_config lines an sshd of C{version} needs to run from where it is: OpenSSH 10's sshd
    starts sshd-session and sshd-auth, by default from /usr/lib/openssh, where only the
    system's (older) OpenSSH is installed.
    """
    if version != OPENSSH_10:
        return ""
    session, auth = find_program("sshd-session", version), find_program("sshd-auth", version)
    if session is None or auth is None:
        raise FileNotFoundError(f"OpenSSH {version}'s sshd-session or sshd-auth is missing")
    return f"SshdSessionPath {session}\nSshdAuthPath {auth}\n"


def sshd_config(keys: Keys, log_level: str, settings: str = "") -> str:
    """The L{sshd_config_template} filled in with C{keys}."""
    return sshd_config_template(log_level, settings).format(
        host_key=keys.host_key, authorized_keys=keys.authorized_keys
    )


def prepare_sshd() -> None:
    """Run as root, sshd wants its privilege separation directory to exist."""
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)


def sshd_argv(sshd: str, config: Path, port: int) -> list[str]:
    """sshd in the foreground, logging to stderr, with its own config and port."""
    return [sshd, "-D", "-e", "-f", str(config), "-p", str(port)]


def ssh_config(
    keys: Keys, host: str, port: int, known_hosts: Path, log_level: str, extra: str = ""
) -> str:
    """An C{ssh -F} file for C{host}: C{keys}' user key, C{port}, a known_hosts of its own."""
    return (
        _SSH_CONFIG.format(
            host=host,
            port=port,
            user=keys.user,
            user_key=keys.user_key,
            known_hosts=known_hosts,
            log_level=log_level,
        )
        + extra
    )


def ssh_argv(
    ssh: str, config: Path, host: str, forwards: Iterable[str], *options: str, session: bool = False
) -> list[str]:
    """
    C{ssh -N -F config [options] -R ... host}: forwards only, no session; with C{session},
    without C{-N}, as a user types it (ssh then asks for a shell).
    """
    arguments = [ssh, *([] if session else ["-N"]), "-F", str(config), *options]
    for spec in forwards:
        arguments += ["-R", spec]
    arguments.append(host)
    return arguments
