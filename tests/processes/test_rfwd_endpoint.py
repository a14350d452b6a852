"""
The C{rfwd:} endpoint in a real program: C{twistd web --listen rfwd:...} serves a folder on
HostB through rfwd-server and through OpenSSH's sshd, and the test fetches a page from the
HostB side (the forwarded port on loopback), as any HTTP client there would.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol, serverFromString
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory
from twisted.protocols.basic import LineReceiver
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, readBody

from harness.keys import Keys, make_keys
from tests.support.pairs import start_rfwd_server, start_sshd
from tests.support.processes import ChildProcess, free_port, plugin_env, spawn, twistd_argv
from twisted_rfwd.errors import RfwdError

LISTENING = r"rfwd: endpoint listening on 127\.0\.0\.1 port (\d+) of 127\.0\.0\.1"
PAGE = b"<h1>served through an SSH server</h1>\n"


def reactor() -> Any:
    from twisted.internet import reactor as r

    return r


class EndpointTestCase(TestCase):
    """Keys, a folder to serve, and the endpoint string for an SSH server on loopback."""

    timeout = 60

    def setUp(self) -> None:
        self.keys: Keys = make_keys(Path(self.mktemp()))
        self.site = self.keys.workdir / "site"
        self.site.mkdir()
        (self.site / "index.html").write_bytes(PAGE)

    def description(self, ssh_port: int) -> str:
        keys = self.keys
        return (
            f"rfwd:host=127.0.0.1:port={ssh_port}:user={keys.user}:identity={keys.user_key}"
            f":knownHosts={keys.workdir / 'known_hosts'}:remotePort=0"
            ":strictHostKeyChecking=accept-new:serverAliveInterval=5"
        )

    def web(self, ssh_port: int) -> ChildProcess:
        """twistd web serving the test folder on an rfwd: endpoint (port 0 on HostB)."""
        argv = twistd_argv("web", "--listen", self.description(ssh_port), "--path", str(self.site))
        return spawn(self, reactor(), "twistd-web", argv, env={"SSH_AUTH_SOCK": "", **plugin_env()})

    async def fetch(self, port: int) -> tuple[int, bytes]:
        """GET the page from HostB's side of the forward."""
        url = f"http://127.0.0.1:{port}/index.html".encode()
        response = await Agent(reactor()).request(b"GET", url)
        body = await readBody(response)
        return response.code, body


class TwistdWebTests(EndpointTestCase):
    async def test_twistd_web_through_rfwd_server(self) -> None:
        """twistd web --listen rfwd:... gets its port 0 allocated by rfwd-server, serves a page
        to a client on HostB, and after the server restarts it reconnects, asks for the
        forward again and serves again."""
        server, ssh_port = await start_rfwd_server(self, reactor(), self.keys)
        web = self.web(ssh_port)
        match = await web.wait_for(LISTENING, timeout=30)
        port = int(match.group(1))
        self.assertNotEqual(port, 0)
        self.assertEqual(await self.fetch(port), (200, PAGE))

        await server.stop()
        mark = web.mark()
        await start_rfwd_server(self, reactor(), self.keys, port=ssh_port)
        match = await web.wait_for(LISTENING, after=mark, timeout=40)
        self.assertEqual(await self.fetch(int(match.group(1))), (200, PAGE))

    async def test_twistd_web_through_sshd(self) -> None:
        """The same program behind OpenSSH's sshd: the page is served on sshd's forward."""
        _, ssh_port = await start_sshd(self, reactor(), self.keys)
        web = self.web(ssh_port)
        match = await web.wait_for(LISTENING, timeout=30)
        self.assertEqual(await self.fetch(int(match.group(1))), (200, PAGE))


class Echo(LineReceiver):
    def lineReceived(self, line: bytes) -> None:
        self.sendLine(b"echo " + line)


class Asker(LineReceiver):
    def __init__(self) -> None:
        self.answer: Deferred[bytes] = Deferred()

    def lineReceived(self, line: bytes) -> None:
        self.answer.callback(line)
        assert self.transport is not None
        self.transport.loseConnection()


class InProcessEndpointTests(EndpointTestCase):
    """The endpoint in this very process, through serverFromString."""

    async def ask(self, port: int) -> bytes:
        client = Asker()
        await connectProtocol(TCP4ClientEndpoint(reactor(), "127.0.0.1", port), client)
        client.sendLine(b"hello")
        return await client.answer.addTimeout(10, reactor())

    async def test_listen_serve_stop(self) -> None:
        """listen() fires with a port whose getHost() is the allocated port on HostB; a client
        there talks to the factory's protocol; stopListening cancels the forward, after which
        nothing listens there."""
        _, ssh_port = await start_rfwd_server(self, reactor(), self.keys)
        endpoint = serverFromString(reactor(), self.description(ssh_port))
        port: IListeningPort = await endpoint.listen(Factory.forProtocol(Echo))
        self.addCleanup(port.stopListening)
        host = port.getHost()
        self.assertEqual(host.host, "127.0.0.1")  # type: ignore[attr-defined]
        self.assertNotEqual(host.port, 0)  # type: ignore[attr-defined]
        self.assertEqual(await self.ask(host.port), b"echo hello")  # type: ignore[attr-defined]
        await maybeDeferred(port.stopListening)
        with self.assertRaises(ConnectionRefusedError):
            await self.ask(host.port)  # type: ignore[attr-defined]

    async def test_first_failure_fails_listen(self) -> None:
        """With no SSH server to reach, listen() fails with ssh's one-line reason and the
        endpoint does not keep retrying."""
        endpoint = serverFromString(reactor(), self.description(free_port()))
        with self.assertRaises(RfwdError) as caught:
            await endpoint.listen(Factory.forProtocol(Echo))
        self.assertIn("Connection refused", str(caught.exception))
        self.assertNotIn("\n", str(caught.exception))
