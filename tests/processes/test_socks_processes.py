"""
Remote dynamic forwarding with real processes: C{rfwd-client -R 127.0.0.1:0} against rfwd-server
and against OpenSSH's sshd, with C{curl} as the SOCKS client on the server's side, fetching a
page from an HTTP server the test runs on loopback.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from twisted.internet.interfaces import IListeningPort
from twisted.trial.unittest import SkipTest, TestCase
from twisted.web.resource import Resource
from twisted.web.server import Site
from twisted.web.static import Data

from tests.support.pairs import Keys, make_keys, start_rfwd_client, start_rfwd_server, start_sshd
from tests.support.processes import ChildProcess, spawn

PAGE = b"through the dynamic forward\n"

# curl's CURLE_PROXY (7.73 and later): the SOCKS proxy refused or failed the handshake.
CURLE_PROXY = 97


class SocksScenarios:
    """The scenarios; subclasses say which server the client logs in to."""

    timeout = 120
    keys: Keys
    web_port: int

    @property
    def reactor(self) -> Any:
        from twisted.internet import reactor

        return reactor

    async def start_server(self) -> int:
        raise NotImplementedError

    async def start(self, *options: str) -> int:
        """The web server, an SSH server and rfwd-client with a dynamic forward; its port."""
        test: TestCase = self  # type: ignore[assignment]
        curl = shutil.which("curl")
        if curl is None:
            raise SkipTest("curl is not installed")
        self.curl = curl
        self.keys = make_keys(Path(test.mktemp()))
        root = Resource()
        root.putChild(b"", Data(PAGE, "text/plain"))
        site = Site(root)
        site.noisy = False
        port: IListeningPort = self.reactor.listenTCP(0, site, interface="127.0.0.1")
        test.addCleanup(port.stopListening)
        self.web_port = port.getHost().port  # type: ignore[attr-defined]
        ssh_port = await self.start_server()
        client = start_rfwd_client(
            test, self.reactor, self.keys, ssh_port, ["127.0.0.1:0"], *options
        )
        match = await client.wait_for(r"Allocated port (\d+) for remote forward to SOCKS")
        return int(match.group(1))

    async def curl_run(self, *arguments: str) -> ChildProcess:
        """Run curl to its end (bounded by --max-time); its output and exit status."""
        test: TestCase = self  # type: ignore[assignment]
        argv = [self.curl, "-sS", "--max-time", "30", "--noproxy", "", *arguments]
        child = spawn(test, self.reactor, "curl", argv, env={"ALL_PROXY": "", "all_proxy": ""})
        await child.wait_ended(60)
        return child

    async def test_socks5_hostname_and_socks4a(self) -> None:
        """curl fetches the page through the forward with SOCKS5 (the name resolved by
        rfwd-client), SOCKS4A and SOCKS4."""
        test: TestCase = self  # type: ignore[assignment]
        socks = await self.start()
        for proxy in ("--socks5-hostname", "--socks4a"):
            fetched = await self.curl_run(
                proxy, f"127.0.0.1:{socks}", f"http://localhost:{self.web_port}/"
            )
            test.assertEqual((fetched.exit_code, fetched.output()), (0, PAGE.decode().strip()))
        fetched = await self.curl_run(
            "--socks4", f"127.0.0.1:{socks}", f"http://127.0.0.1:{self.web_port}/"
        )
        test.assertEqual((fetched.exit_code, fetched.output()), (0, PAGE.decode().strip()))

    async def test_permit_remote_open_refuses(self) -> None:
        """PermitRemoteOpen lets through only what it names: curl sees the SOCKS refusal
        (CURLE_PROXY) for anything else, and rfwd-client says why."""
        test: TestCase = self  # type: ignore[assignment]
        socks = await self.start("-o", "PermitRemoteOpen=localhost:*")
        allowed = await self.curl_run(
            "--socks5-hostname", f"127.0.0.1:{socks}", f"http://localhost:{self.web_port}/"
        )
        test.assertEqual((allowed.exit_code, allowed.output()), (0, PAGE.decode().strip()))
        for proxy in ("--socks5-hostname", "--socks4a"):
            refused = await self.curl_run(
                proxy, f"127.0.0.1:{socks}", f"http://127.0.0.1:{self.web_port}/"
            )
            test.assertEqual(refused.exit_code, CURLE_PROXY, refused.output())


class RfwdServerSocksTests(SocksScenarios, TestCase):
    """rfwd-client logged in to rfwd-server."""

    async def start_server(self) -> int:
        _, port = await start_rfwd_server(self, self.reactor, self.keys)
        return port


class OpenSSHServerSocksTests(SocksScenarios, TestCase):
    """rfwd-client logged in to OpenSSH's sshd."""

    async def start_server(self) -> int:
        _, port = await start_sshd(self, self.reactor, self.keys)
        return port
