"""
Back-pressure from the SSH socket onto the channels that are sending.

The channel windows bound what each channel may have in flight, but not what waits in Twisted's
send buffer for the SSH socket: with many channels that is the sum of their windows, twice over
while Twisted joins it for send().  As the socket's streaming producer, the C{ssh-connection}
service (L{twisted_rfwd.ssh.mux.ChannelMux}, which mixes this in) stops the channels that are
sending when that buffer is full, and also during a key re-exchange, when the transport queues
every packet until NEWKEYS.  Channels that are not sending keep reading.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.internet.interfaces import IConsumer, IPushProducer
from zope.interface import implementer

from twisted_rfwd.ssh.interfaces import IKeyExchangeObserver, ISSHTransport

if TYPE_CHECKING:
    from twisted_rfwd.ssh.channel import Channel

__all__ = ["SenderBackPressure"]

_SOCKET_FULL = "the SSH socket is full"
_KEY_EXCHANGE = "key exchange"


@implementer(IPushProducer, IKeyExchangeObserver)
class SenderBackPressure:
    """Holds the sending channels while any reason to hold them remains."""

    transport: ISSHTransport

    def __init__(self) -> None:
        super().__init__()
        # Channels that sent since the SSH socket last drained, and those held while it is full.
        self._senders: set[Channel] = set()
        self._holding: list[Channel] | None = None
        self._hold_reasons: set[str] = set()
        self._watching = False

    def sending(self, channel: Channel) -> None:
        """A channel is about to send data; hold it at once if the SSH socket is full."""
        if not self._watching:
            self._watch_socket()
        if self._holding is not None:
            if channel not in self._holding:
                self._holding.append(channel)
                channel.hold()
            return
        self._senders.add(channel)

    def _watch_socket(self) -> None:
        self._watching = True
        tcp = self.transport.transport
        if IConsumer.providedBy(tcp):
            tcp.registerProducer(self, True)

    # -- IPushProducer, registered on the SSH socket ------------------------------------------

    def pauseProducing(self) -> None:
        self._hold(_SOCKET_FULL)

    def resumeProducing(self) -> None:
        self._release(_SOCKET_FULL)
        tcp = self.transport.transport
        if tcp.disconnecting:
            # Twisted will not finish closing while a producer is registered and was paused.
            tcp.unregisterProducer()

    def stopProducing(self) -> None:
        """The SSH socket is gone; the service's C{serviceStopped} does the cleaning up."""

    # -- IKeyExchangeObserver ---------------------------------------------------------------------

    def key_exchange_started(self) -> None:
        """A key re-exchange holds every outgoing packet in memory: stop the senders."""
        self._hold(_KEY_EXCHANGE)

    def key_exchange_finished(self) -> None:
        self._release(_KEY_EXCHANGE)

    # -- for the service ------------------------------------------------------------------------

    def forget_sender(self, channel: Channel) -> None:
        """The channel is gone: nothing to hold or release."""
        self._senders.discard(channel)

    def reset_back_pressure(self) -> None:
        """The connection ended: no channel is sending or held any more."""
        self._senders.clear()
        self._holding = None
        self._hold_reasons.clear()

    def _hold(self, reason: str) -> None:
        self._hold_reasons.add(reason)
        if self._holding is None:
            self._holding = list(self._senders)
            self._senders.clear()
            for channel in self._holding:
                channel.hold()

    def _release(self, reason: str) -> None:
        self._hold_reasons.discard(reason)
        if self._hold_reasons or self._holding is None:
            return
        holding, self._holding = self._holding, None
        for channel in holding:
            channel.release()
