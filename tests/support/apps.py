"""
Application server and clients for loopback tests: the traffic a tunnel carries, on the reactor.

The server speaks modes E (echo), U (upload), D (download) and H (hold) of the application
protocol in L{harness.application}, which also makes the data and the digest lines.
"""

from __future__ import annotations

import errno
import hashlib
import socket
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.error import ConnectError, ConnectionRefusedError
from twisted.internet.interfaces import (
    IHalfCloseableProtocol,
    IListeningPort,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from zope.interface import implementer

from harness.application import (
    DOWNLOAD_SIZE,
    MODE_DOWNLOAD,
    MODE_ECHO,
    MODE_HOLD,
    MODE_UPLOAD,
    digest_line,
    digest_reply,
    pattern,
)

__all__ = [
    "AppServerFactory",
    "AppServerProtocol",
    "Pusher",
    "digest_line",
    "echo_ok",
    "exchange",
    "finish_and_read",
    "pattern",
    "start_app_server",
    "wait_until_echo",
]


@implementer(IHalfCloseableProtocol)
class AppServerProtocol(Protocol):
    factory: AppServerFactory

    def __init__(self) -> None:
        self.mode: bytes | None = None
        self.count = 0
        self.hash = hashlib.sha256()
        self.header = b""

    def connectionMade(self) -> None:
        self.factory.connections.append(self)

    def dataReceived(self, data: bytes) -> None:
        if self.mode is None:
            self.mode, data = data[:1], data[1:]
            if self.mode == MODE_ECHO:
                self.transport.write(MODE_ECHO)  # type: ignore[union-attr]
            elif self.mode == MODE_HOLD:
                self.transport.pauseProducing()  # type: ignore[union-attr]
                self.factory.held.append(self)
                if not self.factory.held_waiter.called:
                    self.factory.held_waiter.callback(self)
        if not data:
            return
        if self.mode == MODE_ECHO:
            self.transport.write(data)  # type: ignore[union-attr]
        elif self.mode in (MODE_UPLOAD, MODE_HOLD):
            self.count += len(data)
            self.hash.update(data)
        elif self.mode == MODE_DOWNLOAD:
            self.header += data
            if len(self.header) >= DOWNLOAD_SIZE.size:
                (size,) = DOWNLOAD_SIZE.unpack(self.header[: DOWNLOAD_SIZE.size])
                self.header = b"\xff" * 100  # ignore anything more
                self.transport.write(pattern(size))  # type: ignore[union-attr]
                self.transport.loseConnection()  # type: ignore[union-attr]

    def resume(self) -> None:
        self.transport.resumeProducing()  # type: ignore[union-attr]

    def readConnectionLost(self) -> None:
        if self.mode in (MODE_UPLOAD, MODE_HOLD):
            line = digest_reply(self.count, self.hash.hexdigest())
            self.transport.write(line)  # type: ignore[union-attr]
            self.transport.loseConnection()  # type: ignore[union-attr]
        elif self.mode == MODE_ECHO:
            self.transport.loseWriteConnection()  # type: ignore[union-attr]
        elif self.mode != MODE_DOWNLOAD:
            self.transport.loseConnection()  # type: ignore[union-attr]

    def writeConnectionLost(self) -> None:
        self.transport.loseConnection()  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self in self.factory.connections:
            self.factory.connections.remove(self)


class AppServerFactory(Factory[AppServerProtocol]):
    noisy = False

    def buildProtocol(self, addr: object) -> AppServerProtocol:
        protocol = AppServerProtocol()
        protocol.factory = self
        return protocol

    def __init__(self) -> None:
        self.connections: list[AppServerProtocol] = []
        self.held: list[AppServerProtocol] = []
        self.held_waiter: Deferred[AppServerProtocol] = Deferred()


async def start_app_server(reactor: Any) -> tuple[AppServerFactory, IListeningPort]:
    factory = AppServerFactory()
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
    return factory, port


@implementer(IHalfCloseableProtocol)
class _Collect(Protocol):
    def __init__(self) -> None:
        self.received = bytearray()
        self.done: Deferred[bytes] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def readConnectionLost(self) -> None:
        self.transport.loseConnection()  # type: ignore[union-attr]

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if not self.done.called:  # it may have timed out
            self.done.callback(bytes(self.received))


async def exchange(reactor: Any, port: int, request: bytes, timeout: float = 60.0) -> bytes:
    """Connect to C{port} on 127.0.0.1 and L{exchange_over} that connection."""
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=10)
    return await exchange_over(reactor, endpoint, request, timeout)


async def exchange_over(
    reactor: Any, endpoint: IStreamClientEndpoint, request: bytes, timeout: float = 60.0
) -> bytes:
    """Connect, send C{request}, shut down writing, and return everything received until EOF."""
    protocol = await endpoint.connect(Factory.forProtocol(_Collect))
    assert isinstance(protocol, _Collect)
    protocol.transport.write(request)  # type: ignore[union-attr]
    protocol.transport.loseWriteConnection()  # type: ignore[union-attr]
    result: bytes = await protocol.done.addTimeout(timeout, reactor)
    return result


async def refused_or_unanswered(reactor: Any, port: int, request: bytes) -> bool:
    """
    Whether a new connection to C{port} is not served: refused (the listener is gone), reset
    while connecting (the listener closed with the connection still in its accept queue), or
    closed without a byte of answer (the listener is still there, the tunnel turns it away).
    """
    try:
        answer = await exchange(reactor, port, request, timeout=5)
    except ConnectionRefusedError:
        return True
    except ConnectError as error:
        if error.osError == errno.ECONNRESET:
            return True
        raise
    return answer == b""


async def echo_ok(reactor: Any, port: int, payload: bytes = b"ping") -> bool:
    """One echo through C{port}; False if anything goes wrong."""
    try:
        answer = await exchange(reactor, port, MODE_ECHO + payload, timeout=5)
    except Exception:
        return False
    return answer == MODE_ECHO + payload


async def wait_until_echo(reactor: Any, port: int, deadline: float = 30.0) -> None:
    """Poll C{port} with echoes until one works, or fail after C{deadline} seconds."""
    start = reactor.seconds()
    while reactor.seconds() - start < deadline:
        if await echo_ok(reactor, port):
            return
        await deferLater(reactor, 0.1, lambda: None)
    raise AssertionError(f"no working tunnel on port {port} after {deadline}s")


class Pusher:
    """Pattern bytes pushed on a non-blocking socket, with a running digest of what went."""

    def __init__(self, sock: socket.socket, seed: int = 1) -> None:
        self.sock = sock
        self.chunk = pattern(256 * 1024, seed)
        self.sent = 0
        self.hash = hashlib.sha256()

    def digest_line(self) -> bytes:
        return digest_reply(self.sent, self.hash.hexdigest())

    async def push_until_stalled(
        self, reactor: Any, limit: int, quiet: float = 1.5, deadline: float = 60.0
    ) -> bool:
        """
        Send until nothing more is accepted for C{quiet} seconds (True: the far end stopped
        us) or C{limit} bytes went (False: nothing did).
        """
        last_progress = start = reactor.seconds()
        while self.sent < limit and reactor.seconds() - start < deadline:
            progressed = False
            while self.sent < limit:
                offset = self.sent % len(self.chunk)
                piece = self.chunk[offset:] if offset else self.chunk
                try:
                    n = self.sock.send(piece)
                except BlockingIOError:
                    break
                self.hash.update(piece[:n])
                self.sent += n
                progressed = True
            now = reactor.seconds()
            if progressed:
                last_progress = now
            elif now - last_progress >= quiet:
                return True
            await deferLater(reactor, 0.02, lambda: None)
        return False


async def finish_and_read(reactor: Any, sock: socket.socket, timeout: float = 60.0) -> bytes:
    """Shut down writing and read to EOF on a non-blocking socket."""
    sock.shutdown(socket.SHUT_WR)
    received = bytearray()
    start = reactor.seconds()
    while reactor.seconds() - start < timeout:
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            await deferLater(reactor, 0.02, lambda: None)
            continue
        if not data:
            return bytes(received)
        received += data
    raise AssertionError("no EOF within the timeout")
