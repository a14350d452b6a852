"""
The README's "Embedding API" code, run as written against a real server on loopback, and
C{examples/demo.py}, the complete program it points to.

Each Python block of that section is compiled with top-level C{await} allowed and run in the
test's reactor, in one namespace that holds C{reactor} (the running reactor the section speaks
of) and C{print}.  Only placeholders change: host names, ports, file paths and the user name.
"""

from __future__ import annotations

import ast
import getpass
import os
import re
import signal
import sys
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.trial.unittest import TestCase

from harness.keys import Keys, make_keys
from tests.support.processes import REPOSITORY, free_port, plugin_env, spawn
from twisted_rfwd import RfwdError, load_host_key

README = REPOSITORY / "README.md"


def reactor() -> Any:
    from twisted.internet import reactor as r

    return r


def embedding_blocks(readme: str) -> list[str]:
    """The C{```python} blocks of the README's "Embedding API" section, in order."""
    section = re.search(r"^## Embedding API\n(.*?)(?=^## )", readme, re.S | re.M)
    if section is None:
        raise AssertionError("README.md has no '## Embedding API' section")
    return re.findall(r"^```python\n(.*?)^```", section.group(1), re.S | re.M)


def substitute(code: str, values: dict[str, str]) -> str:
    """The README's placeholders (each exactly as written there) replaced by the test's."""
    for placeholder, value in values.items():
        code = code.replace(placeholder, value)
    return code


class ReadmeEmbeddingTests(TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.keys: Keys = make_keys(Path(self.mktemp()))
        # "~" is the test's folder while the README code runs: nothing of the real home is
        # read or written, whichever known_hosts the README names.
        home = self.keys.workdir / "home"
        (home / ".ssh").mkdir(parents=True)
        self.known_hosts = home / ".ssh" / "known_hosts"
        self.patch(os, "environ", {**os.environ, "HOME": str(home)})
        self.printed: list[tuple[Any, ...]] = []

    def placeholders(self, ssh_port: int, second_port: int) -> dict[str, str]:
        return {
            '"/etc/rfwd/ssh_host_ed25519_key"': repr(str(self.keys.host_key)),
            '"/etc/rfwd/keys"': repr(str(self.keys.authorized_keys)),
            '"tcp:2022"': repr(f"tcp:{ssh_port}:interface=127.0.0.1"),
            "port=2022": f"port={ssh_port}",
            '"hostb.example"': '"127.0.0.1"',
            'user="tunnel"': f"user={getpass.getuser()!r}",
            '"/home/me/.ssh/id_ed25519"': repr(str(self.keys.user_key)),
            '"/home/me/.ssh/known_hosts"': repr(str(self.known_hosts)),
            '"9000:localhost:9000"': repr(f"{second_port}:localhost:9000"),
        }

    async def run_block(self, code: str, namespace: dict[str, Any]) -> None:
        """One block, top-level C{await}s included, in the running reactor."""
        compiled = compile(code, "README.md", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        result = eval(compiled, namespace)
        if result is not None:
            await Deferred.fromCoroutine(result)

    async def test_embedding_section_runs_as_written(self) -> None:
        """The README's embedding code serves, connects, gets its port 0 forward allocated,
        adds a forward, cancels it (it leaves tunnel.forwards) and closes with a reason."""
        blocks = embedding_blocks(README.read_text(encoding="utf-8"))
        self.assertTrue(blocks, "no python block in the README's Embedding API section")
        ssh_port, second_port = free_port(), free_port()
        # The client checks the host key: the server's, recorded as ssh-keyscan would.
        host_public = load_host_key(str(self.keys.host_key)).public().toString("OPENSSH")
        self.known_hosts.write_bytes(b"[127.0.0.1]:%d " % ssh_port + host_public + b"\n")
        namespace: dict[str, Any] = {
            "reactor": reactor(),
            "print": lambda *args, **kw: self.printed.append(args),
        }
        try:
            for block in blocks:
                await self.run_block(
                    substitute(block, self.placeholders(ssh_port, second_port)), namespace
                )
        finally:
            tunnel, port = namespace.get("tunnel"), namespace.get("port")
            if tunnel is not None:
                await tunnel.close()
            if port is not None:
                await maybeDeferred(port.stopListening)
        tunnel = namespace["tunnel"]
        allocated = tunnel.forwards[0].port
        self.assertIsInstance(allocated, int)
        self.assertEqual(self.printed, [(allocated,)])
        self.assertEqual([state.spec.listen_port for state in tunnel.forwards], [0])
        self.assertIsInstance(namespace["reason"], RfwdError)


class DemoTests(TestCase):
    timeout = 60

    async def test_keep_running_removes_its_folder_on_ctrl_c(self) -> None:
        """demo.py --keep-running, stopped by SIGINT as Ctrl-C stops it, removes its
        temporary folder of throwaway keys."""
        demo = spawn(
            self,
            reactor(),
            "demo",
            [sys.executable, "-u", str(REPOSITORY / "examples" / "demo.py"), "--keep-running"],
            env=plugin_env(),
        )
        match = await demo.wait_for(r"Throwaway keys and files in (\S+)")
        folder = Path(match.group(1))
        await demo.wait_for(r"Ctrl-C to stop", timeout=45)
        self.assertTrue(folder.is_dir())
        demo.signal(signal.SIGINT)
        await demo.wait_ended(20)
        self.assertFalse(folder.exists(), demo.output())
