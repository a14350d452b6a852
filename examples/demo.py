"""
A working tunnel on loopback in one process, with throwaway keys: the demo behind `make demo`.

It plays both hosts of `ssh -R 0:localhost:APP user@HostB`:

  HostA: an application server (it upper-cases what it gets) and rfwd's client;
  HostB: rfwd's server, and an application client that connects to the forwarded port.

Everything is built with the embedding API (`twisted_rfwd.connect`, `ForwardingServerFactory`),
the same classes the two twistd plugins use.  Run it with --keep-running to try the tunnel by hand.
"""

from __future__ import annotations

import argparse
import getpass
import hashlib
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from twisted.conch.ssh.keys import Key
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.endpoints import TCP4ClientEndpoint, serverFromString
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import react

from twisted_rfwd import (
    ClientConfig,
    ForwardingServerFactory,
    HostKeyPolicy,
    Identity,
    ServerConfig,
    connect,
    parse_remote_forward,
)


class Upcase(Protocol):
    """HostA's application: answers every byte upper-cased."""

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data.upper())  # type: ignore[union-attr]


class Collect(Protocol):
    """HostB's application client: sends, then gathers the answer."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.received = bytearray()
        self.done: Deferred[bytes] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if len(self.received) >= self.expected and not self.done.called:
            self.done.callback(bytes(self.received))


async def ask(reactor: Any, port: int, message: bytes) -> bytes:
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
    protocol = Collect(len(message))
    await endpoint.connect(Factory.forProtocol(lambda: protocol))
    assert protocol.transport is not None
    protocol.transport.write(message)
    answer: bytes = await protocol.done
    protocol.transport.loseConnection()
    return answer


async def main(reactor: Any, keep_running: bool) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="rfwd-demo-"))
    # However the demo ends: on Ctrl-C (SIGINT) or SIGTERM react() stops the reactor and this
    # coroutine is never resumed, so the folder is removed when the reactor shuts down.
    reactor.addSystemEventTrigger("after", "shutdown", remove_workdir, workdir)
    user = getpass.getuser()
    host_key = Key(Ed25519PrivateKey.generate())
    user_key = Key(Ed25519PrivateKey.generate())
    authorized = workdir / "authorized_keys"
    authorized.write_bytes(user_key.public().toString("OPENSSH") + b"\n")
    print(f"Throwaway keys and files in {workdir}")

    # HostA's application server.
    app: IListeningPort = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(
        Factory.forProtocol(Upcase)
    )
    app_port = app.getHost().port  # type: ignore[attr-defined]

    # HostB: rfwd-server, loopback only.
    server_config = ServerConfig(host_keys=[host_key], authorized_keys=str(authorized))
    ssh: IListeningPort = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(
        ForwardingServerFactory(reactor, server_config)
    )
    ssh_port = ssh.getHost().port  # type: ignore[attr-defined]
    print(f"HostB: rfwd-server listening on 127.0.0.1:{ssh_port}")

    # HostA: rfwd-client, the equivalent of  ssh -N -R 0:localhost:APP user@HostB
    spec = f"0:127.0.0.1:{app_port}"
    tunnel = await connect(
        reactor,
        ClientConfig(
            host="127.0.0.1",
            port=ssh_port,
            user=user,
            forwards=[parse_remote_forward(spec)],
            identities=[Identity(user_key, "throwaway key")],
            strict_host_key_checking=HostKeyPolicy.ACCEPT_NEW,
            known_hosts=[str(workdir / "known_hosts")],
        ),
    )
    port = tunnel.forwards[0].port
    assert port is not None
    print(f"HostA: rfwd-client -R {spec} {user}@127.0.0.1 -p {ssh_port}")
    print(f"       the server allocated port {port}; connections there reach 127.0.0.1:{app_port}")

    for message in (b"hello through the tunnel", b"every byte comes back"):
        answer = await ask(reactor, port, message)
        print(f"HostB: sent {message.decode()!r:30} got {answer.decode()!r}")

    payload = os.urandom(16 * 1024 * 1024)
    started = time.perf_counter()
    answer = await ask(reactor, port, payload)
    seconds = time.perf_counter() - started
    intact = hashlib.sha256(answer).digest() == hashlib.sha256(payload.upper()).digest()
    rate = 2 * len(payload) / seconds / 1e6
    print(f"HostB: 16 MiB each way in {seconds:.2f} s ({rate:.0f} MB/s), intact: {intact}")
    if not intact:
        raise SystemExit("the tunnel corrupted data")

    if keep_running:
        print(f"\nTry it: echo hi | nc 127.0.0.1 {port}    (Ctrl-C to stop)")
        await Deferred()
    await tunnel.close()
    await maybeDeferred(ssh.stopListening)
    await maybeDeferred(app.stopListening)
    shutil.rmtree(workdir)
    print("Tunnel closed, throwaway keys removed. Demo done.")


def remove_workdir(workdir: Path) -> None:
    """The throwaway keys and files go, if the demo has not removed them itself."""
    if workdir.exists():
        shutil.rmtree(workdir, ignore_errors=True)
        print(f"Stopped; removed {workdir}")


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--keep-running", action="store_true", help="leave the tunnel up")
    args = parser.parse_args()
    react(lambda reactor: Deferred.fromCoroutine(main(reactor, args.keep_running)))


if __name__ == "__main__":
    run()
