"""
rfwd-client and rfwd-server end to end, in memory: real SSH (key exchange, auth, channels) over
iosim, fake sockets at both forwarded ends, no real time.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SkipTest, TestCase

from tests.support.keys import new_key, public_line
from tests.support.memory import MemoryRig
from tests.support.streams import FakeStream
from twisted_rfwd.client.forwards import ForwardStatus
from twisted_rfwd.client.tunnel import Tunnel
from twisted_rfwd.errors import (
    AuthenticationFailed,
    ChannelOpenFailed,
    ForwardRefused,
    UnknownHostKey,
)
from twisted_rfwd.protocol import wire
from twisted_rfwd.protocol.spec import RemoteForward, parse_remote_forward
from twisted_rfwd.server.connection import ForwardingServerConnection
from twisted_rfwd.ssh.mux import GlobalRequestFailed


def forward(spec: str) -> RemoteForward:
    return parse_remote_forward(spec)


class ForwardingTests(TestCase):
    def rig(self, *specs: str, **server_options: object) -> MemoryRig:
        tmp = Path(self.mktemp())
        tmp.mkdir()
        return MemoryRig(tmp, [forward(s) for s in specs], **server_options)

    def ready(self, rig: MemoryRig) -> Tunnel:
        return self.successResultOf(rig.connect())

    def server_connection(self, rig: MemoryRig) -> ForwardingServerConnection:
        assert rig.server is not None
        service = rig.server.service
        assert isinstance(service, ForwardingServerConnection)
        return service

    def test_forward_relays_both_ways(self) -> None:
        """A connection to the server's port reaches the destination; replies come back."""
        rig = self.rig("8080:127.0.0.1:80")
        tunnel = self.ready(rig)
        self.assertEqual(tunnel.forwards[0].status, ForwardStatus.LISTENING)
        self.assertEqual(tunnel.forwards[0].port, 8080)
        bound = sorted(p.address for _, p in rig.binder.listening(8080))
        self.assertEqual(bound, ["127.0.0.1", "::1"])

        app = rig.app_connects(8080)
        host, port, _ = rig.reactor.tcpClients[-1][:3]
        self.assertEqual((host, port), ("127.0.0.1", 80))
        destination = rig.destination_accepts()
        app.receive(b"hello")
        rig.flush()
        self.assertEqual(destination.drain(), b"hello")
        destination.receive(b"world")
        rig.flush()
        self.assertEqual(app.drain(), b"world")
        self.assertTrue(destination.nodelay)

    def test_forwarded_channel_names_the_forward_and_originator(self) -> None:
        """The forwarded-tcpip open carries the requested address string, port and originator."""
        rig = self.rig("8080:127.0.0.1:80")
        tunnel = self.ready(rig)
        seen: list[tuple[str, int]] = []
        original = tunnel.forward_for

        def spy(address: str, port: int) -> RemoteForward | None:
            seen.append((address, port))
            return original(address, port)

        tunnel.forward_for = spy  # type: ignore[method-assign]
        rig.app_connects(8080, peer_port=51234)
        self.assertEqual(seen, [("localhost", 8080)])

    def test_one_read_is_held_until_the_channel_is_confirmed(self) -> None:
        """
        Until the client has connected the destination, the accepted socket's first read is
        held and the socket paused; then everything arrives, in order.
        """
        rig = self.rig("8080:127.0.0.1:80")
        self.ready(rig)
        app = rig.app_connects(8080)
        self.assertFalse(app.reading_paused)
        app.receive(b"early bytes")
        rig.flush()
        self.assertTrue(app.reading_paused)
        app.receive(b" and more")
        rig.flush()
        self.assertEqual(app.inbound, [b" and more"])
        destination = rig.destination_accepts()
        self.assertFalse(app.reading_paused)
        rig.flush()
        self.assertEqual(destination.drain(), b"early bytes and more")

    def test_port_zero_is_allocated_and_reported(self) -> None:
        """Port 0: the server picks a port, uses it for both families, and says which."""
        rig = self.rig("0:127.0.0.1:80")
        tunnel = self.ready(rig)
        state = tunnel.forwards[0]
        self.assertEqual(state.status, ForwardStatus.LISTENING)
        self.assertEqual(state.port, 40001)
        self.assertEqual(len(rig.binder.listening(40001)), 2)
        rig.app_connects(40001)
        destination = rig.destination_accepts()
        self.assertFalse(destination.closed)

    def test_add_forward_on_a_connected_tunnel(self) -> None:
        """Tunnel.add_forward asks for one more forward; it listens and carries data."""
        rig = self.rig("8080:127.0.0.1:80")
        tunnel = self.ready(rig)
        added = tunnel.add_forward(parse_remote_forward("9090:127.0.0.1:90"))
        rig.flush()
        state = self.successResultOf(added)
        self.assertEqual(state.status, ForwardStatus.LISTENING)
        self.assertEqual([s.spec.listen_port for s in tunnel.forwards], [8080, 9090])
        app = rig.app_connects(9090)
        host, port, _ = rig.pending_destination()
        self.assertEqual((host, port), ("127.0.0.1", 90))
        self.assertFalse(app.closed)

    def test_cancel_closes_listener_but_not_connections(self) -> None:
        """cancel-tcpip-forward stops listening; a connection already forwarded keeps flowing."""
        rig = self.rig("8080:127.0.0.1:80")
        tunnel = self.ready(rig)
        app = rig.app_connects(8080)
        destination = rig.destination_accepts()
        d = tunnel.cancel_forward(tunnel.forwards[0].spec)
        rig.flush()
        self.successResultOf(d)
        self.assertEqual(rig.binder.listening(8080), [])
        self.assertEqual(list(tunnel.forwards), [])
        app.receive(b"still here")
        rig.flush()
        self.assertEqual(destination.drain(), b"still here")

    def test_busy_port_is_refused_and_others_carry_on(self) -> None:
        """A port in use is refused; the client warns and keeps the forwards that worked."""
        rig = self.rig("8080:127.0.0.1:80", "8081:127.0.0.1:81")
        rig.binder.busy.add(8080)
        tunnel = self.ready(rig)
        self.assertEqual(
            [s.status for s in tunnel.forwards],
            [ForwardStatus.REFUSED, ForwardStatus.LISTENING],
        )
        self.assertEqual(
            tunnel.forwards[0].error,
            "remote port forwarding failed for listen port 8080:127.0.0.1:80",
        )
        rig.app_connects(8081)
        destination = rig.destination_accepts()
        self.assertFalse(destination.closed)

    def test_exit_on_forward_failure_fails_the_tunnel(self) -> None:
        """With ExitOnForwardFailure=yes a refused forward fails the connection attempt."""
        rig = self.rig("8080:127.0.0.1:80")
        rig.binder.busy.add(8080)
        rig.client_config.exit_on_forward_failure = True
        failure = self.failureResultOf(rig.connect(), ForwardRefused)
        self.assertIn("8080", str(failure.value))
        closed = self.successResultOf(rig.tunnel.when_closed())
        self.assertIsInstance(closed, ForwardRefused)

    def test_destination_refused_closes_the_application_socket(self) -> None:
        """A refused destination: OPEN_FAILURE, the server closes the socket, the tunnel stays."""
        rig = self.rig("8080:127.0.0.1:80")
        tunnel = self.ready(rig)
        app = rig.app_connects(8080)
        rig.destination_refuses()
        self.assertTrue(app.closed)
        self.assertEqual(app.drain(), b"")
        self.assertEqual(self.server_connection(rig).channels, {})
        # The tunnel carries on: a second connection works.
        app2 = rig.app_connects(8080, peer_port=50001)
        destination = rig.destination_accepts()
        app2.receive(b"ok")
        rig.flush()
        self.assertEqual(destination.drain(), b"ok")
        self.assertIsNotNone(tunnel.connection)

    def test_half_close_carries_eof_both_ways(self) -> None:
        """EOF from the application reaches the destination; its reply after EOF comes back."""
        rig = self.rig("8080:127.0.0.1:80")
        self.ready(rig)
        app = rig.app_connects(8080)
        destination = rig.destination_accepts()
        app.receive(b"request")
        app.receive_eof()
        rig.flush()
        self.assertEqual(destination.drain(), b"request")
        self.assertTrue(destination.write_closed)
        self.assertFalse(destination.closed)
        destination.receive(b"reply after eof")
        destination.receive_eof()
        rig.flush()
        self.assertEqual(app.drain(), b"reply after eof")
        rig.flush()
        self.assertTrue(app.closed)
        self.assertTrue(destination.closed)
        self.assertEqual(self.server_connection(rig).channels, {})
        assert rig.tunnel.connection is not None
        self.assertEqual(rig.tunnel.connection.channels, {})

    def test_messages_of_one_event_leave_in_one_write(self) -> None:
        """
        What one event makes an end send goes to its SSH socket in one write: here the client's
        EOF and the CLOSE after it, when the destination ends a half-closed connection.
        """
        rig = self.rig("8080:127.0.0.1:80")
        self.ready(rig)
        app = rig.app_connects(8080)
        destination = rig.destination_accepts()
        assert rig.client is not None and rig.server is not None
        client_writes = self.count_writes(rig.client.transport)
        app.receive(b"request")
        app.receive_eof()
        rig.flush()
        self.assertEqual(destination.drain(), b"request")
        self.assertTrue(destination.write_closed)
        del client_writes[:]
        destination.receive_eof()
        self.assertEqual(
            [self.message_count(rig.client, data) for data in client_writes],
            [2],
            "EOF and CLOSE in one write",
        )
        rig.flush()
        self.assertTrue(app.closed)
        self.assertTrue(destination.closed)

    def test_data_sealed_in_a_batch_is_kept_intact(self) -> None:
        """
        Channel data sealed while a batch holds the writes is copied out of the reused seal
        buffer: two sends in one batch both arrive intact, in order.
        """
        rig = self.rig("8080:127.0.0.1:80")
        self.ready(rig)
        app = rig.app_connects(8080)
        destination = rig.destination_accepts()
        assert rig.client is not None
        first, second = bytes(range(256)) * 16, bytes(reversed(range(256))) * 16
        with rig.client.batch():
            destination.receive(first)
            destination.receive(second)
        rig.flush()
        self.assertEqual(app.drain(), first + second)

    def count_writes(self, transport: Any) -> list[bytes]:
        """Every write to C{transport}, recorded before it goes on."""
        writes: list[bytes] = []
        original = transport.write

        def write(data: bytes) -> None:
            writes.append(data)
            original(data)

        transport.write = write
        return writes

    def message_count(self, sender: Any, data: bytes) -> int:
        """How many sealed packets C{data} holds (AES-GCM: 4 + length + 16 each)."""
        count, offset = 0, 0
        while offset < len(data):
            offset += 4 + int.from_bytes(data[offset : offset + 4], "big") + 16
            count += 1
        self.assertEqual(offset, len(data))
        return count

    def test_slow_reader_pauses_the_sender(self) -> None:
        """A destination that stops reading stops the application's socket being read."""
        rig = self.rig("8080:127.0.0.1:80")
        self.ready(rig)
        app = rig.app_connects(8080)
        destination = rig.destination_accepts()
        chunk = bytes(range(256)) * 256  # 64 KiB
        sent = 0
        for _ in range(200):  # offer up to 12.5 MiB
            if app.reading_paused:
                break
            app.receive(chunk)
            sent += len(chunk)
            rig.flush()
        self.assertTrue(app.reading_paused, "the application socket was never paused")
        buffered = len(destination.written)
        window = rig.client_config.window_size
        self.assertLessEqual(buffered, window + len(chunk))
        self.assertLess(sent, 4 * window)
        # The reader catches up: everything arrives, in order.
        received = bytearray()
        for _ in range(1000):
            received += destination.drain()
            rig.flush()
            if not app.inbound and not destination.written:
                break
        self.assertEqual(len(received), sent)
        self.assertEqual(bytes(received), chunk * (sent // len(chunk)))

    def test_slow_application_pauses_the_destination(self) -> None:
        """Back-pressure the other way: an application that stops reading pauses the destination."""
        rig = self.rig("8080:127.0.0.1:80")
        self.ready(rig)
        app = rig.app_connects(8080)
        destination = rig.destination_accepts()
        chunk = b"x" * 65536
        for _ in range(200):
            if destination.reading_paused:
                break
            destination.receive(chunk)
            rig.flush()
        self.assertTrue(destination.reading_paused)
        self.assertLessEqual(len(app.written), rig.server_config.window_size + len(chunk))

    def test_session_channel_is_refused(self) -> None:
        """With sessions off, session channels are refused with a reason: it only forwards."""
        rig = self.rig("8080:127.0.0.1:80", sessions=False)
        tunnel = self.ready(rig)
        assert tunnel.connection is not None
        channel = tunnel.connection.open_channel(b"session", b"")
        rig.flush()
        error = self.failureResultOf(channel.when_opened(), ChannelOpenFailed).value
        self.assertEqual(error.code, wire.OPEN_ADMINISTRATIVELY_PROHIBITED)
        self.assertIn("only forwards ports", error.description)

    def test_forwarded_channel_for_unknown_port_is_refused(self) -> None:
        """The client refuses a forwarded-tcpip channel that matches none of its forwards."""
        rig = self.rig("8080:127.0.0.1:80")
        self.ready(rig)
        server = self.server_connection(rig)
        payload = wire.ForwardedTcpip("localhost", 9999, "192.0.2.1", 5555).pack()
        channel = server.open_channel(b"forwarded-tcpip", payload)
        rig.flush()
        error = self.failureResultOf(channel.when_opened(), ChannelOpenFailed).value
        self.assertEqual(error.code, wire.OPEN_ADMINISTRATIVELY_PROHIBITED)
        self.assertEqual(error.description, "unknown listen_port")
        self.assertEqual(rig.reactor.tcpClients, [])

    def test_global_requests_are_answered_in_order(self) -> None:
        """Unknown requests fail, known ones succeed, and replies keep the request order."""
        rig = self.rig("8080:127.0.0.1:80")
        tunnel = self.ready(rig)
        assert tunnel.connection is not None
        connection = tunnel.connection
        first = connection.send_global_request(b"no-such-request@example.com", b"")
        second = connection.send_global_request(
            b"tcpip-forward", wire.TcpipForward("localhost", 9090).pack()
        )
        third = connection.send_global_request(b"keepalive@openssh.com", b"")
        rig.flush()
        self.failureResultOf(first, GlobalRequestFailed)
        self.assertEqual(self.successResultOf(second), b"")
        self.failureResultOf(third, GlobalRequestFailed)
        self.assertEqual(len(rig.binder.listening(9090)), 2)

    def test_malformed_request_disconnects_with_a_reason(self) -> None:
        """A truncated tcpip-forward is a protocol error: disconnect, saying what was wrong."""
        rig = self.rig("8080:127.0.0.1:80")
        tunnel = self.ready(rig)
        assert tunnel.connection is not None
        reply = tunnel.connection.send_global_request(b"tcpip-forward", b"\x00\x00\x00\x09loc")
        rig.flush()
        self.failureResultOf(reply)
        reason = self.successResultOf(tunnel.when_closed())
        self.assertIn("malformed tcpip-forward request", str(reason))
        self.assertEqual(rig.binder.listening(8080), [])

    def test_connection_loss_closes_listeners_and_connections(self) -> None:
        """When the SSH connection goes, the server stops listening and closes forwarded sockets."""
        rig = self.rig("8080:127.0.0.1:80")
        tunnel = self.ready(rig)
        app = rig.app_connects(8080)
        destination = rig.destination_accepts()
        rig.disconnect()
        self.assertEqual(rig.binder.listening(8080), [])
        self.assertTrue(app.closed)
        self.assertTrue(destination.closed)
        reason = self.successResultOf(tunnel.when_closed())
        self.assertIn("server.test port 2222", str(reason))

    def test_key_options_restrict_forwarding(self) -> None:
        """permitlisten in authorized_keys limits which ports a key may forward."""
        tmp = Path(self.mktemp())
        tmp.mkdir()
        rig = MemoryRig(tmp, [forward("8080:127.0.0.1:80"), forward("9090:127.0.0.1:90")])
        # Rewrite the authorized key with an option, keeping the same key.
        line = b'permitlisten="localhost:9090" ' + public_line(rig.user_key)
        Path(rig.server_config.authorized_keys).write_bytes(line + b"\n")
        tunnel = self.ready(rig)
        self.assertEqual(
            [s.status for s in tunnel.forwards],
            [ForwardStatus.REFUSED, ForwardStatus.LISTENING],
        )


class LoginTests(TestCase):
    def test_unauthorized_key_is_refused(self) -> None:
        """A key missing from authorized_keys fails with AuthenticationFailed naming it."""
        tmp = Path(self.mktemp())
        tmp.mkdir()
        rig = MemoryRig(tmp, [forward("8080:127.0.0.1:80")])
        Path(rig.server_config.authorized_keys).write_bytes(public_line(new_key()) + b"\n")
        error = self.failureResultOf(rig.connect(), AuthenticationFailed).value
        self.assertEqual(error.user, "alice")
        self.assertEqual(len(error.tried), 1)
        self.assertIn("publickey", error.server_methods)
        self.assertEqual(rig.binder.bound, [])

    def test_rsa_key_logs_in_with_sha2_signature(self) -> None:
        """An RSA user key authenticates (rsa-sha2-512, not SHA-1 ssh-rsa)."""
        from twisted_rfwd.client.identity import Identity

        tmp = Path(self.mktemp())
        tmp.mkdir()
        rig = MemoryRig(tmp, [forward("8080:127.0.0.1:80")])
        rsa = new_key("rsa")
        Path(rig.server_config.authorized_keys).write_bytes(public_line(rsa) + b"\n")
        rig.client_config.identities = [Identity(rsa, "rsa key")]
        tunnel = self.successResultOf(rig.connect())
        self.assertEqual(tunnel.forwards[0].status, ForwardStatus.LISTENING)

    def test_unknown_host_key_is_fatal_under_strict_checking(self) -> None:
        """StrictHostKeyChecking=yes and an unknown host key: refused, with the fingerprint."""
        from twisted_rfwd.client.config import HostKeyPolicy
        from twisted_rfwd.ssh.fingerprint import fingerprint

        tmp = Path(self.mktemp())
        tmp.mkdir()
        rig = MemoryRig(tmp, [forward("8080:127.0.0.1:80")])
        rig.client_config.strict_host_key_checking = HostKeyPolicy.YES
        rig.tunnel = Tunnel(rig.reactor, rig.client_config)
        error = self.failureResultOf(rig.connect(), UnknownHostKey).value
        self.assertEqual(error.fingerprint, fingerprint(rig.server_config.host_keys[0]))
        self.assertIn("[server.test]:2222", str(error))
        self.assertEqual(rig.binder.bound, [])


class RekeyTests(TestCase):
    def forwarding(self, **server_options: object) -> tuple[MemoryRig, FakeStream, FakeStream]:
        """A connected rig with one forward, one application connection and its destination."""
        tmp = Path(self.mktemp())
        tmp.mkdir()
        rig = MemoryRig(tmp, [forward("8080:127.0.0.1:80")], **server_options)
        self.successResultOf(rig.connect())
        return rig, rig.app_connects(8080), rig.destination_accepts()

    def test_rekey_in_the_middle_of_a_transfer(self) -> None:
        """Either side may re-exchange keys while data flows; every byte still arrives."""
        rig, app, destination = self.forwarding()
        assert rig.server is not None and rig.client is not None
        first_keys = rig.server.currentEncryptions
        chunk = bytes(range(256)) * 64
        received = bytearray()
        for round_number in range(6):
            app.receive(chunk)
            if round_number == 2:
                rig.client.sendKexInit()
            if round_number == 4:
                rig.server.sendKexInit()
            destination.receive(chunk)
            rig.flush()
            received += destination.drain()
            self.assertEqual(app.drain(), chunk)
        self.assertEqual(bytes(received), chunk * 6)
        self.assertIsNot(rig.server.currentEncryptions, first_keys)
        self.assertTrue(rig.server.strict_kex)

    def test_packets_split_across_reads_anywhere(self) -> None:
        """
        However TCP cuts the byte stream, in the length field, the payload or the MAC, every
        packet is read whole and in order, for every cipher.
        """
        ciphers = [
            b"chacha20-poly1305@openssh.com",
            b"aes128-gcm@openssh.com",
            b"aes128-ctr",
        ]
        # Mostly small, odd-sized reads; now and then a large one that ends mid-packet.
        cuts = [1, 2, 3, 5, 17, 4099, 1, 40000, 7, 65537]
        payload = bytes(range(251)) * 700
        for cipher in ciphers:
            rig, app, destination = self.forwarding(ciphers=[cipher])
            assert rig.client is not None and rig.pump is not None
            self.assertEqual(rig.client.currentEncryptions.inCipType, cipher)
            app.receive(payload)
            stream = rig.pump.serverIO.getOutBuffer()
            offset = 0
            for turn in range(len(stream)):
                if offset >= len(stream):
                    break
                size = cuts[turn % len(cuts)]
                rig.client.dataReceived(stream[offset : offset + size])
                offset += size
            rig.flush()
            self.assertEqual(destination.drain(), payload, cipher)

    def test_reads_held_while_new_keys_wait_for_the_host_key_check(self) -> None:
        """
        When the peer's NEWKEYS and data after it arrive before our host-key check is done (as
        from OpenSSH, which sends on after its NEWKEYS), what follows waits untouched, across
        reads cut anywhere, and is read with the new keys once they are in place.
        """
        rig, _, destination = self.forwarding()
        server, client = rig.server, rig.client
        assert server is not None and client is not None and rig.pump is not None
        check: Deferred[bool] = Deferred()
        client.verifyHostKey = lambda host_key, fingerprint: check  # type: ignore[method-assign,assignment]
        client.sendKexInit()
        rig.flush()
        self.assertTrue(client._awaiting_keys)
        # Channel data sealed with the server's new keys, as OpenSSH would send it now.
        (channel,) = server.service.channels.values()
        payloads = [b"first " * 3000, b"second " * 3000, b"third"]
        for payload in payloads:
            seq = server.outgoingPacketSequence
            body = bytes((wire.MSG_CHANNEL_DATA,)) + wire.pack_channel_data(
                channel.remote_id, payload
            )
            server.transport.writeSequence(server._sealer.seal(seq, body))
            server.outgoingPacketSequence = seq + 1
        held = rig.pump.serverIO.getOutBuffer()
        for cut in (1000, 1, 20000, len(held)):
            client.dataReceived(held[:cut])
            held = held[cut:]
        self.assertEqual(destination.drain(), b"")
        check.callback(True)
        rig.flush()
        self.assertEqual(destination.drain(), b"".join(payloads))
        self.assertFalse(client.transport.disconnecting)

    def test_acknowledges_promptly_only_while_exchanging_keys(self) -> None:
        """
        During a re-key the SSH socket is put in quick-ack mode on every read, so a peer with
        Nagle on is not held back by delayed ACKs; outside one, ACKs are left to the kernel.
        """
        if not hasattr(socket, "TCP_QUICKACK"):
            raise SkipTest("TCP_QUICKACK is Linux only")
        rig, app, destination = self.forwarding()
        assert rig.client is not None
        options: list[tuple[int, int, int]] = []

        class Handle:
            def setsockopt(self, level: int, option: int, value: int) -> None:
                options.append((level, option, value))

        rig.client.transport.getHandle = Handle
        app.receive(b"before")
        rig.flush()
        self.assertEqual(options, [])
        rig.client.sendKexInit()
        app.receive(b"during")
        rig.flush()
        self.assertGreaterEqual(len(options), 2)
        self.assertEqual(set(options), {(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)})
        del options[:]
        app.receive(b"after")
        rig.flush()
        self.assertEqual(options, [])
        self.assertEqual(destination.drain(), b"beforeduringafter")

    def test_service_request_after_login_is_refused(self) -> None:
        """A second service request cannot tear down the forwards: it is a protocol error."""
        tmp = Path(self.mktemp())
        tmp.mkdir()
        rig = MemoryRig(tmp, [forward("8080:127.0.0.1:80")])
        tunnel = self.successResultOf(rig.connect())
        assert rig.client is not None
        rig.client.sendPacket(5, b"\x00\x00\x00\x0cssh-userauth")  # SSH_MSG_SERVICE_REQUEST
        rig.flush()
        reason = self.successResultOf(tunnel.when_closed())
        self.assertIn("service request after authentication", str(reason))


class DrainTests(TestCase):
    def rig(self) -> MemoryRig:
        tmp = Path(self.mktemp())
        tmp.mkdir()
        return MemoryRig(tmp, [forward("8080:127.0.0.1:80")])

    def test_server_drain_waits_for_forwarded_sockets_to_flush(self) -> None:
        """A stopping server closes its listeners at once, but says goodbye only after every
        forwarded connection has finished, its last bytes flushed."""
        rig = self.rig()
        tunnel = self.successResultOf(rig.connect())
        app = rig.app_connects(8080)
        destination = rig.destination_accepts()
        drained = rig.factory.drain(60)
        rig.flush()
        self.assertEqual(rig.binder.listening(8080), [])
        self.assertNoResult(drained)
        destination.receive(b"last words")
        destination.receive_eof()
        app.receive_eof()
        rig.flush()
        # The application has not read the reply yet: the socket is still flushing.
        self.assertNoResult(drained)
        self.assertEqual(app.drain(), b"last words")
        rig.flush()
        self.successResultOf(drained)
        rig.flush()
        reason = self.successResultOf(tunnel.when_closed())
        self.assertIn("the server is shutting down", str(reason))

    def test_client_drain_refuses_new_connections_and_cancels_forwards(self) -> None:
        """A stopping client cancels its forwards, refuses new channels, and disconnects once
        the open connection is done."""
        rig = self.rig()
        tunnel = self.successResultOf(rig.connect())
        app = rig.app_connects(8080)
        destination = rig.destination_accepts()
        closed = tunnel.drain(60)
        rig.flush()
        self.assertEqual(rig.binder.listening(8080), [])
        self.assertNoResult(closed)
        app.receive(b"still flowing")
        app.receive_eof()
        destination.receive_eof()
        rig.flush()
        self.assertEqual(destination.drain(), b"still flowing")
        rig.flush()
        self.successResultOf(closed)


class KeyTypeLoginTests(TestCase):
    def test_ecdsa_user_keys_log_in(self) -> None:
        """ECDSA user keys (nistp256 here) authenticate too."""
        from twisted_rfwd.client.identity import Identity

        tmp = Path(self.mktemp())
        tmp.mkdir()
        rig = MemoryRig(tmp, [forward("8080:127.0.0.1:80")])
        key = new_key("ecdsa")
        Path(rig.server_config.authorized_keys).write_bytes(public_line(key) + b"\n")
        rig.client_config.identities = [Identity(key, "ecdsa key")]
        tunnel = self.successResultOf(rig.connect())
        self.assertEqual(tunnel.forwards[0].status, ForwardStatus.LISTENING)
        assert tunnel.connection is not None
        self.assertEqual(tunnel.connection.max_packet, 128 * 1024)
