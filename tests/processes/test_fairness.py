"""
Fairness between the users of one rfwd-server, with real processes: a client that confirms its
forwarded-tcpip channels with a 1-byte maximum packet (which made the server seal 512 Ki packets
per read, stalling everyone) gets those channels closed, with a log line saying why, while a
well-behaved user's tunnel through the same server carries a 1 MiB echo intact.

The timing itself (echo time with and without such a load) is in benchmarks/fairness.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from tests.support.apps import exchange, pattern, start_app_server, wait_until_echo
from tests.support.pairs import make_keys, start_rfwd_client, start_rfwd_server
from tests.support.processes import free_port
from twisted_rfwd import ClientConfig, HostKeyPolicy, RemoteForward, connect, load_identity
from twisted_rfwd.ssh.mux import MIN_PEER_MAX_PACKET


def reactor() -> Any:
    from twisted.internet import reactor as r

    return r


class TinyMaxPacketTests(TestCase):
    timeout = 60

    async def test_tiny_max_packet_channel_closed_while_others_flow(self) -> None:
        """
        The hostile client's channel is closed unused (one server log line with the reason,
        no byte echoed back to the connection on its forward), while a 1 MiB echo through
        the other user's tunnel comes back intact.
        """
        keys = make_keys(Path(self.mktemp()))
        _, app = await start_app_server(reactor())
        self.addCleanup(app.stopListening)
        app_port = app.getHost().port  # type: ignore[attr-defined]
        server, ssh_port = await start_rfwd_server(self, reactor(), keys)
        good_port, hostile_port = free_port(), free_port()
        start_rfwd_client(self, reactor(), keys, ssh_port, [f"{good_port}:127.0.0.1:{app_port}"])
        await wait_until_echo(reactor(), good_port)

        config = ClientConfig(
            host="127.0.0.1",
            user=keys.user,
            port=ssh_port,
            forwards=[RemoteForward(hostile_port, "127.0.0.1", app_port, "127.0.0.1")],
            identities=[load_identity(str(keys.user_key))],
            strict_host_key_checking=HostKeyPolicy.NO,
            known_hosts=[str(keys.workdir / "known_hosts_hostile")],
            reconnect=False,
        )
        tunnel = await connect(reactor(), config)
        self.addCleanup(tunnel.abort)
        # What a hostile client announces when it confirms a channel (rfwd-client: 32 KiB+).
        assert tunnel.connection is not None
        tunnel.connection._max_packet = 1

        mark = server.mark()
        good_payload = b"E" + pattern(1024 * 1024, seed=1)
        hostile_payload = b"E" + pattern(512 * 1024, seed=2)
        hostile, good = await defer.gatherResults(
            [
                defer.Deferred.fromCoroutine(exchange(reactor(), hostile_port, hostile_payload)),
                defer.Deferred.fromCoroutine(exchange(reactor(), good_port, good_payload)),
            ]
        )
        self.assertEqual(hostile, b"")
        self.assertEqual(len(good), len(good_payload))
        self.assertTrue(good == good_payload, "the well-behaved echo came back altered")
        line = await server.wait_for(
            rf"Forwarded connection from \S+ to port {hostile_port} of \S+ not opened: the "
            rf"peer's maximum packet size \(1\) is below the {MIN_PEER_MAX_PACKET} bytes required",
            after=mark,
        )
        self.assertIsNotNone(line)
        self.assertNotIn("Traceback", server.output(1000))
