"""
The two twistd plugins as a user meets them: usage errors, exit statuses, the messages that say
what went wrong (and never a traceback), and the plugins' presence in C{twistd --help}.
"""

from __future__ import annotations

import os
import socket
import sys
from importlib.metadata import distributions
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SkipTest, TestCase

from harness.plugins import SERVER_LISTENING, rfwd_server_argv
from tests.support.apps import start_app_server, wait_until_echo
from tests.support.keys import new_key, public_line
from tests.support.pairs import Keys, make_keys, ssh_config, start_rfwd_client, start_rfwd_server
from tests.support.processes import (
    REPOSITORY,
    ChildProcess,
    free_port,
    openssh_binary,
    plugin_env,
    spawn,
    twistd_argv,
)
from twisted_rfwd.ssh.fingerprint import fingerprint


def reactor() -> Any:
    from twisted.internet import reactor as r

    return r


class CommandTestCase(TestCase):
    timeout = 60

    def keys(self) -> Keys:
        return make_keys(Path(self.mktemp()))

    async def run_plugin(self, plugin: str, *arguments: str) -> ChildProcess:
        child = spawn(self, reactor(), plugin, twistd_argv(plugin, *arguments), env=plugin_env())
        await child.wait_ended(30)
        return child

    def assertNoTraceback(self, child: ChildProcess) -> None:
        self.assertNotIn("Traceback", child.output(1000))


class ClientUsageTests(CommandTestCase):
    async def test_bad_forward_spec(self) -> None:
        """A bad -R is a usage error naming the spec, with a non-zero exit and no traceback."""
        child = await self.run_plugin("rfwd-client", "-R", "8080:localhost", "-i", "/dev/null", "h")
        self.assertNotEqual(child.exit_code, 0)
        self.assertIn("Bad remote forwarding specification '8080:localhost'", child.output())
        self.assertNoTraceback(child)

    async def test_missing_destination(self) -> None:
        """Without [user@]host rfwd-client says so."""
        child = await self.run_plugin("rfwd-client", "-R", "8080:localhost:80")
        self.assertNotEqual(child.exit_code, 0)
        self.assertIn("no destination", child.output())
        self.assertNoTraceback(child)

    async def test_unreadable_identity(self) -> None:
        """An identity file that cannot be read is named, with the reason."""
        missing = str(Path(self.mktemp()).resolve() / "nope")
        child = await self.run_plugin("rfwd-client", "-R", "8080:h:80", "-i", missing, "host")
        self.assertNotEqual(child.exit_code, 0)
        self.assertIn(f"cannot load key {missing}: No such file or directory", child.output())
        self.assertNoTraceback(child)

    async def test_unknown_option(self) -> None:
        """An -o option rfwd-client does not know is refused by name."""
        child = await self.run_plugin(
            "rfwd-client", "-o", "Frobnicate=yes", "-R", "8080:h:80", "host"
        )
        self.assertNotEqual(child.exit_code, 0)
        self.assertIn("unsupported option 'Frobnicate'", child.output())


class HostKeyTests(CommandTestCase):
    async def start_server(self) -> tuple[Keys, int]:
        keys = self.keys()
        _, port = await start_rfwd_server(self, reactor(), keys)
        return keys, port

    async def run_client(self, keys: Keys, port: int, *options: str) -> ChildProcess:
        return await self.run_plugin(
            "rfwd-client",
            "-p",
            str(port),
            "-i",
            str(keys.user_key),
            "-o",
            f"UserKnownHostsFile={keys.workdir / 'known_hosts'}",
            *options,
            "-R",
            "0:127.0.0.1:9",
            f"{keys.user}@127.0.0.1",
        )

    async def test_unknown_host_key_exits_with_fingerprint(self) -> None:
        """Strict checking (the default): an unknown key ends the client with 255 and advice."""
        keys, port = await self.start_server()
        child = await self.run_client(keys, port)
        self.assertEqual(child.exit_code, 255)
        from twisted.conch.ssh.keys import Key

        expected = fingerprint(Key.fromFile(str(keys.host_key)))
        output = child.output()
        self.assertIn("Host key verification failed", output)
        self.assertIn(expected, output)
        self.assertIn("StrictHostKeyChecking=accept-new", output)
        self.assertNoTraceback(child)
        self.assertFalse((keys.workdir / "known_hosts").exists())

    async def test_changed_host_key_exits(self) -> None:
        """A known host presenting another key: exit 255, naming the known_hosts line."""
        keys, port = await self.start_server()
        other = public_line(new_key()).split(b" ")[:2]
        (keys.workdir / "known_hosts").write_bytes(
            b"# first line\n" + f"[127.0.0.1]:{port} ".encode() + b" ".join(other) + b"\n"
        )
        child = await self.run_client(keys, port)
        self.assertEqual(child.exit_code, 255)
        self.assertIn("HAS CHANGED", child.output())
        self.assertIn(f"{keys.workdir / 'known_hosts'}:2", child.output())
        self.assertNoTraceback(child)

    async def test_known_host_key_connects(self) -> None:
        """A key recorded (hashed) by accept-new is then accepted under strict checking."""
        keys, port = await self.start_server()
        first = start_rfwd_client(self, reactor(), keys, port, ["0:127.0.0.1:9"])
        await first.wait_for(r"Connected to 127\.0\.0\.1")
        await first.stop()
        self.assertTrue((keys.workdir / "known_hosts").read_bytes().startswith(b"|1|"))
        _, app_port = await start_app_server(reactor())
        self.addCleanup(app_port.stopListening)
        listen = free_port()
        destination = app_port.getHost().port  # type: ignore[attr-defined]
        client = start_rfwd_client(
            self,
            reactor(),
            keys,
            port,
            [f"127.0.0.1:{listen}:127.0.0.1:{destination}"],
            host_key_checking="yes",
        )
        await client.wait_for(r"Connected to 127\.0\.0\.1")
        await wait_until_echo(reactor(), listen)


class ForwardFailureTests(CommandTestCase):
    async def test_exit_on_forward_failure(self) -> None:
        """ExitOnForwardFailure=yes and a busy port: exit 255 naming the forward."""
        keys = self.keys()
        server, port = await start_rfwd_server(self, reactor(), keys)
        busy = socket.socket()
        self.addCleanup(busy.close)
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        busy_port = busy.getsockname()[1]
        child = start_rfwd_client(
            self,
            reactor(),
            keys,
            port,
            [f"127.0.0.1:{busy_port}:127.0.0.1:9"],
            "-o",
            "ExitOnForwardFailure=yes",
        )
        await child.wait_ended(30)
        self.assertEqual(child.exit_code, 255)
        self.assertIn(
            f"remote port forwarding failed for listen port 127.0.0.1:{busy_port}", child.output()
        )
        # The server's log line names the user, the address and the port.
        await server.wait_for(
            rf"Refused remote forward for {keys.user} from .*'127\.0\.0\.1' port {busy_port}: "
            r".*Address already in use"
        )

    async def test_refused_forward_warns_and_carries_on(self) -> None:
        """Without ExitOnForwardFailure a refused forward is a warning; the others work."""
        keys = self.keys()
        _, port = await start_rfwd_server(self, reactor(), keys)
        _, app_port = await start_app_server(reactor())
        self.addCleanup(app_port.stopListening)
        busy = socket.socket()
        self.addCleanup(busy.close)
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        listen = free_port()
        child = start_rfwd_client(
            self,
            reactor(),
            keys,
            port,
            [
                f"127.0.0.1:{busy.getsockname()[1]}:127.0.0.1:9",
                f"127.0.0.1:{listen}:127.0.0.1:{app_port.getHost().port}",  # type: ignore[attr-defined]
            ],
        )
        await child.wait_for(r"Warning: remote port forwarding failed")
        await child.wait_for(r"1 of 2 forwards listening")
        await wait_until_echo(reactor(), listen)


class ServerTests(CommandTestCase):
    async def test_busy_listen_port(self) -> None:
        """rfwd-server that cannot listen exits non-zero and says why."""
        keys = self.keys()
        busy = socket.socket()
        self.addCleanup(busy.close)
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        child = await self.run_plugin(
            "rfwd-server",
            "--listen",
            f"tcp:{busy.getsockname()[1]}:interface=127.0.0.1",
            "--host-key",
            str(keys.host_key),
        )
        self.assertEqual(child.exit_code, 255)
        self.assertIn("cannot listen for SSH connections", child.output())
        self.assertIn("Address already in use", child.output())

    async def test_generated_host_key_is_reused(self) -> None:
        """Without --host-key a key is generated once in the state directory, then reused."""
        state = Path(self.mktemp()).resolve()
        fingerprints = []
        for _ in range(2):
            child = spawn(
                self,
                reactor(),
                "rfwd-server",
                twistd_argv(
                    "rfwd-server",
                    "--listen",
                    "tcp:0:interface=127.0.0.1",
                    "--state-dir",
                    str(state),
                ),
                env=plugin_env(),
            )
            match = await child.wait_for(r"Host key ssh-ed25519 (SHA256:\S+)")
            fingerprints.append(match.group(1))
            await child.stop()
        self.assertEqual(fingerprints[0], fingerprints[1])
        self.assertEqual(os.stat(state / "ssh_host_ed25519_key").st_mode & 0o777, 0o600)

    async def test_ssh_without_dash_n_is_refused_clearly(self) -> None:
        """
        With --sessions no, ssh asking for a command gets 'administratively prohibited' with
        our reason.
        """
        keys = self.keys()
        server, port = await start_rfwd_server(self, reactor(), keys, "--sessions", "no")
        config = ssh_config(keys, port)
        ssh = spawn(
            self, reactor(), "ssh", [openssh_binary("ssh"), "-F", str(config), "rfwd-test", "true"]
        )
        await ssh.wait_ended(30)
        self.assertNotEqual(ssh.exit_code, 0)
        self.assertIn("administratively prohibited", ssh.output())
        self.assertIn("only forwards ports", ssh.output())
        await server.wait_for(r"Refused session channel from")


class PluginListingTests(TestCase):
    timeout = 60

    async def test_plugins_listed_from_checkout(self) -> None:
        """twistd --help lists rfwd-server and rfwd-client."""
        child = spawn(
            self, reactor(), "twistd", [*twistd_argv("--help")[:3], "--help"], env=plugin_env()
        )
        await child.wait_ended(30)
        self.assertIn("rfwd-server", child.output(500))
        self.assertIn("rfwd-client", child.output(500))

    async def test_plugins_listed_when_installed(self) -> None:
        """An installed twisted-rfwd's plugins are found by twistd outside the checkout."""
        # A build leaves twisted_rfwd.egg-info in the checkout: that is not an installation.
        locations = {
            Path(str(found.locate_file(""))).resolve()
            for found in distributions(name="twisted-rfwd")
        }
        if not locations - {REPOSITORY}:
            if os.environ.get("RFWD_REQUIRE_INSTALLED"):
                self.fail("twisted-rfwd is not installed, and RFWD_REQUIRE_INSTALLED is set")
            raise SkipTest("twisted-rfwd is not installed in this environment")
        twistd = Path(sys.executable).with_name("twistd")
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        child = ChildProcess("twistd", reactor())
        reactor().spawnProcess(child, str(twistd), [str(twistd), "--help"], env=env, path="/")
        await child.wait_ended(30)
        self.assertIn("rfwd-server", child.output(500))
        self.assertIn("rfwd-client", child.output(500))


class ReactorTests(CommandTestCase):
    """Both plugins run on rfwd's reactor, unless twistd's --reactor asks for another."""

    async def test_plugins_run_on_the_tunnel_reactor(self) -> None:
        server, _ = await start_rfwd_server(self, reactor(), self.keys())
        await server.wait_for(r"reactor class: twisted_rfwd\.ssh\.reactor\.TunnelReactor")

    async def test_reactor_option_wins(self) -> None:
        argv = rfwd_server_argv(self.keys())
        argv.insert(argv.index("rfwd-server"), "--reactor=poll")
        server = spawn(self, reactor(), "rfwd-server", argv, env=plugin_env())
        await server.wait_for(r"reactor class: twisted\.internet\.pollreactor\.PollReactor")
        await server.wait_for(SERVER_LISTENING)
