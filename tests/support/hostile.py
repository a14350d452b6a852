"""
A hostile SSH client against the real server factory, in memory, for the property tests of
C{tests/test_hostile.py}.

The server transport sits on a L{StringTransport}: whatever it writes is counted (and decoded
while we can), so a test sees how much it sent, which messages, and whether it hung up.  Up to the
phase a test attacks, the client is honest: before the key exchange it is a few hand-built
plaintext packets; after it, a real rfwd client transport that exchanges keys, asks for
C{ssh-userauth} or logs in.  From that phase on the client is deaf, so nothing the server answers
makes it react: it only seals what the test injects and decodes what the server says.

Next to it, L{HealthyTunnel} is an honest client of the same factory with a working forward, to
show that one bad connection leaves the others alone.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterable
from enum import Enum
from pathlib import Path
from typing import Any

from twisted.conch.ssh.common import NS
from twisted.conch.ssh.keys import Key
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.logger import ILogObserver, LogEvent, formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from zope.interface import implementer

from tests.support.keys import public_line
from tests.support.memory import FakeBinder, MemoryRig
from tests.support.streams import FakeStream
from twisted_rfwd.client.config import ClientConfig, HostKeyPolicy
from twisted_rfwd.client.identity import Identity
from twisted_rfwd.client.tunnel import ClientTransport, Tunnel
from twisted_rfwd.protocol.spec import parse_remote_forward
from twisted_rfwd.server.connection import ForwardingServerConnection
from twisted_rfwd.server.factory import ForwardingServerFactory, ServerTransport

__all__ = [
    "CLIENT_VERSION",
    "HEALTHY_PORT",
    "HOSTILE_PORT",
    "HarnessError",
    "HealthyTunnel",
    "HostileConnection",
    "LogCapture",
    "Phase",
    "client_kexinit",
    "event_text",
    "payload_leaks",
    "plain_packet",
]

CLIENT_VERSION = b"SSH-2.0-hostile_1.0"
HEALTHY_PORT = 8080
HOSTILE_PORT = 9000

MSG_DISCONNECT = 1
MSG_SERVICE_REQUEST = 5
MSG_NEWKEYS = 21

_UINT32 = struct.Struct(">L")
# How many times the pump may go round before a connection counts as never going quiet.
_MAX_ROUNDS = 200


class HarnessError(Exception):
    """The honest part of a hostile connection did not get where it should: a test setup bug."""


class Phase(Enum):
    """Where the hostile client stops being honest."""

    VERSION = "version exchange"
    KEX = "first key exchange"
    NEWKEYS = "after the first NEWKEYS, before any service"
    USERAUTH = "user authentication"
    CONNECTION = "connection"


def plain_packet(
    message: bytes, *, block: int = 8, padding: int | None = None, length_delta: int = 0
) -> bytes:
    """
    C{message} (message number and payload) framed as an unencrypted binary packet.  C{padding}
    forces the padding length (whatever the block size then says); C{length_delta} makes the
    packet_length field lie.
    """
    if padding is None:
        padding = block - (5 + len(message)) % block
        if padding < 4:
            padding += block
    length = 1 + len(message) + padding
    return _UINT32.pack(length + length_delta) + bytes((padding,)) + message + bytes(padding)


def client_kexinit(*, strict: bool, kex: bytes = b"curve25519-sha256") -> bytes:
    """The payload of a plausible client KEXINIT, with or without strict key exchange."""
    methods = kex + (b",kex-strict-c-v00@openssh.com" if strict else b"")
    lists = [
        methods,
        b"ssh-ed25519",
        b"aes128-ctr",
        b"aes128-ctr",
        b"hmac-sha2-256",
        b"hmac-sha2-256",
        b"none",
        b"none",
        b"",
        b"",
    ]
    return b"\x14" + os.urandom(16) + b"".join(NS(x) for x in lists) + b"\x00" + bytes(4)


# -- log capture ------------------------------------------------------------------------------


@implementer(ILogObserver)
class LogCapture:
    """Every log event published while it is active, except those C{ignore} says are not ours."""

    def __init__(self, ignore: Callable[[LogEvent], bool] = lambda event: False) -> None:
        self.events: list[LogEvent] = []
        self._ignore = ignore

    def __call__(self, event: LogEvent) -> None:
        if not self._ignore(event):
            self.events.append(event)

    def __enter__(self) -> LogCapture:
        globalLogPublisher.addObserver(self)
        return self

    def __exit__(self, *exc: object) -> None:
        globalLogPublisher.removeObserver(self)

    @property
    def failures(self) -> list[LogEvent]:
        """Events that carry a traceback: each one is a bug in the server."""
        return [e for e in self.events if "log_failure" in e]

    @property
    def total_size(self) -> int:
        return sum(len(event_text(e)) for e in self.events)


def event_text(event: LogEvent) -> str:
    """What a log file would hold for C{event}: the formatted line and any traceback."""
    # Twisted's legacy-observer wrapper edits events in place (it empties a field named
    # "message"), keeping the original in log_legacy: format that one when it is there.
    legacy = event.get("log_legacy")
    text = str(legacy) if legacy is not None else formatEvent(event)
    failure = event.get("log_failure")
    if isinstance(failure, Failure):
        text += "\n" + failure.getTraceback()
    return text


def _fields_text(event: LogEvent) -> str:
    """The event's own fields as a JSON log would carry them."""
    return "\n".join(
        repr(value) for key, value in event.items() if not key.startswith("log_") and key != "time"
    )


def _escaped(chunk: bytes) -> str:
    # repr() of bytes without its quotes, and without caring which quote it would escape.
    return repr(chunk)[2:-1].replace("\\'", "'")


def payload_leaks(events: Iterable[LogEvent], payloads: Iterable[bytes], run: int = 64) -> str:
    """
    The first log text that holds C{run} consecutive bytes of one of C{payloads} (raw, as repr
    or as hex), or C{""}.  Only the first 512 bytes of each payload are looked for, in windows
    16 bytes apart: any longer run holds one of them.
    """
    texts = []
    for event in events:
        texts.append(event_text(event) + "\n" + _fields_text(event))
    texts = [t.replace("\\'", "'") for t in texts]
    if not texts:
        return ""
    for payload in set(payloads):
        head = payload[:512]
        for offset in range(0, len(head) - run + 1, 16):
            chunk = head[offset : offset + run]
            needles = {_escaped(chunk), chunk.hex(), chunk.decode("latin-1")}
            for text in texts:
                for needle in needles:
                    if needle in text:
                        return text[:300]
    return ""


# -- the hostile client ---------------------------------------------------------------------


class HostileClient(ClientTransport):
    """
    rfwd's client transport, honest up to C{stop_at} and deaf after it: it then only seals what
    it is told to send and decodes what the server sends, without acting on it.
    """

    def __init__(self, tunnel: Tunnel, stop_at: Phase) -> None:
        super().__init__(tunnel)
        self.stop_at = stop_at
        self.reached = False
        self.deaf = False
        self.unreadable = False
        self.heard: list[tuple[int, bytes]] = []
        self._deaf_buffer = bytearray()

    def connectionSecure(self) -> None:
        if self.stop_at is Phase.NEWKEYS:
            self.reached = True
            return
        if self.stop_at is Phase.USERAUTH:
            if not self.reached:
                self.reached = True
                self.sendPacket(MSG_SERVICE_REQUEST, NS(b"ssh-userauth"))
            return
        super().connectionSecure()

    def inject(self, message: int, payload: bytes) -> None:
        """Seal one packet under the current keys, whatever the protocol state."""
        seq = self.outgoingPacketSequence
        sealed = self.currentEncryptions.sealer.seal(seq, bytes((message,)) + payload)
        self.outgoingPacketSequence = (seq + 1) & 0xFFFFFFFF
        self.transport.writeSequence(sealed)

    def dataReceived(self, data: bytes) -> None:
        if not self.deaf:
            super().dataReceived(data)
            return
        if self.unreadable:
            return
        self._deaf_buffer += data
        opener = self.currentEncryptions.opener
        buffer = self._deaf_buffer
        try:
            while len(buffer) >= opener.first_block:
                seq = self.incomingPacketSequence
                size = opener.packet_size(seq, bytes(buffer[: opener.first_block]))
                if len(buffer) < size:
                    return
                packet = bytes(buffer[:size])
                del buffer[:size]
                plaintext, start, end = opener.open(seq, memoryview(packet))
                self.incomingPacketSequence = (seq + 1) & 0xFFFFFFFF
                number = plaintext[start]
                self.heard.append((number, bytes(plaintext[start + 1 : end])))
                if number == MSG_NEWKEYS:
                    # The server re-keyed with a hostile peer: we cannot follow.
                    self.unreadable = True
                    return
        except Exception:
            self.unreadable = True


class _PlainListener:
    """Decodes what the server sends before its NEWKEYS: its version line, then plain packets."""

    def __init__(self) -> None:
        self.heard: list[tuple[int, bytes]] = []
        self.version: bytes | None = None
        self.unreadable = False
        self._buffer = bytearray()

    def data_received(self, data: bytes) -> None:
        if self.unreadable:
            return
        self._buffer += data
        buffer = self._buffer
        if self.version is None:
            end = buffer.find(b"\n")
            if end < 0:
                return
            self.version = bytes(buffer[:end]).rstrip(b"\r")
            del buffer[: end + 1]
        while len(buffer) >= 5:
            (length,) = _UINT32.unpack_from(buffer)
            if len(buffer) < 4 + length:
                return
            padding = buffer[4]
            payload = bytes(buffer[5 : 4 + length - padding])
            del buffer[: 4 + length]
            if not payload:
                self.unreadable = True
                return
            self.heard.append((payload[0], payload[1:]))
            if payload[0] == MSG_NEWKEYS:
                self.unreadable = True
                return


class HostileConnection:
    """One hostile client of C{factory}, honest until C{phase}; see the module docstring."""

    def __init__(
        self, factory: ForwardingServerFactory, phase: Phase, user_key: Key, tmp: Path
    ) -> None:
        self.factory = factory
        self.phase = phase
        self.user_key = user_key
        self.tmp = tmp
        self.peer = IPv4Address("TCP", "127.0.0.1", 40999)
        self.server: ServerTransport = factory.buildProtocol(self.peer)
        self.server_tx = StringTransport(
            hostAddress=IPv4Address("TCP", "127.0.0.1", 2222), peerAddress=self.peer
        )
        self.client: HostileClient | None = None
        self.client_tx: StringTransport | None = None
        self.tunnel: Tunnel | None = None
        self._plain = _PlainListener()
        self.server_output = 0
        self.lost = False
        self.lost_by_server = False
        # Exceptions that escaped the server's protocol methods: each would reach the reactor.
        self.raised: list[Failure] = []
        self.app: FakeStream | None = None
        self.server_channel: int | None = None
        self.strict = False

    # -- setting up ---------------------------------------------------------------------------

    def start(self, *, strict: bool = True) -> None:
        """Connect and be honest up to the phase; raise L{HarnessError} if that fails."""
        self.strict = strict
        if self.phase in (Phase.VERSION, Phase.KEX):
            self._call(self.server.makeConnection, self.server_tx)
            if self.phase is Phase.KEX:
                self.send_raw(
                    CLIENT_VERSION + b"\r\n" + plain_packet(client_kexinit(strict=strict))
                )
            self.flush()
            return
        forwards = [parse_remote_forward(f"{HOSTILE_PORT}:127.0.0.1:80")]
        config = ClientConfig(
            host="server.test",
            user="alice",
            port=2222,
            forwards=forwards if self.phase is Phase.CONNECTION else [],
            identities=[Identity(self.user_key, "test key")],
            strict_host_key_checking=HostKeyPolicy.ACCEPT_NEW,
            known_hosts=[str(self.tmp / "known_hosts")],
            server_alive_interval=0,
        )
        self.tunnel = Tunnel(self.factory.reactor, config)
        self.client = HostileClient(self.tunnel, self.phase)
        self.client_tx = StringTransport(
            hostAddress=self.peer, peerAddress=IPv4Address("TCP", "127.0.0.1", 2222)
        )
        if self.phase is Phase.CONNECTION:

            def ready(_: object) -> None:
                assert self.client is not None
                self.client.reached = True

            self.tunnel.when_ready().addCallbacks(ready, lambda _: None)
        self._call(self.server.makeConnection, self.server_tx)
        self.client.makeConnection(self.client_tx)
        self.flush()
        if not self.client.reached or self.lost:
            raise HarnessError(f"the honest client did not reach the {self.phase.value} phase")
        self.strict = bool(self.server.strict_kex)
        if self.phase is Phase.CONNECTION:
            self._open_forwarded_channel()

    def _open_forwarded_channel(self) -> None:
        """An application connects to the hostile client's forward; the client confirms."""
        service = self.server.service
        binder = self.factory.binder
        if not isinstance(binder, FakeBinder):
            raise HarnessError("the factory must bind through a FakeBinder")
        listeners = binder.listening(HOSTILE_PORT)
        if not isinstance(service, ForwardingServerConnection) or not listeners:
            raise HarnessError("the hostile client's forward is not listening")
        protocol = listeners[0][0].buildProtocol(IPv4Address("TCP", "127.0.0.1", 50999))
        if protocol is None:
            raise HarnessError("the hostile client's forward refused a connection")
        self.app = FakeStream(peer=IPv4Address("TCP", "127.0.0.1", 50999))
        self.app.connect(protocol)
        self.flush()
        opens = [payload for number, payload in self.heard if number == 90]
        if not opens:
            raise HarnessError("the server did not open a forwarded-tcpip channel")
        name_length = _UINT32.unpack_from(opens[-1])[0]
        (self.server_channel,) = _UINT32.unpack_from(opens[-1], 4 + name_length)
        self.send(91, struct.pack(">LLLL", self.server_channel, 0, 2 * 1024 * 1024, 32768))
        self.flush()
        self.app.receive(b"from the application")
        self.flush()

    # -- attacking ----------------------------------------------------------------------------

    def send_raw(self, data: bytes) -> None:
        """Bytes straight onto the wire (only before a client transport exists)."""
        assert self.client is None
        if not self.lost and not self.server_tx.disconnecting:
            self._call(self.server.dataReceived, data)
        self.flush()

    def send(self, message: int, payload: bytes) -> None:
        """One packet: plaintext before the key exchange, under the keys after it."""
        if self.lost or self.server_tx.disconnecting:
            return
        if self.client is None:
            self.send_raw(plain_packet(bytes((message,)) + payload))
            return
        self.client.inject(message, payload)
        self.flush()

    # -- observing ----------------------------------------------------------------------------

    @property
    def heard(self) -> list[tuple[int, bytes]]:
        """The messages the server sent that could be decoded, in order."""
        if self.client is not None:
            return self.client.heard
        return self._plain.heard

    @property
    def readable(self) -> bool:
        """Whether everything the server sent so far was decoded."""
        return not (self.client.unreadable if self.client is not None else self._plain.unreadable)

    @property
    def disconnected(self) -> bool:
        """The server hung up (or began to)."""
        return self.lost_by_server or self.server_tx.disconnecting

    def blocked_packets(self) -> int:
        """Packets the server holds back until a key exchange ends (Conch's queue)."""
        return len(getattr(self.server, "_blockedByKeyExchange", None) or [])

    # -- the pump -----------------------------------------------------------------------------

    def flush(self) -> None:
        """Move bytes both ways until the connection is quiet or gone."""
        for _ in range(_MAX_ROUNDS):
            if self.lost:
                return
            moved = False
            if self.client_tx is not None:
                out = self.client_tx.value()
                if out:
                    self.client_tx.clear()
                    moved = True
                    if not self.server_tx.disconnecting:
                        self._call(self.server.dataReceived, out)
            out = self.server_tx.value()
            if out:
                self.server_tx.clear()
                moved = True
                self.server_output += len(out)
                if self.client is not None:
                    # Deaf from the first read after the honest part is done.
                    self.client.deaf = self.client.deaf or self.client.reached
                    self.client.dataReceived(out)
                else:
                    self._plain.data_received(out)
            if self.server_tx.disconnecting:
                self.lost_by_server = True
                self._lose()
                return
            if self.client_tx is not None and self.client_tx.disconnecting:
                self._lose()
                return
            if not moved:
                return
        raise HarnessError("the hostile connection never went quiet")

    def close(self) -> None:
        """The hostile client hangs up, if the server has not already."""
        self.flush()
        self._lose()

    def _lose(self) -> None:
        if self.lost:
            return
        self.lost = True
        self._call(self.server.connectionLost, Failure(ConnectionDone("closed")))
        if self.client is not None:
            self.client.connectionLost(Failure(ConnectionDone("closed")))
        if self.app is not None and not self.app.closed:
            self.app.drain()

    def _call(self, method: Callable[..., Any], *args: Any) -> None:
        try:
            method(*args)
        except Exception:
            self.raised.append(Failure())

    def is_ours(self, event: LogEvent) -> bool:
        """Whether a log event comes from the hostile client's side (not the server's)."""
        namespace = str(event.get("log_namespace", ""))
        if namespace.startswith(("twisted_rfwd.client", "tests.")):
            return True
        source = event.get("log_source")
        client_side = [self.client, self.tunnel]
        if self.client is not None:
            client_side.append(self.client.service)
        return source is not None and any(source is x for x in client_side if x is not None)


class HealthyTunnel:
    """An honest client of the same factory, with one forward and one connection through it."""

    def __init__(self, tmp: Path, other_keys: Iterable[Key] = ()) -> None:
        self.rig = MemoryRig(tmp, [parse_remote_forward(f"{HEALTHY_PORT}:127.0.0.1:80")])
        # The same user may log in with the hostile client's keys too.
        with open(self.rig.server_config.authorized_keys, "ab") as f:
            f.writelines(public_line(key) + b"\n" for key in other_keys)
        ready = self.rig.connect()
        if not ready.called:
            raise HarnessError("the healthy tunnel did not come up")
        self.app = self.rig.app_connects(HEALTHY_PORT)
        self.destination = self.rig.destination_accepts()
        self._round = 0
        self.problem = self.check()
        if self.problem:
            raise HarnessError(self.problem)

    @property
    def factory(self) -> ForwardingServerFactory:
        return self.rig.factory

    def check(self) -> str:
        """What is wrong with the tunnel (C{""}: bytes go both ways, on an old and a new conn)."""
        self._round += 1
        problem = self._both_ways(self.app, self.destination, f"old {self._round}")
        if problem:
            return problem
        if not self.rig.binder.listening(HEALTHY_PORT):
            return "the healthy forward stopped listening"
        app = self.rig.app_connects(HEALTHY_PORT, peer_port=50000 + self._round)
        try:
            destination = self.rig.destination_accepts()
        except AssertionError:
            return "a new connection to the healthy forward reached no destination"
        return self._both_ways(app, destination, f"new {self._round}")

    def _both_ways(self, app: FakeStream, destination: FakeStream, tag: str) -> str:
        up, down = f"up {tag}".encode(), f"down {tag}".encode()
        app.receive(up)
        self.rig.flush()
        got = destination.drain()
        if got != up:
            return f"healthy tunnel: the destination got {got!r}, not {up!r}"
        destination.receive(down)
        self.rig.flush()
        got = app.drain()
        if got != down:
            return f"healthy tunnel: the application got {got!r}, not {down!r}"
        return ""
