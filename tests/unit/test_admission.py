"""
Admission of new connections and the descriptor budget, without sockets: sshd's MaxStartups
and PerSourceMaxStartups (randomness injected), when a connection stops counting as
unauthenticated, the budget's tiers, per-user forward counts, and the twistd options.
"""

from __future__ import annotations

import os
import resource
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import ILogObserver, LogEvent, Logger, formatEvent
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from tests.support.keys import new_key
from tests.support.memory import MemoryRig
from twisted_rfwd.errors import ConfigError
from twisted_rfwd.protocol.spec import parse_remote_forward
from twisted_rfwd.server.admission import (
    DROP_MESSAGE,
    MaxStartups,
    StartupGate,
    ThrottledLog,
    drop_percent,
    parse_per_source_max_startups,
)
from twisted_rfwd.server.config import ServerConfig
from twisted_rfwd.server.descriptors import (
    DescriptorBudget,
    ForwardCounts,
    count_open_descriptors,
    raise_nofile_limit,
)
from twisted_rfwd.server.factory import ForwardingServerFactory, ServerTransport
from twisted_rfwd.tap import server as server_tap


class Randoms:
    """C{random_below} that answers from a list and records each call's bound."""

    def __init__(self, *values: int) -> None:
        self.values: Iterator[int] = iter(values)
        self.bounds: list[int] = []

    def __call__(self, bound: int) -> int:
        self.bounds.append(bound)
        return next(self.values)


@implementer(ILogObserver)
class Events(list[LogEvent]):
    """The events a logger emitted."""

    def __call__(self, event: LogEvent) -> None:
        self.append(event)


def gate(
    limits: tuple[int, int, int], per_source: int | None = None, randoms: Randoms | None = None
) -> StartupGate:
    return StartupGate(MemoryReactorClock(), limits, per_source, randoms or Randoms())


class MaxStartupsTests(SynchronousTestCase):
    def test_drop_percent_is_sshds_staircase(self) -> None:
        """The chance of a drop follows sshd.c's integer arithmetic on the default 10:30:100."""
        limits = MaxStartups()
        expected = {0: 0, 9: 0, 10: 30, 11: 30, 12: 31, 20: 37, 55: 65, 99: 99, 100: 100, 500: 100}
        self.assertEqual({n: drop_percent(n, limits) for n in expected}, expected)

    def test_below_start_always_admitted_without_randomness(self) -> None:
        """Fewer than start unauthenticated: admitted, and no random number is drawn."""
        randoms = Randoms()
        g = gate((3, 30, 10), randoms=randoms)
        startups = [g.admit("192.0.2.1") for _ in range(3)]
        self.assertNotIn(None, startups)
        self.assertEqual(g.unauthenticated, 3)
        self.assertEqual(randoms.bounds, [])

    def test_random_early_drop_uses_the_percentage(self) -> None:
        """At start, a draw below rate drops and one at rate admits; draws are out of 100."""
        randoms = Randoms(29, 30)
        g = gate((1, 30, 10), randoms=randoms)
        self.assertIsNotNone(g.admit("192.0.2.1"))
        self.assertIsNone(g.admit("192.0.2.2"))  # 29 < 30: dropped
        self.assertIsNotNone(g.admit("192.0.2.3"))  # 30: admitted
        self.assertEqual(randoms.bounds, [100, 100])
        self.assertEqual(g.unauthenticated, 2)

    def test_full_and_rate_100_drop_without_a_draw(self) -> None:
        """At full, or with rate 100 from start on, every new connection is dropped, no draw."""
        randoms = Randoms()
        full = gate((2, 30, 2), randoms=randoms)
        hundred = gate((2, 100, 50), randoms=randoms)
        for g in (full, hundred):
            g.admit("192.0.2.1")
            g.admit("192.0.2.1")
            self.assertIsNone(g.admit("192.0.2.9"))
            self.assertEqual(g.unauthenticated, 2)
        self.assertEqual(randoms.bounds, [])

    def test_release_frees_the_slot_once(self) -> None:
        """A released startup makes room; releasing it again changes nothing."""
        g = gate((1, 100, 1))
        first = g.admit("192.0.2.1")
        assert first is not None
        self.assertIsNone(g.admit("192.0.2.2"))
        first.release()
        first.release()
        self.assertEqual(g.unauthenticated, 0)
        self.assertIsNotNone(g.admit("192.0.2.2"))
        self.assertEqual(g.unauthenticated, 1)

    def test_per_source_counts_each_address(self) -> None:
        """PerSourceMaxStartups 2: a third from one address is dropped, another address is not."""
        g = gate((100, 30, 100), per_source=2)
        a1, a2 = g.admit("192.0.2.1"), g.admit("192.0.2.1")
        self.assertIsNone(g.admit("192.0.2.1"))
        self.assertIsNotNone(g.admit("192.0.2.2"))
        self.assertIsNotNone(g.admit("2001:db8::1"))
        self.assertEqual(g.from_source("192.0.2.1"), 2)
        assert a1 is not None and a2 is not None
        a1.release()
        self.assertEqual(g.from_source("192.0.2.1"), 1)
        self.assertIsNotNone(g.admit("192.0.2.1"))
        a2.release()
        self.assertEqual(g.from_source("192.0.2.1"), 1)
        self.assertEqual(g.unauthenticated, 3)

    def test_settings_validated_as_sshd(self) -> None:
        """start above full, rate 0 or over 100, and non-positive values are refused."""
        for args in ((20, 30, 10), (10, 0, 100), (10, 101, 100), (0, 30, 10), (1, 30, 0)):
            self.assertRaises(ConfigError, MaxStartups, *args)


class ThrottledLogTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = MemoryReactorClock()
        self.events = Events()
        self.log = ThrottledLog(
            self.clock, "Dropped new connections", log=Logger(observer=self.events)
        )

    def lines(self) -> list[str]:
        return [formatEvent(e) for e in self.events]

    def test_a_flood_is_one_line_per_interval(self) -> None:
        """10,000 drops over 2 s make 3 lines, and a flush a second later one more: their
        counts add up to every drop."""
        for i in range(10_000):
            self.log.event("past MaxStartups 10:30:100", f"from 192.0.2.{i % 250}")
            if i % 4000 == 3999:
                self.clock.advance(1.0)
        self.assertEqual(len(self.events), 3)
        self.clock.advance(0.5)
        self.log.flush()
        self.assertEqual(len(self.events), 3)
        self.clock.advance(0.5)
        self.log.flush()
        lines = self.lines()
        self.assertEqual(len(lines), 4, lines)
        counts = [int(line.split(": ")[1].split()[0]) for line in lines]
        self.assertEqual(sum(counts), 10_000)
        self.assertIn("past MaxStartups 10:30:100", lines[0])
        self.assertLess(max(len(line) for line in lines), 200)

    def test_counts_not_logged_go_out_later(self) -> None:
        """Events held back within the interval are logged by a flush once it has passed."""
        self.log.event("x")
        self.log.event("x")
        self.log.flush()
        self.assertEqual(len(self.events), 1)
        self.clock.advance(1.0)
        self.log.flush()
        self.assertEqual(len(self.events), 2)
        self.assertIn(": 1 in", self.lines()[1])
        self.log.flush()
        self.assertEqual(len(self.events), 2)


def _server_config(tmp: Path, **options: Any) -> ServerConfig:
    return ServerConfig(host_keys=[new_key()], authorized_keys=str(tmp / "none"), **options)


class FactoryAdmissionTests(SynchronousTestCase):
    def factory(self, **options: Any) -> ForwardingServerFactory:
        tmp = Path(self.mktemp())
        tmp.mkdir()
        budget = DescriptorBudget(limit=1000, base=10)
        return ForwardingServerFactory(
            MemoryReactorClock(), _server_config(tmp, **options), descriptors=budget
        )

    def connect(self, factory: ForwardingServerFactory, host: str) -> tuple[Any, StringTransport]:
        protocol = factory.buildProtocol(IPv4Address("TCP", host, 40000))
        transport = StringTransport()
        if protocol is not None:
            protocol.makeConnection(transport)
        return protocol, transport

    def test_past_full_sshds_line_then_closed(self) -> None:
        """Past MaxStartups, the connection gets 'Exceeded MaxStartups' and is closed."""
        factory = self.factory(max_startups=(2, 30, 2))
        held = [self.connect(factory, "192.0.2.1")[0] for _ in range(2)]
        self.assertTrue(all(isinstance(p, ServerTransport) for p in held))
        dropped, transport = self.connect(factory, "192.0.2.1")
        self.assertNotIsInstance(dropped, ServerTransport)
        self.assertEqual(transport.value(), DROP_MESSAGE)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(factory.descriptors.connections, 3)
        dropped.connectionLost(None)
        self.assertEqual(factory.descriptors.connections, 2)

    def test_disconnect_frees_the_slot_and_descriptor(self) -> None:
        """An unauthenticated connection that ends no longer counts, for either limit."""
        factory = self.factory(max_startups=(1, 30, 1), per_source_max_startups=1)
        first, _ = self.connect(factory, "192.0.2.1")
        self.assertEqual(factory.startups.unauthenticated, 1)
        first.connectionLost(None)
        self.assertEqual(factory.startups.unauthenticated, 0)
        self.assertEqual(factory.startups.from_source("192.0.2.1"), 0)
        self.assertEqual(factory.descriptors.connections, 0)
        again, _ = self.connect(factory, "192.0.2.1")
        self.assertIsInstance(again, ServerTransport)

    def test_per_source_from_the_factory(self) -> None:
        """PerSourceMaxStartups applies by peer address, through buildProtocol."""
        factory = self.factory(per_source_max_startups=1)
        self.assertIsInstance(self.connect(factory, "192.0.2.1")[0], ServerTransport)
        self.assertNotIsInstance(self.connect(factory, "192.0.2.1")[0], ServerTransport)
        self.assertIsInstance(self.connect(factory, "192.0.2.2")[0], ServerTransport)

    def test_no_descriptor_closes_at_once(self) -> None:
        """With the budget at its SSH edge, buildProtocol returns None (closed, nothing sent)."""
        factory = self.factory()
        factory.descriptors.base = factory.descriptors.connections_ceiling
        self.assertIsNone(factory.buildProtocol(IPv4Address("TCP", "192.0.2.1", 1)))
        self.assertEqual(factory.startups.unauthenticated, 0)


class LoginReleasesTests(SynchronousTestCase):
    def test_login_stops_counting_as_unauthenticated(self) -> None:
        """Once logged in (the forwarding service starts) the connection leaves MaxStartups'
        count but keeps its descriptor until it ends."""
        tmp = Path(self.mktemp())
        tmp.mkdir()
        rig = MemoryRig(tmp, [parse_remote_forward("8080:127.0.0.1:80")])
        self.successResultOf(rig.connect())
        self.assertEqual(rig.factory.startups.unauthenticated, 0)
        self.assertEqual(rig.factory.descriptors.connections, 1)
        rig.disconnect()
        self.assertEqual(rig.factory.startups.unauthenticated, 0)
        self.assertEqual(rig.factory.descriptors.connections, 0)

    def test_counted_until_login(self) -> None:
        """Before the login completes, the connection counts as unauthenticated."""
        tmp = Path(self.mktemp())
        tmp.mkdir()
        rig = MemoryRig(tmp, [parse_remote_forward("8080:127.0.0.1:80")])
        server = rig.factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 2222))
        server.makeConnection(StringTransport())
        self.assertEqual(rig.factory.startups.unauthenticated, 1)
        self.assertEqual(rig.factory.startups.from_source("127.0.0.1"), 1)


class DescriptorBudgetTests(SynchronousTestCase):
    def test_tiers_for_a_small_limit(self) -> None:
        """Limit 128: forwards' sockets up to 80 in use, forwarded connections 96, SSH 112."""
        budget = DescriptorBudget(limit=128, base=10)
        self.assertEqual(
            (budget.listeners_ceiling, budget.forwarded_ceiling, budget.connections_ceiling),
            (80, 96, 112),
        )
        self.assertEqual(budget.user_share, 35)

    def test_tiers_scale_with_a_large_limit(self) -> None:
        """Limit 65536: reserves of L/8 for forwards and L/32 more for logins."""
        budget = DescriptorBudget(limit=65536, base=10)
        self.assertEqual(budget.listeners_ceiling, 65536 - 8192)
        self.assertEqual(budget.forwarded_ceiling, 65536 - 16 - 2048)
        self.assertEqual(budget.connections_ceiling, 65536 - 16)

    def test_one_user_cannot_take_every_forward(self) -> None:
        """A user's listening sockets stop at its share; another user still gets some, up to
        the tier's ceiling; then nobody does."""
        budget = DescriptorBudget(limit=128, base=10)
        granted_a = 0
        while budget.acquire_listeners("a", 2):
            granted_a += 2
        self.assertEqual(granted_a, 34)
        self.assertTrue(budget.acquire_listeners("a", 1))
        self.assertFalse(budget.acquire_listeners("a", 1))
        self.assertEqual(budget.listeners_of("a"), 35)
        self.assertTrue(budget.acquire_listeners("b", 35))
        self.assertEqual(budget.in_use, 80)
        self.assertFalse(budget.acquire_listeners("c", 1))
        budget.release_listeners("a", 2)
        self.assertTrue(budget.acquire_listeners("c", 2))
        self.assertEqual(budget.listeners_of("c"), 2)

    def test_forwarded_and_logins_keep_working_past_the_forward_tier(self) -> None:
        """With forwards at their ceiling, forwarded connections and logins still fit, each up
        to its own ceiling, logins last."""
        budget = DescriptorBudget(limit=128, base=80)
        self.assertFalse(budget.acquire_listeners("a", 1))
        forwarded = 0
        while budget.acquire_forwarded():
            forwarded += 1
        self.assertEqual(forwarded, 16)
        budget.release_forwarded()
        self.assertTrue(budget.acquire_forwarded())
        logins = 0
        while budget.acquire_connection():
            logins += 1
        self.assertEqual(logins, 16)
        budget.release_connection()
        self.assertEqual(budget.held, 31)
        self.assertFalse(budget.acquire_forwarded())
        self.assertTrue(budget.acquire_connection())

    def test_release_without_acquire_never_goes_negative(self) -> None:
        """A release with nothing held is a logged bug, not a negative count."""
        budget = DescriptorBudget(limit=128, base=10)
        budget.release_connection()
        budget.release_listeners("a", 3)
        budget.release_forwarded()
        self.assertEqual(budget.held, 0)
        self.assertEqual(budget.listeners_of("a"), 0)
        self.assertEqual(len(self.flushLoggedErrors()), 0)

    def test_rebase_counts_open_descriptors_once(self) -> None:
        """rebase() takes the base from the descriptors open now, minus those held."""
        budget = DescriptorBudget.for_this_process()
        before = budget.base
        budget.acquire_connection()
        r, w = os.pipe()
        self.addCleanup(os.close, r)
        self.addCleanup(os.close, w)
        budget.rebase()
        self.assertEqual(budget.base, before + 1)
        self.assertEqual(budget.in_use, before + 2)

    def test_count_open_descriptors(self) -> None:
        """The count follows descriptors opened and closed."""
        before = count_open_descriptors()
        assert before is not None
        r, w = os.pipe()
        self.assertEqual(count_open_descriptors(), before + 2)
        os.close(r)
        os.close(w)
        self.assertEqual(count_open_descriptors(), before)

    def test_raise_nofile_limit_to_the_hard_limit(self) -> None:
        """The soft RLIMIT_NOFILE goes up to the hard one."""
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        self.addCleanup(resource.setrlimit, resource.RLIMIT_NOFILE, (soft, hard))
        lowered = min(soft, 256)
        resource.setrlimit(resource.RLIMIT_NOFILE, (lowered, hard))
        now_soft, now_hard = raise_nofile_limit()
        self.assertEqual(now_hard, hard)
        if hard != resource.RLIM_INFINITY:
            self.assertEqual(now_soft, hard)
        self.assertEqual(resource.getrlimit(resource.RLIMIT_NOFILE)[0], now_soft)


class ForwardCountsTests(SynchronousTestCase):
    def test_cap_per_user(self) -> None:
        """try_add stops at the cap for that user only; remove makes room again."""
        counts = ForwardCounts()
        self.assertEqual([counts.try_add("alice", 2) for _ in range(3)], [True, True, False])
        self.assertTrue(counts.try_add("bob", 2))
        self.assertEqual((counts.of("alice"), counts.of("bob"), counts.of("carol")), (2, 1, 0))
        counts.remove("alice")
        self.assertTrue(counts.try_add("alice", 2))
        for _ in range(3):
            counts.remove("bob")
        self.assertEqual(counts.of("bob"), 0)
        self.assertEqual(len(counts), 1)


class OptionsTests(SynchronousTestCase):
    def parse(self, *argv: str) -> dict[str, Any]:
        options = server_tap.Options()
        options.parseOptions(list(argv))
        limits: dict[str, Any] = options["limits"]
        return limits

    def test_defaults_are_sshds(self) -> None:
        """Defaults: MaxStartups 10:30:100, no per-source limit, MaxAuthTries 6, rfwd's caps."""
        self.assertEqual(
            self.parse(),
            {
                "max_startups": (10, 30, 100),
                "per_source_max_startups": None,
                "max_auth_tries": 6,
                "max_forwards_per_connection": 100,
                "max_forwards_per_user": 200,
                "max_channels_per_connection": 16384,
                "sessions": True,
                "max_sessions": 10,
            },
        )
        config = ServerConfig(host_keys=[new_key()], **self.parse())
        self.assertEqual(config, ServerConfig(host_keys=config.host_keys))

    def test_values(self) -> None:
        """Each option sets its field; a single MaxStartups number is start = full."""
        limits = self.parse(
            "--max-startups",
            "5",
            "--per-source-max-startups",
            "3",
            "--max-auth-tries",
            "2",
            "--max-forwards-per-connection",
            "7",
            "--max-forwards-per-user",
            "9",
            "--max-channels-per-connection",
            "11",
        )
        self.assertEqual(limits["max_startups"], (5, 30, 5))
        self.assertEqual(limits["per_source_max_startups"], 3)
        self.assertEqual(limits["max_auth_tries"], 2)
        self.assertEqual(limits["max_forwards_per_connection"], 7)
        self.assertEqual(limits["max_forwards_per_user"], 9)
        self.assertEqual(limits["max_channels_per_connection"], 11)
        self.assertEqual(self.parse("--max-startups", "3:100:3")["max_startups"], (3, 100, 3))
        self.assertIsNone(
            self.parse("--per-source-max-startups", "none")["per_source_max_startups"]
        )

    def test_bad_values_name_the_option(self) -> None:
        """Each bad value is a one-line usage error naming its option."""
        cases = [
            ("--max-startups", "10:30"),
            ("--max-startups", "20:30:10"),
            ("--max-startups", "10:0:100"),
            ("--max-startups", "10:101:100"),
            ("--max-startups", "0"),
            ("--max-startups", "ten"),
            ("--per-source-max-startups", "0"),
            ("--per-source-max-startups", "some"),
            ("--max-auth-tries", "0"),
            ("--max-forwards-per-connection", "-1"),
            ("--max-forwards-per-user", "²"),
            ("--max-channels-per-connection", ""),
        ]
        for option, value in cases:
            error = self.assertRaises(usage.UsageError, self.parse, option, value)
            self.assertIn(option, str(error), (option, value))
            self.assertIn(repr(value).strip('"'), str(error))
            self.assertNotIn("\n", str(error))

    def test_parsers_directly(self) -> None:
        """The parsers take sshd's forms: N, start:rate:full, none."""
        self.assertEqual(MaxStartups.parse("10"), MaxStartups(10, 30, 10))
        self.assertEqual(MaxStartups.parse(" 10:30:60 "), MaxStartups(10, 30, 60))
        self.assertIsNone(parse_per_source_max_startups("NONE"))
        self.assertEqual(parse_per_source_max_startups("4"), 4)
