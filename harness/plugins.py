"""
The command lines of this checkout's twistd plugins, rfwd-server and rfwd-client, and the
environment that makes a checkout's code win over any installed copy.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from pathlib import Path

from harness.keys import Keys
from harness.ports import LOOPBACK

CHECKOUT = Path(__file__).resolve().parents[1]

SERVER_LISTENING = r"rfwd-server listening on 127\.0\.0\.1:(\d+)"
"""What rfwd-server logs once it accepts connections; group 1 is its port."""

CLIENT_CONNECTED = r"Connected to 127\.0\.0\.1 port \d+"
"""What rfwd-client logs once its SSH connection is up."""

_TWISTD = "import sys; from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; run()"


def twistd_argv(plugin: str, *arguments: str) -> list[str]:
    """Run a twistd plugin in the foreground with this interpreter (PYTHONPATH: L{plugin_env})."""
    return [sys.executable, "-c", _TWISTD, "-n", "--pidfile=", plugin, *arguments]


def plugin_env(checkout: Path = CHECKOUT) -> dict[str, str]:
    """The PYTHONPATH that makes C{checkout}'s twisted_rfwd and plugin file win."""
    existing = os.environ.get("PYTHONPATH")
    path = str(checkout) if not existing else f"{checkout}{os.pathsep}{existing}"
    return {"PYTHONPATH": path}


def rfwd_server_argv(keys: Keys, *options: str, port: int = 0) -> list[str]:
    """rfwd-server on loopback (a free port unless given), with C{keys}' host key and users."""
    return twistd_argv(
        "rfwd-server",
        "--listen",
        f"tcp:{port}:interface={LOOPBACK}",
        "--host-key",
        str(keys.host_key),
        "--authorized-keys",
        str(keys.authorized_keys),
        *options,
    )


def rfwd_client_argv(
    keys: Keys,
    ssh_port: int,
    forwards: Iterable[str],
    *options: str,
    known_hosts: Path,
    host_key_checking: str = "accept-new",
    identity: bool = True,
) -> list[str]:
    """
    rfwd-client with C{-R} for each forward, logging in to loopback as C{keys.user} with
    C{-i keys.user_key} (unless not C{identity}).
    """
    arguments = [
        "-p",
        str(ssh_port),
        *(["-i", str(keys.user_key)] if identity else []),
        "-o",
        f"StrictHostKeyChecking={host_key_checking}",
        "-o",
        f"UserKnownHostsFile={known_hosts}",
        *options,
    ]
    for spec in forwards:
        arguments += ["-R", spec]
    arguments.append(f"{keys.user}@{LOOPBACK}")
    return twistd_argv("rfwd-client", *arguments)
