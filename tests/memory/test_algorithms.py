"""
Every cipher and MAC rfwd offers, rfwd against itself in memory, and strict key exchange (the
Terrapin fix) as OpenSSH defines it.  Against OpenSSH: L{tests.processes.test_algorithms_interop}.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.trial.unittest import TestCase

from tests.support.algorithms import SUITES, suite_name
from tests.support.apps import pattern
from tests.support.memory import MemoryRig
from twisted_rfwd.client.tunnel import ClientTransport, ForwardStatus
from twisted_rfwd.errors import ConfigError
from twisted_rfwd.protocol.algorithms import choose
from twisted_rfwd.protocol.spec import parse_remote_forward
from twisted_rfwd.ssh.transport import STRICT_KEX_CLIENT


def reactor() -> Any:
    from twisted.internet import reactor as r

    return r


class MemoryAlgorithmTests(TestCase):
    """rfwd against itself, in memory, for each algorithm."""

    def rig(self) -> MemoryRig:
        tmp = Path(self.mktemp())
        tmp.mkdir()
        return MemoryRig(tmp, [parse_remote_forward("8080:127.0.0.1:80")])

    def check_suite(self, cipher: str, mac: str) -> None:
        rig = self.rig()
        rig.client_config.ciphers = [cipher.encode()]
        rig.client_config.macs = [mac.encode()]
        tunnel = self.successResultOf(rig.connect())
        assert rig.server is not None and rig.client is not None
        self.assertEqual(rig.server.currentEncryptions.inCipType, cipher.encode())
        self.assertEqual(rig.client.currentEncryptions.outMACType, mac.encode())
        self.assertTrue(rig.server.strict_kex and rig.client.strict_kex)
        self.assertEqual(tunnel.forwards[0].status, ForwardStatus.LISTENING)
        app = rig.app_connects(8080)
        destination = rig.destination_accepts()
        data = pattern(300_000, seed=4)
        app.receive(data)
        rig.flush()
        self.assertEqual(destination.drain(), data)


def _make(name: str, cipher: str, mac: str) -> None:
    def memory(self: MemoryAlgorithmTests) -> None:
        self.check_suite(cipher, mac)

    memory.__name__ = "test_" + name
    memory.__doc__ = f"rfwd-client -> rfwd-server with {cipher} and {mac}."
    setattr(MemoryAlgorithmTests, memory.__name__, memory)


for _cipher, _mac in SUITES:
    _make(suite_name(_cipher, _mac), _cipher, _mac)


class _NoisyClient(ClientTransport):
    """Sends an IGNORE in the middle of the first key exchange."""

    def sendKexInit(self) -> None:
        super().sendKexInit()
        self.sendIgnore(b"terrapin")


class _LegacyNoisyClient(_NoisyClient):
    """The same, without announcing strict KEX (as an old OpenSSH would)."""

    def sendKexInit(self) -> None:
        self.supportedKeyExchanges = [
            k for k in self.supportedKeyExchanges if k != STRICT_KEX_CLIENT
        ]
        super().sendKexInit()


class StrictKexTests(TestCase):
    def rig(self) -> MemoryRig:
        tmp = Path(self.mktemp())
        tmp.mkdir()
        return MemoryRig(tmp, [parse_remote_forward("8080:127.0.0.1:80")])

    def test_unexpected_message_in_first_kex_is_fatal(self) -> None:
        """Under strict KEX, an IGNORE during the initial key exchange ends the connection."""
        rig = self.rig()
        self.failureResultOf(rig.connect(_NoisyClient))
        reason = self.successResultOf(rig.tunnel.when_closed())
        self.assertIn("unexpected message type 2 during the initial key exchange", str(reason))

    def test_legacy_peer_without_strict_kex_is_tolerated(self) -> None:
        """Without the peer's strict-KEX marker, the same IGNORE is harmless (RFC 4253)."""
        rig = self.rig()
        tunnel = self.successResultOf(rig.connect(_LegacyNoisyClient))
        assert rig.server is not None
        self.assertFalse(rig.server.strict_kex)
        self.assertEqual(tunnel.forwards[0].status, ForwardStatus.LISTENING)


class ChooseTests(TestCase):
    def test_openssh_list_forms(self) -> None:
        """A list replaces, +list appends, -pattern removes, ^list moves to the front."""
        default = [b"a", b"b", b"c-x", b"c-y"]
        self.assertEqual(choose("Ciphers", "b,a", default), [b"b", b"a"])
        self.assertEqual(choose("Ciphers", "-c-*", default), [b"a", b"b"])
        self.assertEqual(choose("Ciphers", "^c-y", default), [b"c-y", b"a", b"b", b"c-x"])
        self.assertEqual(choose("Ciphers", "+a", default), default)

    def test_unknown_or_empty_is_an_error(self) -> None:
        """Names rfwd does not implement, or an empty result, are configuration errors."""
        error = self.assertRaises(ConfigError, choose, "MACs", "hmac-md5", [b"hmac-sha2-256"])
        self.assertIn("unsupported hmac-md5", str(error))
        self.assertRaises(ConfigError, choose, "MACs", "-*", [b"hmac-sha2-256"])
        self.assertRaises(ConfigError, choose, "MACs", "", [b"hmac-sha2-256"])
