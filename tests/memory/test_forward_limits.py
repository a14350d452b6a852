"""
What one logged-in user may ask of rfwd-server: privileged ports as sshd allows them, and the
caps on forwards that one process serving everyone needs (in memory).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.trial.unittest import TestCase

from tests.support.logs import CapturedLog
from tests.support.memory import MemoryRig
from twisted_rfwd.client.tunnel import ForwardStatus, Tunnel
from twisted_rfwd.protocol.policy import ListenPolicy, privileged_port_refusal
from twisted_rfwd.protocol.spec import parse_remote_forward
from twisted_rfwd.protocol.wire import TcpipForward


class PrivilegedPortPolicyTests(TestCase):
    def test_below_1024_needs_root_or_a_named_port(self) -> None:
        """Port 999: refused for alice, allowed for root or when PermitListen names 999."""
        anything = ListenPolicy.parse(["any"])
        self.assertIn("privileged", privileged_port_refusal("alice", "", 999, anything) or "")
        self.assertIsNone(privileged_port_refusal("root", "", 999, anything))
        self.assertIsNone(privileged_port_refusal("alice", "", 1024, anything))
        self.assertIsNone(privileged_port_refusal("alice", "", 0, anything))
        named = ListenPolicy.parse(["999 localhost:80"])
        self.assertIsNone(privileged_port_refusal("alice", "", 999, named))
        self.assertIsNone(privileged_port_refusal("alice", "localhost", 80, named))
        self.assertIsNotNone(privileged_port_refusal("alice", "other", 80, named))
        # A wildcard port does not name a privileged one.
        wildcard = ListenPolicy.parse(["*"])
        self.assertIsNotNone(privileged_port_refusal("alice", "", 80, wildcard))


class ForwardLimitTests(TestCase):
    def rig(self, *specs: str, **options: Any) -> MemoryRig:
        tmp = Path(self.mktemp())
        tmp.mkdir()
        return MemoryRig(tmp, [parse_remote_forward(s) for s in specs], **options)

    def ready(self, rig: MemoryRig) -> Tunnel:
        return self.successResultOf(rig.connect())

    def test_privileged_port_is_refused(self) -> None:
        """A user other than root cannot listen on port 999; nothing is bound."""
        rig = self.rig("999:127.0.0.1:80", "8080:127.0.0.1:80")
        tunnel = self.ready(rig)
        statuses = [s.status for s in tunnel.forwards]
        self.assertEqual(statuses, [ForwardStatus.REFUSED, ForwardStatus.LISTENING])
        self.assertEqual(rig.binder.listening(999), [])

    def test_privileged_port_named_by_permit_listen(self) -> None:
        """PermitListen naming port 999 lets any user have it."""
        rig = self.rig("999:127.0.0.1:80", permit_listen=ListenPolicy.parse(["999 8080"]))
        tunnel = self.ready(rig)
        self.assertEqual(tunnel.forwards[0].status, ForwardStatus.LISTENING)
        self.assertTrue(rig.binder.listening(999))

    def test_root_may_listen_on_a_privileged_port(self) -> None:
        """The login name root may listen below 1024, as sshd allows uid 0."""
        rig = self.rig("999:127.0.0.1:80")
        rig.client_config.user = "root"
        tunnel = self.ready(rig)
        self.assertEqual(tunnel.forwards[0].status, ForwardStatus.LISTENING)

    def test_forwards_per_connection_are_capped(self) -> None:
        """Beyond MaxForwardsPerConnection, forwards are refused; the first ones listen."""
        rig = self.rig(
            "8080:127.0.0.1:80",
            "8081:127.0.0.1:80",
            "8082:127.0.0.1:80",
            max_forwards_per_connection=2,
        )
        tunnel = self.ready(rig)
        statuses = [s.status for s in tunnel.forwards]
        expected = [ForwardStatus.LISTENING, ForwardStatus.LISTENING, ForwardStatus.REFUSED]
        self.assertEqual(statuses, expected)
        self.assertEqual(rig.binder.listening(8082), [])


class RepeatedRefusalTests(TestCase):
    def test_a_burst_of_refusals_becomes_one_line_with_a_count(self) -> None:
        """
        300 refused tcpip-forward requests log a few lines and then one summary with the
        count, not 300 lines; the connection carries on.
        """
        tmp = Path(self.mktemp())
        tmp.mkdir()
        rig = MemoryRig(tmp, [parse_remote_forward("8080:127.0.0.1:80")])
        tunnel = self.successResultOf(rig.connect())
        lines = CapturedLog(self)
        connection = tunnel.connection
        assert connection is not None
        replies = [
            connection.send_global_request(b"tcpip-forward", TcpipForward("", 80).pack())
            for _ in range(300)
        ]
        rig.flush()
        for reply in replies:
            self.failureResultOf(reply)
        refusals = [line for line in lines.lines if "Refused remote forward" in line]
        self.assertLessEqual(len(refusals), 10)
        rig.reactor.advance(60)
        summaries = [line for line in lines.lines if "more forward refusals" in line]
        self.assertEqual(len(summaries), 1, lines.lines[-3:])
        self.assertEqual(len(refusals) + int(re.findall(r"(\d+) more", summaries[0])[0]), 300)
        self.assertEqual(tunnel.forwards[0].status, ForwardStatus.LISTENING)


class ChannelCapTests(TestCase):
    def test_channels_per_connection_are_capped(self) -> None:
        """Beyond MaxChannelsPerConnection, a new forwarded connection is closed at once."""
        tmp = Path(self.mktemp())
        tmp.mkdir()
        rig = MemoryRig(
            tmp, [parse_remote_forward("8080:127.0.0.1:80")], max_channels_per_connection=1
        )
        self.successResultOf(rig.connect())
        lines = CapturedLog(self)
        first = rig.app_connects(8080)
        rig.destination_accepts()
        factory, _ = rig.binder.listening(8080)[0]
        self.assertIsNone(factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 50001)))
        self.assertTrue(any("MaxChannelsPerConnection" in line for line in lines.lines))
        first.reset()
        rig.flush()
        self.assertIsNotNone(factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 50002)))
