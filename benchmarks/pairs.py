"""
The SSH pairs compared, and how one is started: app server, SSH server and SSH client as child
processes (keys, configurations and command lines from L{harness}), up once an echo goes through.
"""

from __future__ import annotations

import contextlib
import re
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks.appserver import LISTENING as APP_LISTENING
from benchmarks.loadgen import first_echo
from harness.keys import Keys
from harness.openssh import (
    find_program,
    prepare_sshd,
    ssh_argv,
    ssh_config,
    sshd_argv,
    sshd_config,
)
from harness.plugins import (
    CHECKOUT,
    CLIENT_CONNECTED,
    SERVER_LISTENING,
    plugin_env,
    rfwd_client_argv,
    rfwd_server_argv,
)
from harness.ports import LOOPBACK, free_port
from harness.processes import START_TIMEOUT, Child, StartError

SSH_HOST = "rfwd-bench"
SSHD_SETTINGS = "MaxStartups 200\n"  # conc opens 50 connections at once


@dataclass(frozen=True)
class PairSpec:
    name: str
    server: str | None  # "sshd", "rfwd", or None for a direct connection to the app server
    client: str | None  # "ssh", "rfwd"
    client_options: tuple[str, ...] = ()
    server_options: tuple[str, ...] = ()
    # A remote command instead of -N: OpenSSH then holds a session (with -tt, a pty).
    client_command: tuple[str, ...] = ()


PAIRS = {
    spec.name: spec
    for spec in (
        PairSpec("none", None, None),
        PairSpec("ossh", "sshd", "ssh"),
        PairSpec("ossh-gcm", "sshd", "ssh", ("-c", "aes128-gcm@openssh.com")),
        # With a pty both ends set TCP_NODELAY on the SSH socket, which -N leaves off: the
        # reference for short connections (-N pays ~40 ms of Nagle and delayed ACK on each).
        PairSpec("ossh-tty", "sshd", "ssh", ("-tt",), client_command=("sleep", "86400")),
        PairSpec("rfwd", "rfwd", "rfwd"),
        PairSpec("ssh>rfwd", "rfwd", "ssh"),
        PairSpec("rfwd>sshd", "sshd", "rfwd"),
        # Not run by default: rfwd with OpenSSH's default cipher, for a like-for-like comparison.
        PairSpec(
            "rfwd-chacha",
            "rfwd",
            "rfwd",
            server_options=("--ciphers", "chacha20-poly1305@openssh.com"),
        ),
    )
}
DEFAULT_PAIRS = ["none", "ossh", "ossh-gcm", "ossh-tty", "rfwd", "ssh>rfwd", "rfwd>sshd"]
REFERENCE = "ossh"


@dataclass
class Instance:
    """One started pair: the app server, the SSH server and client; load goes to listen_port."""

    spec: PairSpec
    app: Child
    server: Child | None
    client: Child | None
    listen_port: int
    cipher: str

    def children(self) -> list[Child]:
        return [c for c in (self.client, self.server, self.app) if c is not None]

    def roots(self) -> dict[str, int]:
        """The processes whose memory is reported."""
        found = {}
        if self.server is not None:
            found["server"] = self.server.pid
        if self.client is not None:
            found["client"] = self.client.pid
        return found

    def stop(self) -> None:
        for child in self.children():
            child.stop()


def openssh(program: str) -> str:
    found = find_program(program)
    if not found:
        raise StartError(f"OpenSSH's {program} is not installed")
    return found


def start_app_server(workdir: Path) -> tuple[Child, int]:
    """The app server of this benchmark tree (whatever the checkout under test)."""
    argv = [sys.executable, "-m", "benchmarks.appserver"]
    app = Child("app", argv, workdir / "app.log", plugin_env(CHECKOUT))
    return app, int(app.wait_for(APP_LISTENING).group(1))


def _start_sshd(keys: Keys, workdir: Path) -> tuple[Child, int]:
    sshd = openssh("sshd")
    prepare_sshd()
    config = workdir / "sshd_config"
    config.write_text(sshd_config(keys, "ERROR", SSHD_SETTINGS))
    port = free_port()
    child = Child("sshd", sshd_argv(sshd, config, port), workdir / "sshd.log")
    _wait_accepting(port, child)
    return child, port


def _start_rfwd_server(
    spec: PairSpec, keys: Keys, workdir: Path, checkout: Path
) -> tuple[Child, int]:
    argv = rfwd_server_argv(keys, *spec.server_options)
    child = Child("rfwd-server", argv, workdir / "rfwd-server.log", plugin_env(checkout))
    match = child.wait_for(SERVER_LISTENING)
    return child, int(match.group(1))


def _ssh_cipher(config: Path, options: Sequence[str]) -> str:
    """What ssh negotiates with sshd: the first cipher it offers (sshd accepts all of them)."""
    out = subprocess.run(
        [openssh("ssh"), "-G", "-F", str(config), *options, SSH_HOST],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    match = re.search(r"^ciphers ([^,\s]+)", out, re.MULTILINE)
    return match.group(1) if match else "?"


def _rfwd_cipher(child: Child) -> str | None:
    """The cipher (and MAC) rfwd logged for its side's outgoing direction."""
    match = re.search(r"Key exchange with .*?, out (\S+) (\([^)]*\)|\S+)", child.output(400))
    if not match:
        return None
    cipher, mac = match.groups()
    return cipher if mac.startswith("(") else f"{cipher} {mac}"


def _wait_accepting(port: int, child: Child) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        with contextlib.suppress(OSError), socket.create_connection((LOOPBACK, port), 1.0):
            return
        if not child.alive():
            raise StartError(child.ended())
        if time.monotonic() > deadline:
            raise StartError(f"{child.name} does not accept connections on port {port}")
        time.sleep(0.05)


def _wait_tunnel(port: int, children: Sequence[Child]) -> None:
    """Until a 64 B echo through the forwarded port works."""
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        try:
            with socket.create_connection((LOOPBACK, port), 5.0) as s:
                if first_echo(s, 0):
                    return
        except OSError:
            pass
        for child in children:
            if not child.alive():
                raise StartError(child.ended())
        if time.monotonic() > deadline:
            raise StartError(f"no echo through port {port} within {START_TIMEOUT}s")
        time.sleep(0.1)


def start_instance(spec: PairSpec, keys: Keys, workdir: Path, checkout: Path) -> Instance:
    """Start app server, SSH server and client of C{spec}; retried once (ports may be taken)."""
    for attempt in (1, 2):
        attempt_dir = workdir / f"try{attempt}"
        attempt_dir.mkdir(parents=True)
        try:
            return _start_instance(spec, keys, attempt_dir, checkout)
        except StartError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def _start_instance(spec: PairSpec, keys: Keys, workdir: Path, checkout: Path) -> Instance:
    started: list[Child] = []
    try:
        app, app_port = start_app_server(workdir)
        started.append(app)
        if spec.server is None or spec.client is None:
            return Instance(spec, app, None, None, app_port, "-")
        if spec.server == "sshd":
            server, ssh_port = _start_sshd(keys, workdir)
        else:
            server, ssh_port = _start_rfwd_server(spec, keys, workdir, checkout)
        started.append(server)
        listen_port = free_port()
        forwards = [f"{LOOPBACK}:{listen_port}:{LOOPBACK}:{app_port}"]
        cipher: str | None
        if spec.client == "ssh":
            config = workdir / "ssh_config"
            known_hosts = workdir / "known_hosts"
            config.write_text(ssh_config(keys, SSH_HOST, ssh_port, known_hosts, "ERROR"))
            argv = ssh_argv(
                openssh("ssh"),
                config,
                SSH_HOST,
                forwards,
                *spec.client_options,
                session=bool(spec.client_command),
            )
            argv += spec.client_command
            client = Child("ssh", argv, workdir / "ssh.log")
            started.append(client)
            cipher = _ssh_cipher(config, spec.client_options)
        else:
            argv = rfwd_client_argv(
                keys, ssh_port, forwards, *spec.client_options, known_hosts=workdir / "known_hosts"
            )
            client = Child("rfwd-client", argv, workdir / "rfwd-client.log", plugin_env(checkout))
            started.append(client)
            client.wait_for(CLIENT_CONNECTED)
        _wait_tunnel(listen_port, started)
        if spec.server == "rfwd":
            cipher = _rfwd_cipher(server)
        elif spec.client == "rfwd":
            cipher = _rfwd_cipher(client)
        return Instance(spec, app, server, client, listen_port, cipher or "?")
    except BaseException:
        for child in reversed(started):
            child.stop()
        raise
