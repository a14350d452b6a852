"""
Hardening checked with real processes on loopback: sshd's limits as sshd applies them (the same
test runs OpenSSH's sshd beside rfwd-server), and what a pre-login flood costs the server.
"""

from __future__ import annotations

import re
import socket
import struct
from pathlib import Path
from typing import Any

from twisted.trial.unittest import TestCase

from tests.support.keys import new_key, public_line, write_private_key
from tests.support.pairs import Keys, make_keys, start_rfwd_server, start_ssh, start_sshd
from tests.support.processes import ChildProcess


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


async def _offers_before_disconnect(ssh: ChildProcess) -> tuple[int, str]:
    """How many keys C{ssh -v} offered before the server cut it off, and what it said."""
    await ssh.wait_ended(timeout=60)
    output = ssh.output(last=400)
    offered = len(re.findall(r"Offering public key", output))
    said = re.search(r"Received disconnect from [^:]+ port \d+:(\d+): (.*)", output)
    return offered, said.group(2).strip() if said else output


class MaxAuthTriesTests(TestCase):
    timeout = 120

    def keys_that_fail(self, count: int) -> tuple[Keys, list[str]]:
        """Fresh keys for a server whose authorized_keys holds none of C{count} user keys."""
        keys = make_keys(Path(self.mktemp()))
        keys.authorized_keys.write_bytes(public_line(new_key()) + b"\n")
        options: list[str] = []
        for number in range(count):
            path = write_private_key(new_key(), keys.workdir / f"wrong_{number}")
            options += ["-i", str(path)]
        return keys, options

    async def test_same_count_as_sshd(self) -> None:
        """
        With ten keys that all fail, rfwd-server lets ssh offer as many as sshd 9.2 does
        (MaxAuthTries 6: the first "none" is free, the 6th failure ends the connection) and
        says the same thing when it stops.
        """
        results = {}
        keys, options = self.keys_that_fail(10)
        _, sshd_port = await start_sshd(self, _reactor(), keys)
        rfwd, rfwd_port = await start_rfwd_server(self, _reactor(), keys)
        for name, port in (("sshd", sshd_port), ("rfwd-server", rfwd_port)):
            ssh = start_ssh(self, _reactor(), keys, port, [], "-v", *options)
            results[name] = await _offers_before_disconnect(ssh)
        self.assertEqual(results["rfwd-server"], results["sshd"])
        self.assertEqual(results["sshd"], (6, "Too many authentication failures"))
        await rfwd.wait_for(r"Maximum authentication attempts \(6\) exceeded")

    async def test_max_auth_tries_option(self) -> None:
        """C{--max-auth-tries 2} stops the second failed key, as sshd's MaxAuthTries 2."""
        keys, options = self.keys_that_fail(4)
        _, port = await start_rfwd_server(self, _reactor(), keys, "--max-auth-tries", "2")
        ssh = start_ssh(self, _reactor(), keys, port, [], "-v", *options)
        self.assertEqual(
            await _offers_before_disconnect(ssh), (2, "Too many authentication failures")
        )


def _plain_packet(payload: bytes) -> bytes:
    padding = 8 - (5 + len(payload)) % 8
    padding += 8 if padding < 4 else 0
    body = bytes((padding,)) + payload + b"\x00" * padding
    return struct.pack(">L", len(body)) + body


def _flood(port: int, opening: bytes, flood: bytes, connections: int, repeats: int) -> int:
    """Send C{opening} then C{flood} C{repeats} times on each of C{connections}; bytes sent."""
    sent = 0
    for _ in range(connections):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            try:
                sock.sendall(opening)
                for _ in range(repeats):
                    sock.sendall(flood)
                    sent += len(flood)
            except OSError:
                pass  # disconnected, as it should be
    return sent


class PreLoginFloodTests(TestCase):
    """Each flood a client can send before logging in: the server's memory stays flat."""

    timeout = 120

    async def flood_costs_nothing(
        self, opening: bytes, flood: bytes, connections: int, repeats: int, logged: str
    ) -> None:
        keys = make_keys(Path(self.mktemp()))
        server, port = await start_rfwd_server(self, _reactor(), keys)
        before = server.rss_kib()
        sent = _flood(port, opening, flood, connections, repeats)
        await server.wait_for(logged)
        grown = server.rss_kib() - before
        self.assertLess(grown, 8 * 1024, f"RSS grew by {grown} KiB after {sent} bytes")

    async def test_userauth_before_key_exchange(self) -> None:
        """
        Service and userauth requests without a key exchange: disconnected at the first one,
        nothing queued behind the unfinished exchange.
        """
        request = _plain_packet(b"\x05" + struct.pack(">L", 12) + b"ssh-userauth")
        attempt = _plain_packet(
            b"\x32"
            + b"".join(struct.pack(">L", len(s)) + s for s in (b"root", b"ssh-connection", b"none"))
        )
        await self.flood_costs_nothing(
            b"SSH-2.0-flood\r\n",
            request + attempt * 2000,
            20,
            10,
            r"unexpected message type 5 during the initial key exchange",
        )

    async def test_large_unassigned_messages(self) -> None:
        """32 KiB packets of an unassigned type: one line and a disconnect each."""
        await self.flood_costs_nothing(
            b"SSH-2.0-flood\r\n",
            _plain_packet(b"\xc8" + b"\xab" * 32760) * 8,
            20,
            16,
            r"unexpected message type 200",
        )

    async def test_endless_identification_line(self) -> None:
        """An identification line that never ends is cut at 255 bytes."""
        await self.flood_costs_nothing(
            b"SSH-2.0-", b"x" * 65536, 20, 16, r"no SSH identification line"
        )


class PrivilegedPortTests(TestCase):
    timeout = 60

    async def test_privileged_port_is_refused(self) -> None:
        """
        ssh -R 999:... as a user other than root is refused (ssh exits 255 under
        ExitOnForwardFailure), and nothing listens on port 999.
        """
        keys = make_keys(Path(self.mktemp()))
        server, port = await start_rfwd_server(self, _reactor(), keys)
        ssh = start_ssh(self, _reactor(), keys, port, ["999:127.0.0.1:1"], "-l", "tunnel")
        await ssh.wait_ended(timeout=30)
        self.assertEqual(ssh.exit_code, 255)
        self.assertIn("remote port forwarding failed for listen port 999", ssh.output())
        await server.wait_for(
            r"Refused remote forward for tunnel .* port 999: port 999 is privileged"
        )
        with socket.socket() as probe:
            self.assertNotEqual(probe.connect_ex(("127.0.0.1", 999)), 0)
