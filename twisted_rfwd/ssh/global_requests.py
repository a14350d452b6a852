"""
Global requests (RFC 4254 section 4), ours and the peer's, for the C{ssh-connection} service.

Mixed into L{twisted_rfwd.ssh.mux.ChannelMux}.  Rules kept here, as OpenSSH peers expect them:
  - every request of the peer's that wants a reply gets one, in the order received, even when a
    later one is decided first;
  - replies to our own requests are matched to them in the order we sent them; a reply with
    none pending is a protocol error.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from twisted_rfwd.errors import ConnectionClosed, GlobalRequestFailed, RemoteProtocolError
from twisted_rfwd.protocol import wire
from twisted_rfwd.ssh.interfaces import ISSHTransport

__all__ = ["GlobalRequests"]


class _PendingReply:
    """The answer to one of the peer's requests, kept until every earlier one is answered."""

    __slots__ = ("done", "result")

    def __init__(self) -> None:
        self.done = False
        self.result: bytes | None = None


class GlobalRequests:
    """Sends our global requests and answers the peer's, in order."""

    _log: Logger
    transport: ISSHTransport
    stopped: bool
    protocol_error: Callable[[str], None]

    def __init__(self) -> None:
        super().__init__()
        self._our_requests: deque[tuple[bytes, Deferred[bytes]]] = deque()
        self._replies: deque[_PendingReply] = deque()

    def global_request_handlers(self) -> dict[int, Callable[[bytes], None]]:
        """The message handlers this part contributes to the service's dispatch table."""
        return {
            wire.MSG_GLOBAL_REQUEST: self._on_global_request,
            wire.MSG_REQUEST_SUCCESS: self._on_request_success,
            wire.MSG_REQUEST_FAILURE: self._on_request_failure,
        }

    # -- policy hook for subclasses -------------------------------------------------------------

    def global_request_received(self, name: bytes, data: bytes) -> bytes | Deferred[Any] | None:
        """
        Decide a global request: return the success payload (C{b""} for none), or C{None} for
        failure, or a Deferred of either.  By default everything fails, as OpenSSH answers
        requests it does not know.
        """
        return None

    # -- ours -------------------------------------------------------------------------------------

    def send_global_request(self, name: bytes, data: bytes) -> Deferred[bytes]:
        """Send a global request that wants a reply; fires with the success payload."""
        d: Deferred[bytes] = Deferred()
        if self.stopped:
            d.errback(ConnectionClosed("the SSH connection is closed"))
            return d
        self._our_requests.append((name, d))
        self.transport.sendPacket(
            wire.MSG_GLOBAL_REQUEST, wire.GlobalRequest(name, True, data).pack()
        )
        return d

    def _on_request_success(self, payload: bytes) -> None:
        if not self._our_requests:
            raise RemoteProtocolError("REQUEST_SUCCESS without a pending global request")
        _, d = self._our_requests.popleft()
        d.callback(payload)

    def _on_request_failure(self, payload: bytes) -> None:
        if not self._our_requests:
            raise RemoteProtocolError("REQUEST_FAILURE without a pending global request")
        name, d = self._our_requests.popleft()
        d.errback(GlobalRequestFailed(name))

    def fail_global_requests(self, reason: Failure) -> None:
        """The connection ended: our requests will get no reply."""
        requests, self._our_requests = self._our_requests, deque()
        for _, d in requests:
            d.errback(reason)

    # -- the peer's -------------------------------------------------------------------------------

    def _on_global_request(self, payload: bytes) -> None:
        request = wire.GlobalRequest.parse(payload)
        d = maybeDeferred(self.global_request_received, request.name, request.data)
        if not request.want_reply:
            d.addErrback(self._request_handler_failed, request.name)
            return
        slot = _PendingReply()
        self._replies.append(slot)
        d.addErrback(self._request_handler_failed, request.name)
        d.addCallback(self._reply_ready, slot)

    def _request_handler_failed(self, failure: Failure, name: bytes) -> Any:
        if failure.check(RemoteProtocolError):
            self.protocol_error(failure.getErrorMessage())
        else:
            self._log.failure("Error handling global request {name!r}", failure=failure, name=name)
        return None

    def _reply_ready(self, result: Any, slot: _PendingReply) -> None:
        slot.done = True
        slot.result = result
        while self._replies and self._replies[0].done:
            reply = self._replies.popleft()
            if self.stopped:
                continue
            if reply.result is None:
                self.transport.sendPacket(wire.MSG_REQUEST_FAILURE, b"")
            else:
                self.transport.sendPacket(wire.MSG_REQUEST_SUCCESS, reply.result)
