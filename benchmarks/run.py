"""
Benchmark of SSH remote port forwarding (ssh -R) on loopback: OpenSSH, twisted-rfwd and the two
mixed pairs, driven by the same load generator against the same application server.

    load (this process) -> 127.0.0.1:LISTEN  [SSH server]  ==SSH==>  [SSH client] -> app server

Usage: python benchmarks/run.py [--pairs ...] [--reps N] [--duration S] [--conns N] [--conc N]
                                [--tests ...] [--json FILE] [--logdir DIR]
See benchmarks/README.md for what each test measures.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import getpass
import hashlib
import json
import os
import re
import resource
import selectors
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, NoReturn

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

CHECKOUT = Path(__file__).resolve().parent.parent
LOOPBACK = "127.0.0.1"
IO_TIMEOUT = 60.0  # seconds any single socket operation may take before the test is an error
CONC_PHASE_TIMEOUT = 300.0  # seconds each phase of the conc test may take in all
START_TIMEOUT = 30.0

# ----------------------------------------------------------------------------------------------
# Data pattern and the application protocol (shared by the app server and the load generator)

BLOCK_LEN = (4 << 20) + 13  # odd length: shifted, repeated or dropped data never lines up again
CHUNK = 1 << 20  # send/recv size, and the size of each download frame
ECHO_LEN = 64

MODE_ECHO = b"E"  # echo every byte until EOF
MODE_UP = b"U"  # verify every byte against the pattern until EOF, then send UP_REPLY
MODE_DOWN = b"D"  # followed by FRAME (milliseconds): stream frames of the pattern for that long
UP_REPLY = struct.Struct(">QBq")  # bytes received, 1 if all matched, offset of first mismatch
FRAME = struct.Struct(">I")  # download frame length; a 0 frame ends, followed by END_TOTAL
END_TOTAL = struct.Struct(">Q")  # bytes of pattern the app server sent


class Pattern:
    """An endless byte stream: one pseudo-random block, repeated. Windows are zero-copy."""

    def __init__(self) -> None:
        block = hashlib.shake_256(b"twisted-rfwd benchmark").digest(BLOCK_LEN)
        self._data = block + block[:CHUNK]
        self._view = memoryview(self._data)

    def window(self, offset: int, length: int) -> memoryview:
        """The stream's bytes [offset, offset + length), length <= CHUNK."""
        start = offset % BLOCK_LEN
        return self._view[start : start + length]

    def matches(self, offset: int, data: memoryview) -> bool:
        """Whether C{data} (at most CHUNK bytes) is the stream at C{offset}."""
        return self._data.startswith(data, offset % BLOCK_LEN)


@cache
def pattern() -> Pattern:
    return Pattern()


def echo_message(i: int) -> bytes:
    """The 64 bytes connection (or round) C{i} sends to be echoed: different for each C{i}."""
    return bytes(pattern().window(i * ECHO_LEN, ECHO_LEN))


# ----------------------------------------------------------------------------------------------
# Application server: a separate process (run.py --app-server), single-threaded on selectors so
# that 10,000 held connections cost it nothing but sockets.


class _AppConnection:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.state = "header"  # header, echo, up, down, closing
        self.header = b""
        self.out: list[memoryview] = []
        self.offset = 0  # bytes of pattern received (up) or sent (down)
        self.bad_at = -1
        self.deadline = 0.0
        self.events = selectors.EVENT_READ
        self.closed = False


class AppServer:
    def __init__(self) -> None:
        self.selector = selectors.DefaultSelector()
        self.listener = socket.create_server((LOOPBACK, 0), backlog=4096)
        self.listener.setblocking(False)
        self.selector.register(self.listener, selectors.EVENT_READ, None)
        self.buffer = memoryview(bytearray(CHUNK))
        self.pattern = pattern()

    @property
    def port(self) -> int:
        port: int = self.listener.getsockname()[1]
        return port

    def serve_forever(self) -> NoReturn:
        while True:
            for key, events in self.selector.select():
                if key.data is None:
                    self._accept()
                    continue
                conn: _AppConnection = key.data
                try:
                    if events & selectors.EVENT_READ:
                        self._readable(conn)
                    if events & selectors.EVENT_WRITE and not conn.closed:
                        self._writable(conn)
                except OSError:
                    self._close(conn)

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except BlockingIOError:
                return
            except OSError:  # EMFILE and friends: let the backlog wait a little
                time.sleep(0.01)
                return
            sock.setblocking(False)
            conn = _AppConnection(sock)
            self.selector.register(sock, conn.events, conn)

    def _want(self, conn: _AppConnection, events: int) -> None:
        if conn.events != events:
            conn.events = events
            self.selector.modify(conn.sock, events, conn)

    def _close(self, conn: _AppConnection) -> None:
        if not conn.closed:
            conn.closed = True
            self.selector.unregister(conn.sock)
            conn.sock.close()

    def _send(self, conn: _AppConnection) -> bool:
        """Send what is queued; True once all of it has gone."""
        while conn.out:
            try:
                sent = conn.sock.sendmsg(conn.out)
            except BlockingIOError:
                return False
            while sent:
                first = conn.out[0]
                if sent >= len(first):
                    sent -= len(first)
                    conn.out.pop(0)
                else:
                    conn.out[0] = first[sent:]
                    sent = 0
        return True

    def _flush(self, conn: _AppConnection) -> None:
        """Send what is queued; stop reading while it cannot go, close once flushed if done."""
        if not self._send(conn):
            self._want(conn, selectors.EVENT_WRITE)
        elif conn.state == "closing":
            self._close(conn)
        else:
            self._want(conn, selectors.EVENT_READ)

    def _readable(self, conn: _AppConnection) -> None:
        if conn.state == "header":
            self._read_header(conn)
        elif conn.state == "echo":
            data = conn.sock.recv(65536)
            if not data:
                conn.state = "closing"
            else:
                conn.out.append(memoryview(data))
            self._flush(conn)
        elif conn.state == "up":
            n = conn.sock.recv_into(self.buffer, CHUNK)
            if n == 0:
                ok = conn.bad_at < 0
                conn.out = [memoryview(UP_REPLY.pack(conn.offset, int(ok), conn.bad_at))]
                conn.state = "closing"
                self._flush(conn)
                return
            if conn.bad_at < 0 and not self.pattern.matches(conn.offset, self.buffer[:n]):
                conn.bad_at = conn.offset
            conn.offset += n
        elif not conn.sock.recv(65536):  # down: the client has nothing to say but EOF
            self._close(conn)

    def _read_header(self, conn: _AppConnection) -> None:
        need = 1 + FRAME.size if conn.header[:1] == MODE_DOWN else 1
        data = conn.sock.recv(need - len(conn.header))
        if not data:
            self._close(conn)
            return
        conn.header += data
        mode = conn.header[:1]
        if mode == MODE_ECHO:
            conn.state = "echo"
        elif mode == MODE_UP:
            conn.state = "up"
        elif mode == MODE_DOWN:
            if len(conn.header) == 1 + FRAME.size:
                (milliseconds,) = FRAME.unpack_from(conn.header, 1)
                conn.deadline = time.monotonic() + milliseconds / 1000
                conn.state = "down"
                self._want(conn, selectors.EVENT_WRITE)
        else:
            self._close(conn)

    def _writable(self, conn: _AppConnection) -> None:
        budget = 16 * CHUNK  # then let other connections have a turn
        while conn.state == "down" and budget > 0:
            if not conn.out:
                if time.monotonic() < conn.deadline:
                    conn.out = [
                        memoryview(FRAME.pack(CHUNK)),
                        self.pattern.window(conn.offset, CHUNK),
                    ]
                    conn.offset += CHUNK
                    budget -= CHUNK
                else:
                    end = FRAME.pack(0) + END_TOTAL.pack(conn.offset)
                    conn.out = [memoryview(end)]
                    conn.state = "closing"
            if not self._send(conn):
                return
        if conn.state != "down":  # down with budget spent: stay registered for writing
            self._flush(conn)


def app_server_main() -> NoReturn:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the benchmark process stops us
    server = AppServer()
    print(f"app server listening on {server.port}", flush=True)
    server.serve_forever()


# ----------------------------------------------------------------------------------------------
# Child processes: each in its own session, its output in a log file, its whole process tree
# (sshd forks per connection) stopped by PID at the end.


class StartError(Exception):
    """A pair could not be started."""


def process_tree(pid: int) -> list[int]:
    """C{pid} and all its descendants."""
    pids = [pid]
    for parent in pids:
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for task in tasks:
            with contextlib.suppress(OSError), open(f"/proc/{parent}/task/{task}/children") as f:
                pids.extend(int(child) for child in f.read().split())
    return pids


def _status_field(pid: int, name: str) -> str | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(name + ":"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def tree_rss_kib(pid: int) -> int:
    """Resident memory of C{pid} and its descendants (VmRSS summed)."""
    total = 0
    for p in process_tree(pid):
        value = _status_field(p, "VmRSS")
        if value:
            total += int(value.split()[0])
    return total


def tree_fds(pid: int) -> int:
    """Open file descriptors of C{pid} and its descendants."""
    total = 0
    for p in process_tree(pid):
        with contextlib.suppress(OSError):
            total += len(os.listdir(f"/proc/{p}/fd"))
    return total


def _gone(pid: int) -> bool:
    state = _status_field(pid, "State")
    return state is None or state.startswith("Z")


RUNNING: list[Child] = []


class Child:
    """A process this benchmark started."""

    def __init__(
        self, name: str, argv: Sequence[str], log: Path, env: dict[str, str] | None = None
    ) -> None:
        self.name = name
        self.log = log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # Ctrl-C reaches only us; we stop the children
            )
        RUNNING.append(self)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self, last: int = 8) -> str:
        try:
            lines = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-last:])

    def ended(self) -> str:
        return f"{self.name} exited with status {self.proc.returncode}:\n{self.output()}"

    def wait_for(self, regex: str, timeout: float = START_TIMEOUT) -> re.Match[str]:
        """The first log line matching C{regex}, once printed."""
        compiled = re.compile(regex)
        deadline = time.monotonic() + timeout
        while True:
            match = compiled.search(self.log.read_text(errors="replace"))
            if match:
                return match
            if not self.alive():
                raise StartError(self.ended())
            if time.monotonic() > deadline:
                raise StartError(
                    f"{self.name} did not log /{regex}/ in {timeout}s:\n{self.output()}"
                )
            time.sleep(0.05)

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM to the process and its descendants, SIGKILL to what is left after C{grace}."""
        pids = process_tree(self.pid) if self.alive() else []
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(grace)
        while any(not _gone(pid) for pid in pids[1:]) and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid in pids:
            if pid == self.pid:
                if self.proc.poll() is None:
                    self.proc.kill()
            elif not _gone(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self.proc.wait()
        if self in RUNNING:
            RUNNING.remove(self)


def stop_all() -> None:
    for child in reversed(list(RUNNING)):
        child.stop()


# ----------------------------------------------------------------------------------------------
# Keys, configs and the pairs


@dataclass(frozen=True)
class Keys:
    host_key: Path
    user_key: Path
    authorized_keys: Path
    user: str


def _write_private(path: Path, data: bytes) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return path


def make_keys(directory: Path) -> Keys:
    """Throwaway ed25519 host and user keys, and an authorized_keys with the user key."""

    def private(key: Ed25519PrivateKey) -> bytes:
        return key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )

    host, user = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    public = user.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    authorized = directory / "authorized_keys"
    authorized.write_bytes(public + b" rfwd-bench\n")
    return Keys(
        host_key=_write_private(directory / "host_key", private(host)),
        user_key=_write_private(directory / "user_key", private(user)),
        authorized_keys=authorized,
        user=getpass.getuser(),
    )


SSHD_CONFIG = """\
ListenAddress 127.0.0.1
HostKey {host_key}
PidFile none
AuthorizedKeysFile {authorized_keys}
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PermitRootLogin prohibit-password
AllowTcpForwarding yes
UseDNS no
MaxStartups 200
LogLevel ERROR
"""

SSH_HOST = "rfwd-bench"
SSH_CONFIG = """\
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
  LogLevel ERROR
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        port: int = s.getsockname()[1]
        return port


def openssh(program: str) -> str:
    found = shutil.which(program) or (f"/usr/sbin/{program}" if program == "sshd" else None)
    if not found or not os.path.exists(found):
        raise StartError(f"OpenSSH's {program} is not installed")
    return found


def twistd_argv(plugin: str, *arguments: str) -> list[str]:
    """This checkout's twistd plugin, run by this interpreter (PYTHONPATH from plugin_env)."""
    run = "import sys; from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; run()"
    return [sys.executable, "-c", run, "-n", "--pidfile=", plugin, *arguments]


def plugin_env(checkout: Path) -> dict[str, str]:
    """Make C{checkout}'s twisted_rfwd and plugin file win over any installed copy."""
    env = dict(os.environ)
    existing = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(checkout) + (os.pathsep + existing if existing else "")
    return env


@dataclass(frozen=True)
class PairSpec:
    name: str
    server: str | None  # "sshd", "rfwd", or None for a direct connection to the app server
    client: str | None  # "ssh", "rfwd"
    client_options: tuple[str, ...] = ()
    server_options: tuple[str, ...] = ()


PAIRS = {
    spec.name: spec
    for spec in (
        PairSpec("none", None, None),
        PairSpec("ossh", "sshd", "ssh"),
        PairSpec("ossh-gcm", "sshd", "ssh", ("-c", "aes128-gcm@openssh.com")),
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
DEFAULT_PAIRS = ["none", "ossh", "ossh-gcm", "rfwd", "ssh>rfwd", "rfwd>sshd"]
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

    def check_alive(self) -> None:
        for child in self.children():
            if not child.alive():
                raise RuntimeError(child.ended())

    def stop(self) -> None:
        for child in self.children():
            child.stop()


def _start_sshd(keys: Keys, workdir: Path) -> tuple[Child, int]:
    sshd = openssh("sshd")
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    config = workdir / "sshd_config"
    config.write_text(
        SSHD_CONFIG.format(host_key=keys.host_key, authorized_keys=keys.authorized_keys)
    )
    port = free_port()
    child = Child(
        "sshd", [sshd, "-D", "-e", "-f", str(config), "-p", str(port)], workdir / "sshd.log"
    )
    _wait_accepting(port, child)
    return child, port


def _start_rfwd_server(
    spec: PairSpec, keys: Keys, workdir: Path, checkout: Path
) -> tuple[Child, int]:
    argv = twistd_argv(
        "rfwd-server",
        "--listen",
        f"tcp:0:interface={LOOPBACK}",
        "--host-key",
        str(keys.host_key),
        "--authorized-keys",
        str(keys.authorized_keys),
        *spec.server_options,
    )
    child = Child("rfwd-server", argv, workdir / "rfwd-server.log", plugin_env(checkout))
    match = child.wait_for(r"rfwd-server listening on 127\.0\.0\.1:(\d+)")
    return child, int(match.group(1))


def _ssh_config(keys: Keys, workdir: Path, ssh_port: int) -> Path:
    config = workdir / "ssh_config"
    config.write_text(
        SSH_CONFIG.format(
            host=SSH_HOST,
            port=ssh_port,
            user=keys.user,
            user_key=keys.user_key,
            known_hosts=workdir / "known_hosts",
        )
    )
    return config


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
    message = echo_message(0)
    while True:
        try:
            with socket.create_connection((LOOPBACK, port), 5.0) as s:
                s.sendall(MODE_ECHO + message)
                if recv_exact(s, ECHO_LEN) == message:
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
        app = Child(
            "app",
            [sys.executable, str(Path(__file__).resolve()), "--app-server"],
            workdir / "app.log",
        )
        started.append(app)
        app_port = int(app.wait_for(r"app server listening on (\d+)").group(1))
        if spec.server is None or spec.client is None:
            return Instance(spec, app, None, None, app_port, "-")
        if spec.server == "sshd":
            server, ssh_port = _start_sshd(keys, workdir)
        else:
            server, ssh_port = _start_rfwd_server(spec, keys, workdir, checkout)
        started.append(server)
        listen_port = free_port()
        forward = f"{LOOPBACK}:{listen_port}:{LOOPBACK}:{app_port}"
        cipher: str | None
        if spec.client == "ssh":
            config = _ssh_config(keys, workdir, ssh_port)
            argv = [openssh("ssh"), "-N", "-F", str(config), *spec.client_options]
            client = Child("ssh", [*argv, "-R", forward, SSH_HOST], workdir / "ssh.log")
            started.append(client)
            cipher = _ssh_cipher(config, spec.client_options)
        else:
            argv = twistd_argv(
                "rfwd-client",
                "-p",
                str(ssh_port),
                "-i",
                str(keys.user_key),
                "-o",
                "StrictHostKeyChecking=accept-new",
                "-o",
                f"UserKnownHostsFile={workdir / 'known_hosts'}",
                *spec.client_options,
                "-R",
                forward,
                f"{keys.user}@{LOOPBACK}",
            )
            client = Child("rfwd-client", argv, workdir / "rfwd-client.log", plugin_env(checkout))
            started.append(client)
            client.wait_for(r"Connected to 127\.0\.0\.1 port \d+")
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


# ----------------------------------------------------------------------------------------------
# Load generation: plain blocking sockets in this process, 1 MiB sends and receives.


class VerifyError(Exception):
    """Data came back wrong: the result is FAILED, never a number."""


@dataclass
class Options:
    duration: float
    conns: int
    conc: int
    conc_inflight: int


@dataclass
class TestResult:
    metrics: dict[str, float]
    notes: list[str] = field(default_factory=list)


def recv_exact(sock: socket.socket, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise VerifyError(f"connection closed after {len(data)} of {n} bytes")
        data += chunk
    return bytes(data)


def connect(port: int, timeout: float = IO_TIMEOUT) -> socket.socket:
    return socket.create_connection((LOOPBACK, port), timeout)


def upload(
    port: int, duration: float, barrier: threading.Barrier | None = None
) -> tuple[int, float, float]:
    """Stream the pattern for C{duration} s; the app server checks it. (bytes, start, end)."""
    stream = pattern()
    with connect(port) as s:
        if barrier is not None:
            barrier.wait()
        start = time.monotonic()
        deadline = start + duration
        s.sendall(MODE_UP)
        sent = 0
        while time.monotonic() < deadline:
            s.sendall(stream.window(sent, CHUNK))
            sent += CHUNK
        s.shutdown(socket.SHUT_WR)
        received, ok, bad_at = UP_REPLY.unpack(recv_exact(s, UP_REPLY.size))
        end = time.monotonic()
    if received != sent:
        raise VerifyError(f"app server received {received} bytes of {sent} sent")
    if not ok:
        raise VerifyError(f"app server found wrong data in the bytes received at {bad_at}")
    return sent, start, end


def download(port: int, duration: float) -> tuple[int, float, float]:
    """Have the app server stream frames for C{duration} s; check every byte here."""
    stream = pattern()
    buffer = memoryview(bytearray(CHUNK))
    with connect(port) as s:
        start = time.monotonic()
        s.sendall(MODE_DOWN + FRAME.pack(round(duration * 1000)))
        offset = 0
        while True:
            (length,) = FRAME.unpack(recv_exact(s, FRAME.size))
            if length == 0:
                break
            if length > CHUNK:
                raise VerifyError(f"frame of {length} bytes at byte {offset}")
            got = 0
            while got < length:
                n = s.recv_into(buffer[got:], length - got)
                if n == 0:
                    raise VerifyError(f"connection closed inside a frame at byte {offset + got}")
                got += n
            if not stream.matches(offset, buffer[:length]):
                raise VerifyError(f"wrong data in the frame starting at byte {offset}")
            offset += length
        (total,) = END_TOTAL.unpack(recv_exact(s, END_TOTAL.size))
        end = time.monotonic()
    if total != offset:
        raise VerifyError(f"received {offset} bytes, app server sent {total}")
    return offset, start, end


def _mbps(nbytes: int, seconds: float) -> float:
    return nbytes / seconds / 1e6


def test_bulk_up(inst: Instance, opts: Options) -> TestResult:
    nbytes, start, end = upload(inst.listen_port, opts.duration)
    return TestResult({"mbps": _mbps(nbytes, end - start), "bytes": nbytes})


def test_bulk_down(inst: Instance, opts: Options) -> TestResult:
    nbytes, start, end = download(inst.listen_port, opts.duration)
    return TestResult({"mbps": _mbps(nbytes, end - start), "bytes": nbytes})


PARALLEL = 8


def test_par8(inst: Instance, opts: Options) -> TestResult:
    barrier = threading.Barrier(PARALLEL)
    with ThreadPoolExecutor(PARALLEL) as pool:
        futures = [
            pool.submit(upload, inst.listen_port, opts.duration, barrier) for _ in range(PARALLEL)
        ]
        results = [f.result() for f in futures]
    nbytes = sum(r[0] for r in results)
    seconds = max(r[2] for r in results) - min(r[1] for r in results)
    slowest = min(_mbps(r[0], r[2] - r[1]) for r in results)
    return TestResult({"mbps": _mbps(nbytes, seconds), "slowest_mbps": slowest, "bytes": nbytes})


def _percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[round(fraction * (len(ordered) - 1))]


def test_connrate(inst: Instance, opts: Options) -> TestResult:
    latencies = []
    start = time.perf_counter()
    for i in range(opts.conns):
        began = time.perf_counter()
        with connect(inst.listen_port) as s:
            message = echo_message(i)
            s.sendall(MODE_ECHO + message)
            answer = recv_exact(s, ECHO_LEN)
            latencies.append(time.perf_counter() - began)
        if answer != message:
            raise VerifyError(f"connection {i}: wrong echo")
    elapsed = time.perf_counter() - start
    return TestResult(
        {
            "conn_s": opts.conns / elapsed,
            "p50_ms": 1000 * _percentile(latencies, 0.5),
            "p99_ms": 1000 * _percentile(latencies, 0.99),
            "max_ms": 1000 * max(latencies),
        }
    )


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


def test_conc(inst: Instance, opts: Options) -> TestResult:
    """N connections held at once: memory per connection on each side, then a second echo."""
    n = opts.conc
    roots = inst.roots()
    before = {side: tree_rss_kib(pid) for side, pid in roots.items()}
    sockets: list[socket.socket | None] = [None] * n
    failures: Counter[str] = Counter()
    wrong: list[int] = []
    open_deadline = time.monotonic() + CONC_PHASE_TIMEOUT

    def open_one(i: int) -> None:
        if time.monotonic() > open_deadline:
            failures["not tried: open phase timed out"] += 1
            return
        try:
            s = socket.socket()
        except OSError as e:
            failures[_describe(e)] += 1
            return
        try:
            s.settimeout(IO_TIMEOUT)
            s.connect((LOOPBACK, inst.listen_port))
            message = echo_message(i)
            s.sendall(MODE_ECHO + message)
            if recv_exact(s, ECHO_LEN) != message:
                wrong.append(i)
                s.close()
                return
        except (OSError, VerifyError) as e:
            failures[_describe(e)] += 1
            s.close()
            return
        sockets[i] = s

    try:
        start = time.monotonic()
        pool = ThreadPoolExecutor(opts.conc_inflight)
        try:
            list(pool.map(open_one, range(n)))
        finally:  # on Ctrl-C, open no more
            pool.shutdown(cancel_futures=True)
        open_seconds = time.monotonic() - start
        opened = [(i, s) for i, s in enumerate(sockets) if s is not None]
        time.sleep(1.0)  # let both ends settle before measuring
        at_n = {side: tree_rss_kib(pid) for side, pid in roots.items()}
        fds = {side: tree_fds(pid) for side, pid in roots.items()}

        # Second echo on every connection at once: all sent, then all read.
        start = time.monotonic()
        echo_deadline = start + CONC_PHASE_TIMEOUT
        second_ok = 0
        sent = []
        for i, s in opened:
            try:
                s.sendall(echo_message(n + i))
                sent.append((i, s))
            except OSError as e:
                failures["second echo: " + _describe(e)] += 1
        for i, s in sent:
            try:
                s.settimeout(max(0.1, echo_deadline - time.monotonic()))
                if recv_exact(s, ECHO_LEN) == echo_message(n + i):
                    second_ok += 1
                else:
                    wrong.append(i)
            except (OSError, VerifyError) as e:
                failures["second echo: " + _describe(e)] += 1
        echo_seconds = time.monotonic() - start
    finally:
        for held in sockets:
            if held is not None:
                held.close()
    if wrong:
        raise VerifyError(f"{len(wrong)} connections echoed wrong data (first: {wrong[0]})")
    metrics: dict[str, float] = {
        "n": n,
        "ok": len(opened),
        "ok2": second_ok,
        "open_s": open_seconds,
        "echo2_s": echo_seconds,
    }
    for side in roots:
        metrics[f"{side}_rss_before_kib"] = before[side]
        metrics[f"{side}_rss_at_n_kib"] = at_n[side]
        metrics[f"{side}_fds_at_n"] = fds[side]
        if opened:
            metrics[f"{side}_kib_per_conn"] = (at_n[side] - before[side]) / len(opened)
    notes = [f"{count} x {reason}" for reason, count in failures.most_common()]
    return TestResult(metrics, notes)


TESTS: dict[str, Callable[[Instance, Options], TestResult]] = {
    "bulk_up": test_bulk_up,
    "bulk_down": test_bulk_down,
    "par8": test_par8,
    "connrate": test_connrate,
    "conc": test_conc,
}
BULK_TESTS = {"bulk_up", "bulk_down", "par8"}


class PeakRss:
    """Highest VmRSS (KiB) of each process tree while in the block, sampled every 0.25 s."""

    def __init__(self, roots: dict[str, int]) -> None:
        self.roots = roots
        self.peak = dict.fromkeys(roots, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        for side, pid in self.roots.items():
            self.peak[side] = max(self.peak[side], tree_rss_kib(pid))

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            self._sample()

    def __enter__(self) -> PeakRss:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


def run_test(inst: Instance, test: str, opts: Options) -> dict[str, Any]:
    """One test on a started pair, as a JSON-able record; never raises for a test's failure."""
    record: dict[str, Any] = {"status": "ok", "metrics": {}, "notes": []}
    peak = PeakRss(inst.roots())
    try:
        with peak:
            result = TESTS[test](inst, opts)
        record.update(metrics=result.metrics, notes=result.notes)
    except VerifyError as e:
        record.update(status="failed", notes=[str(e)])
    except Exception as e:  # a benchmark records what went wrong and carries on
        record.update(status="error", notes=[_describe(e)])
    dead = [child.ended() for child in inst.children() if not child.alive()]
    if dead:
        record["status"] = "error" if record["status"] == "ok" else record["status"]
        record["notes"] = [*record["notes"], *dead]
    if test in BULK_TESTS and peak.peak:
        record["peak_rss_kib"] = peak.peak
    return record


# ----------------------------------------------------------------------------------------------
# Tables


# A column's value, from the records of one pair in one repetition (None: no value).
Extract = Callable[[list[dict[str, Any]]], float | None]


@dataclass(frozen=True)
class Column:
    title: str
    tests: tuple[str, ...]  # the tests the value comes from
    value: Extract
    digits: int = 1
    ratio: bool = True
    suffix: str = ""
    verified: bool = True  # a data verification failure makes the cell FAILED


FAILED = "FAILED"


def _metric(test: str, name: str, scale: float = 1.0) -> Extract:
    def value(records: list[dict[str, Any]]) -> float | None:
        for record in records:
            if record["test"] == test and record["status"] == "ok" and name in record["metrics"]:
                return float(record["metrics"][name]) * scale
        return None

    return value


def _peak(side: str) -> Extract:
    def value(records: list[dict[str, Any]]) -> float | None:
        peaks = [r["peak_rss_kib"][side] for r in records if side in r.get("peak_rss_kib", {})]
        return max(peaks) / 1024 if peaks else None

    return value


def columns(opts: Options) -> tuple[list[Column], list[Column]]:
    rates = [
        Column("bulk_up MB/s", ("bulk_up",), _metric("bulk_up", "mbps")),
        Column("bulk_down MB/s", ("bulk_down",), _metric("bulk_down", "mbps")),
        Column("par8 MB/s", ("par8",), _metric("par8", "mbps")),
        Column("connrate conn/s", ("connrate",), _metric("connrate", "conn_s")),
        Column("p50 ms", ("connrate",), _metric("connrate", "p50_ms"), 2),
        Column("p99 ms", ("connrate",), _metric("connrate", "p99_ms"), 2),
    ]
    memory = [
        Column("conc ok", ("conc",), _metric("conc", "ok"), 0, False, f"/{opts.conc}"),
        Column("2nd echo ok", ("conc",), _metric("conc", "ok2"), 0, False, f"/{opts.conc}"),
        Column("conc open s", ("conc",), _metric("conc", "open_s"), 2),
        Column("server KiB/conn", ("conc",), _metric("conc", "server_kib_per_conn")),
        Column("client KiB/conn", ("conc",), _metric("conc", "client_kib_per_conn")),
        Column("peak server MiB", tuple(BULK_TESTS), _peak("server"), verified=False),
        Column("peak client MiB", tuple(BULK_TESTS), _peak("client"), verified=False),
    ]
    return rates, memory


def _cell(column: Column, pair: str, by_rep: dict[int, dict[str, list[dict[str, Any]]]]) -> str:
    relevant = [
        r for reps in by_rep.values() for r in reps.get(pair, []) if r["test"] in column.tests
    ]
    if not relevant:
        return ""
    if column.verified and any(r["status"] == "failed" for r in relevant):
        return FAILED
    values, ratios = [], []
    for reps in by_rep.values():
        value = column.value(reps.get(pair, []))
        if value is None:
            continue
        values.append(value)
        reference = column.value(reps.get(REFERENCE, []))
        if reference:
            ratios.append(value / reference)
    if not values:
        return "error" if any(r["status"] == "error" for r in relevant) else "-"
    text = f"{statistics.median(values):.{column.digits}f}{column.suffix}"
    if column.ratio and ratios and pair != REFERENCE:
        text += f" ({statistics.median(ratios):.2f}x)"
    if any(r["status"] == "error" for r in relevant):
        text += " !"
    return text


def _render(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), rule, *(line(row) for row in rows)])


def report(
    records: list[dict[str, Any]], pairs: Sequence[str], tests: Sequence[str], opts: Options
) -> str:
    by_rep: dict[int, dict[str, list[dict[str, Any]]]] = {}
    for r in records:
        by_rep.setdefault(r["rep"], {}).setdefault(r["pair"], []).append(r)
    ciphers = {r["pair"]: r["cipher"] for r in records if r.get("cipher")}
    out = []
    for table in columns(opts):
        shown = [c for c in table if any(t in tests for t in c.tests)]
        if not shown:
            continue
        header = ["pair", "cipher"] + [c.title for c in shown]
        rows = [
            [pair, ciphers.get(pair, "")] + [_cell(c, pair, by_rep) for c in shown]
            for pair in pairs
            if any(pair in reps for reps in by_rep.values())
        ]
        if not rows:
            return "no results"
        out.append(_render(header, rows))
    problems = [
        f"- rep {r['rep']} {r['pair']} {r['test']}: {r['status'].upper()}: "
        + "; ".join(r["notes"]).replace("\n", "\n    ")
        for r in records
        if r["status"] != "ok" or r["notes"]
    ]
    if problems:
        out.append("Problems:\n" + "\n".join(problems))
    return "\n\n".join(out)


# ----------------------------------------------------------------------------------------------
# Main


def raise_nofile_limit() -> int:
    """Soft RLIMIT_NOFILE up to the hard limit; children inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def _names(text: str, known: Sequence[str], what: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown {what} {', '.join(unknown) or '(none)'}; choose from {', '.join(known)}"
        )
    return names


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    parser.add_argument(
        "--pairs",
        type=lambda t: _names(t, list(PAIRS), "pair"),
        default=DEFAULT_PAIRS,
        help=f"comma-separated, from {', '.join(PAIRS)} [default: {','.join(DEFAULT_PAIRS)}]",
    )
    parser.add_argument(
        "--tests",
        type=lambda t: _names(t, list(TESTS), "test"),
        default=list(TESTS),
        help=f"comma-separated, from {', '.join(TESTS)} [default: all]",
    )
    parser.add_argument("--reps", type=int, default=3, help="repetitions [default: 3]")
    parser.add_argument(
        "--duration", type=float, default=4.0, help="seconds per bulk test [default: 4]"
    )
    parser.add_argument(
        "--conns", type=int, default=500, help="sequential connections of connrate [default: 500]"
    )
    parser.add_argument(
        "--conc", type=int, default=1000, help="connections held by conc [default: 1000]"
    )
    parser.add_argument(
        "--conc-inflight", type=int, default=50, help="conc's connects in flight [default: 50]"
    )
    parser.add_argument("--json", type=Path, help="append raw results (JSON lines) to this file")
    parser.add_argument("--logdir", type=Path, help="keep the processes' logs here")
    parser.add_argument(
        "--checkout",
        type=Path,
        default=CHECKOUT,
        help="the twisted-rfwd source tree whose plugins run [default: this one]",
    )
    parser.add_argument("--app-server", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def _interrupt(signum: int, frame: object) -> NoReturn:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    if args.app_server:
        app_server_main()
    opts = Options(args.duration, args.conns, args.conc, args.conc_inflight)
    pairs: list[str] = args.pairs
    tests: list[str] = args.tests
    checkout: Path = args.checkout.resolve()
    if not (checkout / "twisted_rfwd").is_dir():
        print(f"{checkout} holds no twisted_rfwd", file=sys.stderr)
        return 2
    limit = raise_nofile_limit()
    if "conc" in tests and opts.conc + 200 > limit:
        print(f"note: {opts.conc} connections need more than the {limit} file descriptors allowed")
    # Even when started in the background with SIGINT ignored: every way of stopping us cleans up.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)

    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    print(
        f"rfwd benchmark {started}: pairs {','.join(pairs)}; tests {','.join(tests)}; "
        f"{args.reps} reps; bulk {opts.duration:g} s; connrate {opts.conns}; "
        f"conc {opts.conc} ({opts.conc_inflight} in flight); rfwd from {checkout}",
        flush=True,
    )
    records: list[dict[str, Any]] = []
    tmp = Path(tempfile.mkdtemp(prefix="rfwd-bench-"))
    logdir: Path = args.logdir.resolve() if args.logdir else tmp / "logs"
    interrupted = False
    try:
        keys = make_keys(tmp)
        serial = 0
        for rep in range(args.reps):
            order = pairs[rep % len(pairs) :] + pairs[: rep % len(pairs)]
            for test in tests:
                for pair in order:
                    serial += 1
                    workdir = logdir / f"{serial:03d}-rep{rep}-{test}-{pair.replace('>', '-to-')}"
                    record = _run_pair_test(PAIRS[pair], test, opts, keys, workdir, checkout)
                    record.update(rep=rep, pair=pair, test=test, started=started)
                    records.append(record)
                    print(_progress(record), flush=True)
    except KeyboardInterrupt:
        interrupted = True
        print("interrupted; results so far:", file=sys.stderr)
    finally:
        for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(number, signal.SIG_IGN)  # a second Ctrl-C must not leave processes
        stop_all()
        shutil.rmtree(tmp, ignore_errors=True)

    print()
    print(report(records, pairs, tests, opts))
    print(
        f"\ncells: median over reps ({REFERENCE} = 1.00x: median of per-rep ratios); MB/s = 1e6 B/s"
    )
    if args.json:
        with open(args.json, "a") as f:
            run = {"type": "run", "started": started, "argv": list(argv), "python": sys.version}
            f.write(json.dumps(run) + "\n")
            for record in records:
                f.write(json.dumps({"type": "result", **record}) + "\n")
    return 130 if interrupted else 0


def _run_pair_test(
    spec: PairSpec, test: str, opts: Options, keys: Keys, workdir: Path, checkout: Path
) -> dict[str, Any]:
    try:
        inst = start_instance(spec, keys, workdir, checkout)
    except StartError as e:
        return {"status": "error", "metrics": {}, "notes": [f"start: {e}"], "cipher": ""}
    try:
        record = run_test(inst, test, opts)
        record["cipher"] = inst.cipher
        return record
    finally:
        inst.stop()
        time.sleep(0.2)


def _progress(record: dict[str, Any]) -> str:
    metrics = record["metrics"]
    shown = ", ".join(
        f"{k}={v:.0f}" if float(v).is_integer() else f"{k}={v:.4g}"
        for k, v in metrics.items()
        if not k.endswith(("_kib", "bytes", "fds_at_n"))
    )
    notes = f" [{'; '.join(record['notes'])[:200]}]" if record["notes"] else ""
    where = f"rep {record['rep']} {record['test']:<9} {record['pair']:<11}"
    return f"{where} {record['status']}:{' ' if shown else ''}{shown}{notes}"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
