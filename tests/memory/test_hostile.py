"""
A hostile client against rfwd-server, in memory, with hypothesis: random message sequences in
each phase of the connection, and random, truncated and oversized payloads for every message
type the server parses.

Whatever the client sends, the server must not raise, must not log a traceback, must log a
bounded amount without the payload's bytes, must not pile up output, must end only this
connection (cleaning up after it), and a healthy tunnel through the same server factory must keep
moving bytes.  Some tests pin the strict transport of issue #8: the message numbers each phase
accepts, NEWKEYS only after a key exchange, one C{ssh-userauth} service and nothing of it before
the first NEWKEYS, the plaintext block size, no lines before the client's version, MaxAuthTries.
"""

from __future__ import annotations

import functools
import random
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from hypothesis import HealthCheck, given, settings
from hypothesis import Phase as HPhase
from hypothesis import strategies as st
from twisted.conch.ssh.common import NS
from twisted.trial.unittest import TestCase

from tests.support.hostile import (
    CLIENT_VERSION,
    HOSTILE_PORT,
    HealthyTunnel,
    HostileConnection,
    LogCapture,
    Phase,
    client_kexinit,
    event_text,
    payload_leaks,
    plain_packet,
)
from tests.support.keys import new_key

# The hostile client's keys: KEY is in the user's authorized_keys, OTHER is not.
KEY = new_key()
OTHER = new_key()

MAX_LOG_EVENTS = 50
MAX_LOG_BYTES = 20 * 1024
MAX_SERVER_OUTPUT = 256 * 1024
MAX_HELD_PACKETS = 16
MAX_AUTH_TRIES = 6  # ServerConfig's default, sshd's MaxAuthTries

HOSTILE = settings(
    max_examples=60,
    deadline=None,
    database=None,
    derandomize=True,
    report_multiple_bugs=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

_T = TypeVar("_T")


def show_example(test: Callable[..., _T]) -> Callable[..., _T]:
    """
    Put hypothesis's falsifying example into the failure's message: trial does not print the
    notes hypothesis attaches to the exception.
    """

    @functools.wraps(test)
    def run(self: TestCase, *args: Any, **kwargs: Any) -> _T:
        try:
            return test(self, *args, **kwargs)
        except self.failureException as e:
            notes = "\n".join(note[:500] for note in getattr(e, "__notes__", []))[:3000]
            if not notes:
                raise
            raise self.failureException(f"{e}\n{notes}") from e

    return run


# -- payloads ---------------------------------------------------------------------------------

_U32_EDGES = [0, 1, 255, 32768, 35000, 65535, 65536, 2**31 - 1, 2**31, 2**32 - 1]
uint32s = st.one_of(st.sampled_from(_U32_EDGES), st.integers(0, 2**32 - 1))
booleans = st.sampled_from([b"\x00", b"\x01", b"\x02", b"\xff"])
short_bytes = st.binary(max_size=48)


def u32(value: int) -> bytes:
    return struct.pack(">L", value)


def names(*known: bytes) -> st.SearchStrategy[bytes]:
    """One of the names the server knows, or anything."""
    return st.one_of(st.sampled_from(known), short_bytes)


def strings(inner: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    return inner.map(NS)


def concat(*parts: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    return st.tuples(*parts).map(b"".join)


# Mostly the channel the server has open (0), sometimes one it does not.
channels = (
    st.integers(0, 9)
    .flatmap(lambda k: st.just(0) if k < 7 else st.just(1) if k == 7 else uint32s)
    .map(u32)
)
addresses = names(b"localhost", b"127.0.0.1", b"::1", b"", b"0.0.0.0", b"*", "é".encode())
ports = st.one_of(st.sampled_from([0, 22, 80, 1023, HOSTILE_PORT, 8080, 65535, 65536]), uint32s)
name_lists = st.lists(
    st.sampled_from(
        [
            b"curve25519-sha256",
            b"ecdh-sha2-nistp256",
            b"diffie-hellman-group14-sha256",
            b"kex-strict-c-v00@openssh.com",
            b"ext-info-c",
            b"ssh-ed25519",
            b"rsa-sha2-256",
            b"aes128-ctr",
            b"aes128-gcm@openssh.com",
            b"chacha20-poly1305@openssh.com",
            b"hmac-sha2-256",
            b"none",
            b"zlib@openssh.com",
            b"",
        ]
    ),
    max_size=4,
).map(lambda xs: NS(b",".join(xs)))

user_keys = st.sampled_from(
    [KEY.public().blob(), OTHER.public().blob(), b"\x00\x00\x00\x0bssh-ed25519", b""]
)
signatures = st.one_of(
    st.builds(lambda alg, sig: NS(alg) + NS(sig), names(b"ssh-ed25519"), st.binary(max_size=80)),
    st.just(KEY.sign(b"not the session")),
    short_bytes,
)
publickey_data = st.one_of(
    concat(st.just(b"\x00"), strings(names(b"ssh-ed25519", b"rsa-sha2-256")), strings(user_keys)),
    concat(
        st.just(b"\x01"),
        strings(names(b"ssh-ed25519", b"ssh-rsa")),
        strings(user_keys),
        strings(signatures),
    ),
)
method_data = st.one_of(
    st.tuples(st.just(b"none"), st.just(b"")),
    st.tuples(st.just(b"publickey"), publickey_data),
    st.tuples(
        st.just(b"password"),
        st.one_of(
            concat(st.just(b"\x00"), strings(short_bytes)),
            concat(st.just(b"\x01"), strings(short_bytes), strings(short_bytes)),
        ),
    ),
    st.tuples(st.just(b"keyboard-interactive"), concat(strings(short_bytes), strings(short_bytes))),
    st.tuples(names(b"hostbased", b"gssapi-with-mic"), short_bytes),
)
userauth_requests = st.builds(
    lambda user, service, method: NS(user) + NS(service) + NS(method[0]) + method[1],
    names(b"alice", b"root", b""),
    names(b"ssh-connection", b"ssh-userauth"),
    method_data,
)
global_requests = st.one_of(
    concat(
        strings(names(b"tcpip-forward", b"cancel-tcpip-forward")),
        booleans,
        strings(addresses),
        ports.map(u32),
    ),
    concat(
        strings(
            names(
                b"keepalive@openssh.com",
                b"no-more-sessions@openssh.com",
                b"hostkeys-prove-00@openssh.com",
                b"streamlocal-forward@openssh.com",
            )
        ),
        booleans,
        short_bytes,
    ),
)
tcpip_extra = concat(strings(addresses), ports.map(u32), strings(addresses), ports.map(u32))
channel_opens = concat(
    strings(
        names(
            b"session",
            b"direct-tcpip",
            b"forwarded-tcpip",
            b"x11",
            b"auth-agent@openssh.com",
            b"direct-streamlocal@openssh.com",
        )
    ),
    uint32s.map(u32),
    uint32s.map(u32),
    uint32s.map(u32),
    st.one_of(tcpip_extra, short_bytes),
)
channel_requests = concat(
    channels,
    strings(names(b"exec", b"shell", b"pty-req", b"env", b"subsystem", b"keepalive@openssh.com")),
    booleans,
    short_bytes,
)

# Well-formed payloads, by message number, for every message the server parses.
VALID: dict[int, st.SearchStrategy[bytes]] = {
    1: concat(uint32s.map(u32), strings(short_bytes), strings(short_bytes)),  # DISCONNECT
    2: strings(short_bytes),  # IGNORE
    3: uint32s.map(u32),  # UNIMPLEMENTED
    4: concat(booleans, strings(short_bytes), strings(short_bytes)),  # DEBUG
    5: strings(names(b"ssh-userauth", b"ssh-connection", b"")),  # SERVICE_REQUEST
    20: concat(st.binary(min_size=16, max_size=16), *[name_lists] * 10, booleans, st.just(u32(0))),
    21: st.just(b""),  # NEWKEYS
    30: strings(st.one_of(st.binary(min_size=32, max_size=32), short_bytes)),  # KEX_ECDH_INIT
    50: userauth_requests,  # USERAUTH_REQUEST
    61: concat(st.just(u32(1)), strings(short_bytes)),  # USERAUTH_INFO_RESPONSE
    80: global_requests,  # GLOBAL_REQUEST
    81: short_bytes,  # REQUEST_SUCCESS
    82: st.just(b""),  # REQUEST_FAILURE
    90: channel_opens,  # CHANNEL_OPEN
    91: concat(channels, *[uint32s.map(u32)] * 3),  # CHANNEL_OPEN_CONFIRMATION
    92: concat(channels, uint32s.map(u32), strings(short_bytes), strings(short_bytes)),
    93: concat(channels, uint32s.map(u32)),  # CHANNEL_WINDOW_ADJUST
    94: concat(channels, strings(short_bytes)),  # CHANNEL_DATA
    95: concat(channels, uint32s.map(u32), strings(short_bytes)),  # CHANNEL_EXTENDED_DATA
    96: channels,  # CHANNEL_EOF
    97: channels,  # CHANNEL_CLOSE
    98: channel_requests,  # CHANNEL_REQUEST
    99: channels,  # CHANNEL_SUCCESS
    100: channels,  # CHANNEL_FAILURE
}

# The message numbers each phase is most about (drawn more often there).
FOCUS = {
    Phase.VERSION: [1, 2, 20, 30],
    Phase.KEX: [1, 2, 3, 4, 20, 21, 30, 5],
    Phase.NEWKEYS: [2, 5, 7, 20, 50, 80],
    Phase.USERAUTH: [5, 50, 61, 80, 2, 20],
    Phase.CONNECTION: [80, 81, 82, 90, 91, 92, 93, 94, 95, 96, 97, 98, 99, 100, 50],
}


@st.composite
def noise(draw: st.DrawFn, min_size: int = 65, max_size: int = 40000) -> bytes:
    """Pseudo-random bytes, cheap to draw in any size."""
    size = draw(st.integers(min_size, max_size))
    return random.Random(draw(st.integers(0, 2**32))).randbytes(size)


@st.composite
def mutated(draw: st.DrawFn, valid: st.SearchStrategy[bytes]) -> bytes:
    """A valid payload as it is, truncated, with bytes after it, oversized, or replaced."""
    payload = draw(valid)
    how = draw(st.sampled_from([*["exact"] * 4, "truncated", "extended", "oversized", "random"]))
    if how == "truncated" and payload:
        return payload[: draw(st.integers(0, len(payload) - 1))]
    if how == "extended":
        return payload + draw(st.binary(min_size=1, max_size=32))
    if how == "oversized":
        return payload + draw(noise())
    if how == "random":
        return draw(st.binary(max_size=200))
    return payload


def typed_messages(numbers: list[int]) -> st.SearchStrategy[tuple[int, bytes]]:
    return st.one_of(
        [st.tuples(st.just(n), mutated(VALID[n])) for n in numbers if n in VALID]
        + [st.tuples(st.just(n), st.binary(max_size=64)) for n in numbers if n not in VALID]
    )


any_payload = st.one_of(st.binary(max_size=200), noise())


def messages(phase: Phase) -> st.SearchStrategy[tuple[int, bytes]]:
    """One hostile message for C{phase}: focused, any known type, or any number at all."""
    return st.one_of(
        typed_messages(FOCUS[phase]),
        typed_messages(sorted(VALID)),
        st.tuples(st.integers(0, 255), any_payload),
    )


def sequences(phase: Phase, max_size: int = 10) -> st.SearchStrategy[list[tuple[int, bytes]]]:
    return st.lists(messages(phase), min_size=1, max_size=max_size)


# Message numbers no phase accepts from a client (RFC 4250 section 4.1: unassigned, reserved, or
# sent by servers only).  EXT_INFO (7) is left out: a client may send it after its NEWKEYS.
NEVER_FROM_CLIENTS = sorted({0, 6, *range(8, 20), *range(22, 30), *range(101, 256)})


def new_healthy(case: TestCase) -> tuple[HealthyTunnel, Path]:
    tmp = Path(case.mktemp())
    tmp.mkdir(parents=True)
    return HealthyTunnel(tmp, [KEY]), tmp


class _Hostile:
    """What each test needs: a healthy tunnel, a hostile connection, and the checks."""

    def __init__(
        self, case: TestCase, phase: Phase, healthy: tuple[HealthyTunnel, Path] | None = None
    ) -> None:
        self.case = case
        self.healthy, tmp = healthy or new_healthy(case)
        self.conn = HostileConnection(self.healthy.factory, phase, KEY, tmp)
        self.capture = LogCapture(self.conn.is_ours)
        self.payloads: list[bytes] = []

    def __enter__(self) -> _Hostile:
        self.capture.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.capture.__exit__(*exc)
        # Tracebacks are reported by the checks, per example; trial must not fail the test again.
        self.case.flushLoggedErrors()

    def send(self, number: int, payload: bytes) -> None:
        self.payloads.append(payload)
        self.conn.send(number, payload)

    def send_raw(self, data: bytes) -> None:
        self.payloads.append(data)
        self.conn.send_raw(data)

    def problems(self, *, check_healthy: bool = True) -> list[str]:
        """Every broken promise, after the hostile client has hung up."""
        conn = self.conn
        found = []
        if conn.server_output > MAX_SERVER_OUTPUT:
            found.append(f"the server wrote {conn.server_output} bytes")
        if conn.blocked_packets() > MAX_HELD_PACKETS:
            found.append(f"the server holds {conn.blocked_packets()} packets for a key exchange")
        conn.close()
        for failure in conn.raised:
            found.append(f"raised into the reactor: {failure.getBriefTraceback()[-600:]}")
        for event in self.capture.failures:
            found.append(f"logged a traceback: {event_text(event)[-800:]}")
        events = self.capture.events
        if len(events) >= MAX_LOG_EVENTS:
            found.append(f"{len(events)} log events for one connection")
        if self.capture.total_size >= MAX_LOG_BYTES:
            found.append(f"{self.capture.total_size} bytes of log for one connection")
        leak = payload_leaks(events, self.payloads)
        if leak:
            found.append(f"payload bytes in the log: {leak!r}")
        factory = self.healthy.factory
        if any(c.transport is conn.server for c in factory.connections):
            found.append("the hostile connection's service outlived it")
        if self.healthy.rig.binder.listening(HOSTILE_PORT):
            found.append("the hostile client's forward outlived its connection")
        problem = self.healthy.check() if check_healthy else ""
        if problem:
            found.append(problem)
        return found

    def check(self) -> None:
        found = self.problems()
        if found:
            self.case.fail("\n".join(found))


class HostileClientTests(TestCase):
    """The server's promises hold whatever one client sends, in every phase."""

    def hostile(self, phase: Phase) -> _Hostile:
        return _Hostile(self, phase)

    # Not shrunk: a failure already names the phase, the message and the payload.
    @show_example
    @settings(HOSTILE, max_examples=4, phases=[HPhase.explicit, HPhase.generate])
    @given(data=st.data())
    def test_every_message_type_in_every_phase(self, data: st.DataObject) -> None:
        """
        Each message type the server parses, as a valid, truncated, extended, oversized or
        random payload, on a fresh connection in each phase from the key exchange on: the
        server's promises hold for every one, and the healthy tunnel moves bytes after them all.
        """
        healthy = new_healthy(self)
        found = []
        for phase in (Phase.KEX, Phase.NEWKEYS, Phase.USERAUTH, Phase.CONNECTION):
            for number in sorted(VALID):
                payload = data.draw(mutated(VALID[number]), label=f"{phase.name} {number}")
                with _Hostile(self, phase, healthy) as h:
                    h.conn.start()
                    h.send(number, payload)
                    found += [
                        f"{phase.name}, message {number}, payload {payload[:40].hex()}"
                        f" ({len(payload)} bytes): {problem}"
                        for problem in h.problems(check_healthy=False)
                    ]
        problem = healthy[0].check()
        if problem:
            found.append(problem)
        if found:
            self.fail("\n".join(found))

    @show_example
    @HOSTILE
    @given(
        lines=st.lists(st.binary(max_size=40).map(lambda b: b + b"\r\n"), max_size=3),
        version=st.one_of(
            st.sampled_from(
                [
                    CLIENT_VERSION + b"\r\n",
                    CLIENT_VERSION + b"\n",
                    b"SSH-1.5-old\r\n",
                    b"SSH-2.0\r\n",
                    b"SSH-\r\n",
                    b"SSH-2.0-" + b"x" * 300 + b"\r\n",
                    b"",
                ]
            ),
            st.binary(max_size=40).map(lambda b: b"SSH-" + b + b"\r\n"),
        ),
        tail=st.lists(
            st.one_of(
                st.binary(max_size=100),
                st.builds(
                    lambda message, payload, block, lie: plain_packet(
                        bytes((message,)) + payload, block=block, length_delta=lie
                    ),
                    st.integers(0, 255),
                    st.binary(max_size=100),
                    st.sampled_from([8, 8, 8, 1, 4, 16]),
                    st.sampled_from([0, 0, 0, -1, 1, 2**31, -5]),
                ),
            ),
            max_size=5,
        ),
    )
    def test_version_exchange_garbage(
        self, lines: list[bytes], version: bytes, tail: list[bytes]
    ) -> None:
        """
        Lines, identification strings and framing garbage around the version exchange end at
        most this connection, with a bounded log and no traceback.
        """
        with self.hostile(Phase.VERSION) as h:
            h.conn.start()
            h.send_raw(b"".join(lines) + version)
            for chunk in tail:
                h.send_raw(chunk)
            h.check()

    @show_example
    @HOSTILE
    @given(
        lines=st.lists(st.binary(max_size=40).map(lambda b: b + b"\r\n"), min_size=1, max_size=3)
    )
    def test_lines_before_the_client_version_are_refused(self, lines: list[bytes]) -> None:
        """
        A client may not send lines before its identification string (RFC 4253 section 4.2 lets
        only servers do that): the server disconnects and starts no key exchange.
        """
        with self.hostile(Phase.VERSION) as h:
            h.conn.start()
            h.send_raw(b"".join(lines) + CLIENT_VERSION + b"\r\n")
            h.send_raw(plain_packet(client_kexinit(strict=False)))
            self.assertTrue(h.conn.disconnected, "the server accepted lines before the version")
            h.check()

    @show_example
    @HOSTILE
    @given(
        block=st.sampled_from([1, 2, 3, 4, 5, 6, 7, 12]),
        payload=st.binary(max_size=40),
    )
    def test_plaintext_packets_off_the_block_size_are_refused(
        self, block: int, payload: bytes
    ) -> None:
        """
        A plaintext packet whose length is not a multiple of 8 (RFC 4253 section 6) ends the
        connection before it is handled.
        """
        packet = plain_packet(b"\x02" + NS(payload), block=block)
        if len(packet) % 8 == 0:
            packet = plain_packet(b"\x02" + NS(payload) + b"x", block=block)
        if len(packet) % 8 == 0:
            return
        with self.hostile(Phase.VERSION) as h:
            h.conn.start()
            h.send_raw(CLIENT_VERSION + b"\r\n")
            h.send_raw(packet)
            self.assertTrue(
                h.conn.disconnected, f"a {len(packet)}-byte plaintext packet was accepted"
            )
            h.check()

    @show_example
    @HOSTILE
    @given(strict=st.booleans(), sent=sequences(Phase.KEX))
    def test_key_exchange_sequences(self, strict: bool, sent: list[tuple[int, bytes]]) -> None:
        """
        Any messages after the client's KEXINIT, strict or not, leave the server sound: no
        traceback, a bounded log without payload bytes, and other tunnels unharmed.
        """
        with self.hostile(Phase.KEX) as h:
            h.conn.start(strict=strict)
            for number, payload in sent:
                h.send(number, payload)
            h.check()

    @show_example
    @HOSTILE
    @given(
        strict=st.booleans(),
        before=st.lists(
            st.sampled_from([(2, NS(b"x")), (4, b"\x00" + NS(b"") + NS(b""))]), max_size=2
        ),
    )
    def test_newkeys_needs_a_completed_key_exchange(
        self, strict: bool, before: list[tuple[int, bytes]]
    ) -> None:
        """NEWKEYS before the key exchange has finished ends the connection, and nothing follows."""
        with self.hostile(Phase.KEX) as h:
            h.conn.start(strict=strict)
            for number, payload in before:
                h.send(number, payload)
            heard = len(h.conn.heard)
            h.send(21, b"")
            h.send(5, NS(b"ssh-userauth"))
            self.assertTrue(h.conn.disconnected, "NEWKEYS without a key exchange was accepted")
            after = [n for n, _ in h.conn.heard[heard:]]
            self.assertIn(after, ([], [1]), f"the server answered with messages {after}")
            h.check()

    @show_example
    @HOSTILE
    @given(
        strict=st.booleans(),
        exchange=st.booleans(),
        service=st.sampled_from([b"ssh-userauth", b"ssh-connection"]),
    )
    def test_no_service_before_the_first_newkeys(
        self, strict: bool, exchange: bool, service: bytes
    ) -> None:
        """
        A service request before the first NEWKEYS (with the key exchange begun or not) is never
        accepted: the server disconnects, and no SERVICE_ACCEPT goes out.
        """
        with self.hostile(Phase.KEX) as h:
            h.conn.start(strict=strict)
            if exchange:
                h.send(30, NS(bytes(range(32))))
            h.send(5, NS(service))
            h.send(50, NS(b"alice") + NS(b"ssh-connection") + NS(b"none"))
            accepted = [n for n, _ in h.conn.heard if n in (6, 51, 52)]
            self.assertEqual(accepted, [], "the server answered a service before NEWKEYS")
            self.assertTrue(
                h.conn.disconnected, "the server kept a connection that skipped NEWKEYS"
            )
            h.check()

    @show_example
    @HOSTILE
    @given(sent=sequences(Phase.NEWKEYS))
    def test_sequences_after_newkeys(self, sent: list[tuple[int, bytes]]) -> None:
        """Any messages after the first NEWKEYS and before a service leave the server sound."""
        with self.hostile(Phase.NEWKEYS) as h:
            h.conn.start()
            for number, payload in sent:
                h.send(number, payload)
            h.check()

    @show_example
    @HOSTILE
    @given(sent=sequences(Phase.USERAUTH, max_size=14))
    def test_userauth_sequences(self, sent: list[tuple[int, bytes]]) -> None:
        """Any messages during user authentication leave the server sound."""
        with self.hostile(Phase.USERAUTH) as h:
            h.conn.start()
            for number, payload in sent:
                h.send(number, payload)
            h.check()

    @show_example
    @HOSTILE
    @given(
        attempts=st.lists(
            st.one_of(
                st.just((50, NS(b"alice") + NS(b"ssh-connection") + NS(b"none"))),
                st.tuples(
                    st.just(50),
                    st.builds(
                        lambda blob: (
                            NS(b"alice")
                            + NS(b"ssh-connection")
                            + NS(b"publickey")
                            + b"\x00"
                            + NS(b"ssh-ed25519")
                            + NS(blob)
                        ),
                        st.just(OTHER.public().blob()),
                    ),
                ),
                st.just(
                    (
                        50,
                        NS(b"alice")
                        + NS(b"ssh-connection")
                        + NS(b"password")
                        + b"\x00"
                        + NS(b"pw"),
                    )
                ),
                st.just((5, NS(b"ssh-userauth"))),
            ),
            min_size=1,
            max_size=16,
        )
    )
    def test_max_auth_tries(self, attempts: list[tuple[int, bytes]]) -> None:
        """
        sshd's MaxAuthTries: the 6th failed attempt ends the connection; only a first C{none}
        is free; asking for the userauth service again does not reset the count.  So the server
        sends at most 5 USERAUTH_FAILUREs, 6 if the first request was C{none}.
        """
        with self.hostile(Phase.USERAUTH) as h:
            h.conn.start()
            for number, payload in attempts:
                h.send(number, payload)
            requests = [p for n, p in attempts if n == 50]
            first_is_none = bool(requests) and requests[0].endswith(NS(b"none"))
            allowed = MAX_AUTH_TRIES - 1 + (1 if first_is_none else 0)
            failures = sum(1 for n, _ in h.conn.heard if n == 51)
            self.assertLessEqual(
                failures, allowed, f"{failures} USERAUTH_FAILUREs for {len(requests)} requests"
            )
            if len(requests) > allowed and h.conn.readable:
                self.assertTrue(h.conn.disconnected, "too many failures did not disconnect")
            h.check()

    @show_example
    @HOSTILE
    @given(
        between=st.lists(
            st.just((50, NS(b"alice") + NS(b"ssh-connection") + NS(b"none"))), max_size=2
        )
    )
    def test_one_userauth_service_per_connection(self, between: list[tuple[int, bytes]]) -> None:
        """A second request for C{ssh-userauth} is refused: one service per connection."""
        with self.hostile(Phase.USERAUTH) as h:
            h.conn.start()
            for number, payload in between:
                h.send(number, payload)
            h.send(5, NS(b"ssh-userauth"))
            accepts = sum(1 for n, _ in h.conn.heard if n == 6)
            self.assertEqual(accepts, 1, "the userauth service was started again")
            self.assertTrue(h.conn.disconnected, "a second service request was not refused")
            h.check()

    @show_example
    @HOSTILE
    @given(sent=sequences(Phase.CONNECTION, max_size=12))
    def test_connection_sequences(self, sent: list[tuple[int, bytes]]) -> None:
        """
        Any messages after login (with one forwarded channel open) leave the server sound; a
        connection the server keeps still answers a global request.
        """
        with self.hostile(Phase.CONNECTION) as h:
            h.conn.start()
            for number, payload in sent:
                h.send(number, payload)
            conn = h.conn
            rekeying = any(n == 20 for n, _ in conn.heard)
            if not conn.disconnected and conn.readable and not rekeying:
                heard = len(conn.heard)
                conn.send(80, NS(b"keepalive@openssh.com") + b"\x01")
                replies = [n for n, _ in conn.heard[heard:] if n in (81, 82)]
                if not conn.disconnected:
                    self.assertEqual(replies, [82], "a live connection did not answer")
            h.check()

    @show_example
    @HOSTILE
    @given(
        phase=st.sampled_from([Phase.KEX, Phase.NEWKEYS, Phase.USERAUTH, Phase.CONNECTION]),
        number=st.sampled_from(NEVER_FROM_CLIENTS),
        payload=any_payload,
        strict=st.booleans(),
    )
    def test_unassigned_messages_disconnect_with_one_short_line(
        self, phase: Phase, number: int, payload: bytes, strict: bool
    ) -> None:
        """
        A message number no phase accepts from a client ends the connection at once, with one
        short log line that gives the number and the length, never the payload.
        """
        with self.hostile(phase) as h:
            h.conn.start(strict=strict)
            logged = len(h.capture.events)
            h.send(number, payload)
            h.send(2, NS(b"after"))
            self.assertTrue(h.conn.disconnected, f"message {number} did not disconnect")
            lines = [event_text(e) for e in h.capture.events[logged:]]
            about = [line for line in lines if str(number) in line]
            self.assertTrue(about, f"no log line names message {number}: {lines}")
            self.assertLess(max(map(len, about)), 300, about)
            h.check()

    @show_example
    @HOSTILE
    @given(
        phase=st.sampled_from([Phase.KEX, Phase.NEWKEYS, Phase.USERAUTH, Phase.CONNECTION]),
        number=st.sampled_from(NEVER_FROM_CLIENTS),
        count=st.integers(2, 40),
    )
    def test_a_flood_of_large_packets_logs_little(
        self, phase: Phase, number: int, count: int
    ) -> None:
        """
        Large packets of an unassigned type, in a burst: what is logged stays well under 1% of
        what was sent.
        """
        payload = random.Random(number).randbytes(30000)
        with self.hostile(phase) as h:
            h.conn.start()
            logged = h.capture.total_size
            for _ in range(count):
                h.send(number, payload)
            size = h.capture.total_size - logged
            self.assertLess(size, count * len(payload) // 100)
            h.check()
