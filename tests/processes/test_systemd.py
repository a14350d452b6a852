"""
The units of examples/systemd: C{systemd-analyze verify}, and each unit's C{ExecStart} run as
systemd would run it (specifiers, C{Environment=}, the instance's file, the directories systemd
makes), with C{NOTIFY_SOCKET} at a socket of the test: READY=1 comes once the server listens
and once the client's forward listens, never before, and STATUS= and STOPPING=1 are sent.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import SkipTest, TestCase

from tests.support.apps import echo_ok, start_app_server
from tests.support.pairs import make_keys, start_rfwd_server
from tests.support.processes import REPOSITORY, ProcessFailed, free_port, plugin_env, spawn
from tests.support.processes import twistd_argv as checkout_twistd_argv
from twisted_rfwd.server.host_keys import DEFAULT_KEY_NAME
from twisted_rfwd.tap import client as client_tap
from twisted_rfwd.tap import server as server_tap

UNITS = REPOSITORY / "examples" / "systemd"
SERVER_UNIT = UNITS / "rfwd-server.service"
CLIENT_UNIT = UNITS / "rfwd-client@.service"
SHIPPED_TWISTD = "/usr/local/bin/twistd"
INSTANCE = "test"


def service_section(unit: Path) -> list[tuple[str, str]]:
    """The C{[Service]} directives of a unit file, in order (continuation lines joined)."""
    directives: list[tuple[str, str]] = []
    section = None
    pending = ""
    for raw in unit.read_text().splitlines():
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
            continue
        if section == "[Service]":
            key, _, value = line.partition("=")
            directives.append((key.strip(), value.strip()))
    return directives


def values(directives: list[tuple[str, str]], key: str) -> list[str]:
    return [value for name, value in directives if name == key]


class Systemd:
    """What systemd gives a unit's processes, with the test's own directories."""

    def __init__(self, root: Path, instance: str = "") -> None:
        self.root = root
        self.specifiers = {
            "S": str(root / "var-lib"),
            "t": str(root / "run"),
            "d": str(root / "credentials"),
            "i": instance,
            "%": "%",
        }

    def expand(self, text: str) -> str:
        def specifier(match: re.Match[str]) -> str:
            found = self.specifiers.get(match.group(1))
            if found is None:
                raise AssertionError(f"specifier %{match.group(1)} not known to this test")
            return found

        return re.sub(r"%(.)", specifier, text)

    def prepare(self, directives: list[tuple[str, str]]) -> None:
        """Make the StateDirectory= and RuntimeDirectory= directories, as systemd does."""
        for key, base in (("StateDirectory", "S"), ("RuntimeDirectory", "t")):
            for value in values(directives, key):
                for name in value.split():
                    path = Path(self.specifiers[base]) / self.expand(name)
                    path.mkdir(parents=True, mode=0o700)
        Path(self.specifiers["d"]).mkdir(mode=0o700)

    def environment(
        self, directives: list[tuple[str, str]], environment_file: Mapping[str, str]
    ) -> dict[str, str]:
        """Environment= assignments, then the EnvironmentFile's (which win)."""
        found: dict[str, str] = {}
        for value in values(directives, "Environment"):
            for assignment in shlex.split(self.expand(value)):
                name, _, setting = assignment.partition("=")
                found[name] = setting
        found.update(environment_file)
        return found

    def exec_start(
        self, directives: list[tuple[str, str]], environment: Mapping[str, str]
    ) -> list[str]:
        """ExecStart's command line: specifiers, then C{$NAME} (split) and C{${NAME}} (one word)."""
        [command] = values(directives, "ExecStart")
        words: list[str] = []
        for raw in shlex.split(command):
            word = self.expand(raw)
            whole = re.fullmatch(r"\$([A-Za-z_][A-Za-z0-9_]*)", word)
            if whole:
                words += environment[whole.group(1)].split()
                continue
            words.append(
                re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", lambda m: environment[m.group(1)], word)
            )
        return words


def checkout_argv(words: list[str]) -> list[str]:
    """
    The unit's twistd command line, run by this interpreter on this checkout's code: the
    command must be the documented twistd, in the foreground (C{-n}) with no pid file.
    """
    if words[0] != SHIPPED_TWISTD or words[1:3] != ["-n", "--pidfile="]:
        raise AssertionError(f"ExecStart is not '{SHIPPED_TWISTD} -n --pidfile= ...': {words}")
    return checkout_twistd_argv(words[3], *words[4:])


class NotifySocket(DatagramProtocol):
    """systemd's end of NOTIFY_SOCKET: the datagrams, and waits for one."""

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self.datagrams: list[bytes] = []
        self._waiters: list[tuple[Callable[[bytes], bool], Deferred[bytes]]] = []
        self.on_datagram: Callable[[bytes], None] = lambda data: None

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        self.on_datagram(data)
        self.datagrams.append(data)
        for waiter in list(self._waiters):
            if waiter[0](data):
                self._waiters.remove(waiter)
                waiter[1].callback(data)

    def wait_for(self, prefix: bytes, timeout: float = 30.0) -> Deferred[bytes]:
        """The first datagram starting with C{prefix}, received already or within C{timeout}."""
        for data in self.datagrams:
            if data.startswith(prefix):
                return defer.succeed(data)
        d: Deferred[bytes] = Deferred()
        waiter = (lambda data: data.startswith(prefix), d)
        self._waiters.append(waiter)

        def timed_out(failure: Any) -> Any:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
            if failure.check(defer.TimeoutError):
                raise ProcessFailed(
                    f"no {prefix!r} notification within {timeout}s; got {self.datagrams}"
                )
            return failure

        return d.addTimeout(timeout, self.reactor).addErrback(timed_out)


def accepts(port: int) -> bool:
    """Whether a TCP connection to the loopback port is accepted now."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            return True
    except OSError:
        return False


class UnitProcessTests(TestCase):
    timeout = 90

    @property
    def reactor(self) -> Any:
        from twisted.internet import reactor

        return reactor

    def short_directory(self) -> Path:
        """A directory with a short path (a socket's path has room for about 100 bytes)."""
        directory = tempfile.mkdtemp(prefix="rfwd-systemd-")
        self.addCleanup(shutil.rmtree, directory, True)
        return Path(directory)

    def notify_socket(self, directory: Path) -> tuple[NotifySocket, str]:
        protocol = NotifySocket(self.reactor)
        path = str(directory / "notify")
        port = self.reactor.listenUNIXDatagram(path, protocol)
        self.addCleanup(port.stopListening)
        return protocol, path

    async def test_server_unit(self) -> None:
        """
        rfwd-server run as its unit's ExecStart: READY=1 with "listening on" once the port
        accepts connections, the host key generated in the StateDirectory, STOPPING=1 on
        SIGTERM, then exit 0.
        """
        root = self.short_directory()
        keys = make_keys(root / "keys")
        notify, notify_path = self.notify_socket(root)
        port = free_port()
        systemd = Systemd(root)
        directives = service_section(SERVER_UNIT)
        self.assertEqual(values(directives, "Type"), ["notify"])
        systemd.prepare(directives)
        environment = systemd.environment(
            directives,
            {
                "RFWD_SERVER_ARGS": f"--listen tcp:{port}:interface=127.0.0.1 "
                f"--authorized-keys {keys.authorized_keys}"
            },
        )
        argv = checkout_argv(systemd.exec_start(directives, environment))
        accepted_when_ready: list[bool] = []
        notify.on_datagram = lambda data: (
            accepted_when_ready.append(accepts(port)) if data.startswith(b"READY=1") else None
        )
        server = spawn(
            self,
            self.reactor,
            "rfwd-server",
            argv,
            env={**plugin_env(), "NOTIFY_SOCKET": notify_path},
        )
        ready = await notify.wait_for(b"READY=1")
        self.assertEqual(ready, f"READY=1\nSTATUS=listening on 127.0.0.1:{port}\n".encode())
        self.assertEqual(accepted_when_ready, [True])
        self.assertEqual(notify.datagrams, [ready])
        state = Path(systemd.specifiers["S"]) / "twisted-rfwd"
        self.assertTrue((state / DEFAULT_KEY_NAME).is_file())
        server.signal(signal.SIGTERM)
        self.assertEqual(await notify.wait_for(b"STOPPING=1"), b"STOPPING=1\n")
        await server.wait_ended()
        self.assertEqual(server.exit_code, 0, server.output())

    async def test_client_unit(self) -> None:
        """
        rfwd-client@test run as its unit's ExecStart: "connecting" while its server is down
        and no READY=1; READY=1 with "connected ..., 1 forward listening" only once the
        forward's port accepts connections; the status file in the RuntimeDirectory and the
        accepted host key in the StateDirectory; STOPPING=1 on SIGTERM, then exit 0.
        """
        root = self.short_directory()
        keys = make_keys(root / "keys")
        notify, notify_path = self.notify_socket(root)
        _app, app_port = await start_app_server(self.reactor)
        self.addCleanup(app_port.stopListening)
        target = app_port.getHost().port  # type: ignore[attr-defined]
        ssh_port, listen = free_port(), free_port()
        systemd = Systemd(root, INSTANCE)
        directives = service_section(CLIENT_UNIT)
        self.assertEqual(values(directives, "Type"), ["notify"])
        self.assertEqual(values(directives, "Restart"), ["always"])
        systemd.prepare(directives)
        # LoadCredential=identity:/etc/rfwd/client/%i.key, with the test's key.
        [credential] = values(directives, "LoadCredential")
        self.assertEqual(credential, "identity:/etc/rfwd/client/%i.key")
        identity = Path(systemd.specifiers["d"]) / "identity"
        shutil.copy(keys.user_key, identity)
        os.chmod(identity, 0o600)
        environment = systemd.environment(
            directives,
            {
                "RFWD_ARGS": f"-p {ssh_port} -o StrictHostKeyChecking=accept-new "
                "--reconnect-delay 0.2 --reconnect-max-delay 0.5 "
                f"-R 127.0.0.1:{listen}:127.0.0.1:{target} {keys.user}@127.0.0.1"
            },
        )
        argv = checkout_argv(systemd.exec_start(directives, environment))
        accepted_when_ready: list[bool] = []
        notify.on_datagram = lambda data: (
            accepted_when_ready.append(accepts(listen)) if data.startswith(b"READY=1") else None
        )
        client = spawn(
            self,
            self.reactor,
            "rfwd-client",
            argv,
            env={**plugin_env(), "SSH_AUTH_SOCK": "", "NOTIFY_SOCKET": notify_path},
        )
        server_address = f"127.0.0.1:{ssh_port}"
        connecting = await notify.wait_for(b"STATUS=")
        self.assertEqual(connecting, f"STATUS=connecting to {server_address}\n".encode())
        # Its server down, it retries and is not ready: wait for a retry it logs, then look.
        await client.wait_for(r"Next connection attempt in")
        await client.wait_for(r"Next connection attempt in", after=client.mark())
        # Only statuses: "connecting", maybe "not connected ...: Connection refused; retrying".
        self.assertEqual([d for d in notify.datagrams if not d.startswith(b"STATUS=")], [])
        self.assertNotIn(b"READY=1", b"".join(notify.datagrams))

        await start_rfwd_server(self, self.reactor, keys, port=ssh_port)
        ready = await notify.wait_for(b"READY=1")
        self.assertEqual(
            ready,
            f"READY=1\nSTATUS=connected to {server_address}, 1 forward listening\n".encode(),
        )
        self.assertEqual(accepted_when_ready, [True])
        self.assertTrue(await echo_ok(self.reactor, listen))

        status = Path(systemd.specifiers["t"]) / "rfwd-client" / INSTANCE / "status.json"
        self.assertIn('"state": "connected"', status.read_text())
        known_hosts = Path(systemd.specifiers["S"]) / "twisted-rfwd-client" / INSTANCE
        self.assertIn("ssh-ed25519", (known_hosts / "known_hosts").read_text())

        client.signal(signal.SIGTERM)
        self.assertEqual(await notify.wait_for(b"STOPPING=1"), b"STOPPING=1\n")
        await client.wait_ended()
        self.assertEqual(client.exit_code, 0, client.output())


def environment_file(path: Path) -> dict[str, str]:
    """An EnvironmentFile's assignments: C{NAME=value}, the value maybe in double quotes."""
    found = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith(("#", ";")):
            name, _, value = line.partition("=")
            [found[name.strip()]] = shlex.split(value) or [""]
    return found


class ExampleFileTests(TestCase):
    def test_example_arguments_are_accepted(self) -> None:
        """
        Each unit's command line with the example settings files (rfwd-server.conf and
        rfwd-client.conf) is one the plugin's options accept, meaning what the files say.
        """
        root = Path(self.mktemp()).resolve()
        root.mkdir()
        directives = service_section(SERVER_UNIT)
        systemd = Systemd(root)
        settings = environment_file(UNITS / "rfwd-server.conf")
        words = systemd.exec_start(directives, systemd.environment(directives, settings))
        server_options = server_tap.Options()
        server_options.parseOptions(checkout_argv(words)[6:])
        self.assertEqual(server_options["listen"], "tcp:22")
        self.assertEqual(server_options["state-dir"], f"{root}/var-lib/twisted-rfwd")

        directives = service_section(CLIENT_UNIT)
        systemd = Systemd(root, INSTANCE)
        systemd.prepare(directives)
        keys = make_keys(root / "keys")
        shutil.copy(keys.user_key, Path(systemd.specifiers["d"]) / "identity")
        settings = environment_file(UNITS / "rfwd-client.conf")
        words = systemd.exec_start(directives, systemd.environment(directives, settings))
        client_options = client_tap.Options()
        client_options.parseOptions(checkout_argv(words)[6:])
        config = client_options["config"]
        self.assertEqual(
            (config.user, config.host, config.port), ("tunnel", "hostb.example.org", 22)
        )
        self.assertEqual([str(f) for f in config.forwards], ["2222:localhost:22"])
        self.assertEqual(
            config.known_hosts, [f"{root}/var-lib/twisted-rfwd-client/{INSTANCE}/known_hosts"]
        )
        self.assertEqual(config.status_file, f"{root}/run/rfwd-client/{INSTANCE}/status.json")


def systemd_analyze() -> str:
    """systemd-analyze's path; skip where it is missing, unless CI requires it."""
    found = shutil.which("systemd-analyze")
    if found:
        return found
    message = "systemd-analyze is not installed (Debian package systemd)"
    if os.environ.get("RFWD_REQUIRE_OPENSSH"):
        raise ProcessFailed(message + " (RFWD_REQUIRE_OPENSSH is set)")
    raise SkipTest(message)


class VerifyTests(TestCase):
    timeout = 60

    async def test_systemd_analyze_verify(self) -> None:
        """
        systemd-analyze verify finds nothing to say about either unit (the template as an
        instance), with ExecStart pointing at this environment's twistd (verify checks that
        the program exists).
        """
        from twisted.internet import reactor

        analyze = systemd_analyze()
        twistd = Path(sys.executable).with_name("twistd")
        program = str(twistd) if twistd.exists() else sys.executable
        directory = Path(self.mktemp()).resolve()
        directory.mkdir()
        copies = []
        for unit, name in (
            (SERVER_UNIT, SERVER_UNIT.name),
            (CLIENT_UNIT, f"rfwd-client@{INSTANCE}.service"),
        ):
            text = unit.read_text()
            self.assertIn(f"ExecStart={SHIPPED_TWISTD} -n --pidfile= ", text)
            copy = directory / name
            copy.write_text(text.replace(f"ExecStart={SHIPPED_TWISTD} ", f"ExecStart={program} "))
            copies.append(str(copy))
        out, err, code = await getProcessOutputAndValue(
            analyze,
            ["verify", "--man=no", *copies],
            env=dict(os.environ),
            path=str(directory),
            reactor=reactor,
        )
        self.assertEqual(
            (code, err.decode(errors="replace")), (0, ""), out.decode(errors="replace")
        )
