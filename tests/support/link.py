"""
A loopback TCP relay between an SSH client and its server that the test controls: it can cut
every connection (both ends see a reset), or swallow all traffic silently while keeping the TCP
connections up (a blackholed network path, which only keepalives can detect).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure


class _Side(Protocol):
    """One end of a relayed connection; C{other} is the opposite end."""

    other: _Side | None = None
    link: Link

    def __init__(self, link: Link) -> None:
        self.link = link
        self.blackholed = False
        self.pending: list[bytes] = []

    def dataReceived(self, data: bytes) -> None:
        if self.blackholed:
            return
        if self.other is None:
            self.pending.append(data)
            return
        self.other.transport.write(data)  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.link.sides.discard(self)
        if self.other is not None and not self.blackholed:
            self.other.transport.loseConnection()  # type: ignore[union-attr]


class _Inbound(_Side):
    def connectionMade(self) -> None:
        self.link.sides.add(self)
        self.transport.pauseProducing()  # type: ignore[union-attr]
        endpoint = TCP4ClientEndpoint(self.link.reactor, "127.0.0.1", self.link.target)
        factory = Factory.forProtocol(lambda: _Side(self.link))
        factory.noisy = False
        endpoint.connect(factory).addCallbacks(self._connected, self._failed)

    def _connected(self, outbound: _Side) -> None:
        self.link.sides.add(outbound)
        self.other, outbound.other = outbound, self
        for data in self.pending:
            outbound.transport.write(data)  # type: ignore[union-attr]
        self.pending.clear()
        self.transport.resumeProducing()  # type: ignore[union-attr]

    def _failed(self, failure: Failure) -> None:
        self.transport.loseConnection()  # type: ignore[union-attr]


class Link:
    """Listen on C{port}; relay every connection to 127.0.0.1:C{target}."""

    def __init__(self, reactor: Any, target: int) -> None:
        self.reactor = reactor
        self.target = target
        self.sides: set[_Side] = set()
        self.port = 0
        self.accepted = 0
        self._listening: IListeningPort | None = None

    async def start(self) -> Link:
        link = self

        class _Factory(Factory):
            noisy = False

            def buildProtocol(self, addr: object) -> _Inbound:
                link.accepted += 1
                return _Inbound(link)

        self._listening = await TCP4ServerEndpoint(self.reactor, 0, interface="127.0.0.1").listen(
            _Factory()
        )
        self.port = self._listening.getHost().port  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        self.cut()
        if self._listening is not None:
            await self._listening.stopListening()  # type: ignore[misc]

    def cut(self) -> None:
        """Reset every connection through the link, as a broken network would."""
        for side in list(self.sides):
            side.blackholed = False
            side.transport.abortConnection()  # type: ignore[union-attr]

    def blackhole(self) -> None:
        """Swallow everything on the current connections; keep them open, send nothing."""
        for side in self.sides:
            side.blackholed = True
