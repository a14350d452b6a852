"""
rfwd-client facing a changed host key under StrictHostKeyChecking=no, as real processes:
it exits 255 before any login, and no forward opens.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

from twisted.conch.ssh.keys import Key
from twisted.internet import defer
from twisted.logger import ILogObserver
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from tests.support.keys import new_key, public_line
from tests.support.pairs import make_keys, start_rfwd_client, start_rfwd_server
from tests.support.processes import free_port
from twisted_rfwd.ssh.fingerprint import fingerprint


@implementer(ILogObserver)
class ChangedHostKeyProcessTests(TestCase):
    """rfwd-client -> rfwd-server, real processes on loopback."""

    timeout = 60

    @property
    def reactor(self) -> Any:
        from twisted.internet import reactor

        return reactor

    async def test_changed_key_under_no_exits_255_without_login(self) -> None:
        """
        With C{-o StrictHostKeyChecking=no}, C{--password-file} and another key recorded for
        C{[127.0.0.1]:port}, rfwd-client exits 255 with one message naming the changed key;
        the server saw no login attempt and no tcpip-forward, and the forward port never
        listened.
        """
        keys = make_keys(Path(self.mktemp()))
        server, ssh_port = await start_rfwd_server(self, self.reactor, keys)
        known_hosts = keys.workdir / "known_hosts"
        known_hosts.write_bytes(
            f"[127.0.0.1]:{ssh_port} ".encode() + public_line(new_key()) + b"\n"
        )
        password_file = keys.workdir / "password"
        password_file.write_text("hunter2\n")
        listen = free_port()
        client = start_rfwd_client(
            self,
            self.reactor,
            keys,
            ssh_port,
            [f"127.0.0.1:{listen}:127.0.0.1:{free_port()}"],
            "--password-file",
            str(password_file),
            host_key_checking="no",
        )
        try:
            await client.wait_ended(timeout=20)
        except defer.TimeoutError:
            self.fail(f"rfwd-client did not exit:\n{client.output()}")
        self.assertEqual(client.exit_code, 255, client.output())

        server_key = Key.fromFile(str(keys.host_key))
        headline = f"HOST KEY FOR [127.0.0.1]:{ssh_port} HAS CHANGED"
        self.assertEqual(
            len([line for line in client.lines if headline in line]), 1, client.output()
        )
        output = client.output()
        self.assertIn(f"ED25519 key {fingerprint(server_key)}", output)
        self.assertIn(f"{known_hosts}:1", output)
        self.assertIn("StrictHostKeyChecking=no does not allow password", output)

        # Whatever the server logs for a login or a forward request, none of it happened.
        for never in ("trying auth", "publickey", "Remote forward", "tcpip-forward"):
            self.assertIsNone(server.find(never), server.output())
        with self.assertRaises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", listen), timeout=5).close()
