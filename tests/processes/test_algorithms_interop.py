"""
Every cipher and MAC rfwd offers against OpenSSH in both directions, and re-keying under
rfwd-client with OpenSSH's sshd.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from twisted.trial.unittest import TestCase

from tests.support.algorithms import AEAD, SUITES, suite_name
from tests.support.apps import digest_line, exchange, pattern, start_app_server, wait_until_echo
from tests.support.pairs import (
    Keys,
    make_keys,
    start_rfwd_client,
    start_rfwd_server,
    start_ssh,
    start_sshd,
)
from tests.support.processes import free_port


def reactor() -> Any:
    from twisted.internet import reactor as r

    return r


async def app_and_forward(test: TestCase) -> tuple[Keys, str, int]:
    """Fresh keys, an app server (stopped with the test), and a -R spec from a free port to it."""
    keys = make_keys(Path(test.mktemp()))
    _, app_port = await start_app_server(reactor())
    test.addCleanup(app_port.stopListening)
    listen = free_port()
    destination = app_port.getHost().port  # type: ignore[attr-defined]
    return keys, f"127.0.0.1:{listen}:127.0.0.1:{destination}", listen


def expected_log(cipher: str, mac: str) -> str:
    shown = "(implicit MAC)" if cipher in AEAD else mac
    return f"out {cipher} {shown}, in {cipher} {shown}, strict KEX"


class OpenSSHInteropTests(TestCase):
    """One forward and 1 MiB verified for each algorithm, OpenSSH at the other end."""

    timeout = 60

    async def client_to_sshd(self, cipher: str, mac: str) -> None:
        keys, forward, listen = await app_and_forward(self)
        _, ssh_port = await start_sshd(self, reactor(), keys)
        client = start_rfwd_client(
            self,
            reactor(),
            keys,
            ssh_port,
            [forward],
            "-o",
            f"Ciphers={cipher}",
            "-o",
            f"MACs={mac}",
        )
        await client.wait_for(r"Connected to 127\.0\.0\.1")
        self.assertIsNotNone(
            client.find(re.escape(expected_log(cipher, mac))),
            client.output(),
        )
        data = pattern(1 << 20, seed=11)
        self.assertEqual(await exchange(reactor(), listen, b"U" + data), digest_line(data))

    async def ssh_to_server(self, cipher: str, mac: str) -> None:
        keys, forward, listen = await app_and_forward(self)
        server, ssh_port = await start_rfwd_server(self, reactor(), keys)
        start_ssh(self, reactor(), keys, ssh_port, [forward], "-c", cipher, "-m", mac)
        await wait_until_echo(reactor(), listen)
        log = re.escape(expected_log(cipher, mac))
        await server.wait_for(log, timeout=5)
        data = pattern(1 << 20, seed=12)
        self.assertEqual(await exchange(reactor(), listen, b"U" + data), digest_line(data))


def _make(name: str, cipher: str, mac: str) -> None:
    async def ssh(self: OpenSSHInteropTests) -> None:
        await self.ssh_to_server(cipher, mac)

    async def sshd(self: OpenSSHInteropTests) -> None:
        await self.client_to_sshd(cipher, mac)

    for test, prefix, what in (
        (ssh, "test_ssh_", "OpenSSH ssh -> rfwd-server"),
        (sshd, "test_sshd_", "rfwd-client -> OpenSSH sshd"),
    ):
        test.__name__ = prefix + name
        test.__doc__ = f"{what} with {cipher} and {mac}."
        setattr(OpenSSHInteropTests, test.__name__, test)


for _cipher, _mac in SUITES:
    _make(suite_name(_cipher, _mac), _cipher, _mac)


class RekeyInteropTests(TestCase):
    """OpenSSH re-exchanging keys every 256 KiB while 16 MiB flows each way."""

    timeout = 90

    async def transfer(self, listen: int) -> None:
        upload = pattern(16 << 20, seed=21)
        self.assertEqual(await exchange(reactor(), listen, b"U" + upload), digest_line(upload))
        download = await exchange(reactor(), listen, b"D" + (16 << 20).to_bytes(8, "big"))
        self.assertEqual(download, pattern(16 << 20))

    async def test_sshd_rekeys_under_rfwd_client(self) -> None:
        """sshd with RekeyLimit 256K: rfwd-client follows every re-exchange."""
        keys, forward, listen = await app_and_forward(self)
        _, ssh_port = await start_sshd(self, reactor(), keys, "RekeyLimit 256K\n")
        client = start_rfwd_client(self, reactor(), keys, ssh_port, [forward])
        await client.wait_for(r"Connected to 127\.0\.0\.1")
        await self.transfer(listen)
        rekeys = [line for line in client.lines if "Key exchange with" in line]
        self.assertGreater(len(rekeys), 10, client.output())

    async def test_ssh_rekeys_with_rfwd_server(self) -> None:
        """ssh -o RekeyLimit=256K against rfwd-server: the server follows every re-exchange."""
        keys, forward, listen = await app_and_forward(self)
        server, ssh_port = await start_rfwd_server(self, reactor(), keys)
        start_ssh(self, reactor(), keys, ssh_port, [forward], config_extra="  RekeyLimit 256K\n")
        await wait_until_echo(reactor(), listen)
        await self.transfer(listen)
        rekeys = [line for line in server.lines if "Key exchange with" in line]
        self.assertGreater(len(rekeys), 10, server.output())
