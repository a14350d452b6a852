"""
The client's forward table: each remote forward it asked for and what the server answered.

Plain data with no reference to a connection or a tunnel, so the tunnel, the reconnecting service
and the status file all read the same table, and a channel is matched to its forward here.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import overload

from twisted_rfwd.protocol.spec import RemoteForward

__all__ = ["ForwardState", "ForwardStatus", "ForwardTable"]


class ForwardStatus(Enum):
    """Where one forward stands; the values are what the status file shows."""

    REQUESTED = "requested"
    LISTENING = "listening"
    REFUSED = "refused"
    CANCELLED = "cancelled"


@dataclass
class ForwardState:
    """One forward as the server answered it: C{port} is where the server listens."""

    spec: RemoteForward
    status: ForwardStatus = ForwardStatus.REQUESTED
    port: int | None = None
    error: str | None = None

    def requested(self) -> None:
        """Asked for (again): the answer is pending."""
        self.status = ForwardStatus.REQUESTED

    def listening(self, port: int) -> None:
        """The server listens on C{port} (the allocated one for port 0)."""
        self.status, self.port, self.error = ForwardStatus.LISTENING, port, None

    def refused(self, error: str) -> None:
        """The server said no; C{error} is the sentence the user and the status file see."""
        self.status, self.error = ForwardStatus.REFUSED, error

    def cancelled(self) -> None:
        """We asked the server to stop listening (the forward then leaves its table)."""
        self.status = ForwardStatus.CANCELLED


class ForwardTable(Sequence[ForwardState]):
    """The forwards of one connection, in the order they were asked for."""

    def __init__(self, specs: Iterable[RemoteForward] = ()) -> None:
        self._states = [ForwardState(spec) for spec in specs]

    @overload
    def __getitem__(self, index: int) -> ForwardState: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[ForwardState]: ...

    def __getitem__(self, index: int | slice) -> ForwardState | Sequence[ForwardState]:
        return self._states[index]

    def __len__(self) -> int:
        return len(self._states)

    def __iter__(self) -> Iterator[ForwardState]:
        return iter(self._states)

    def __repr__(self) -> str:
        return f"ForwardTable({self._states!r})"

    def add(self, spec: RemoteForward) -> ForwardState:
        """One more forward, not yet answered."""
        state = ForwardState(spec)
        self._states.append(state)
        return state

    def remove(self, state: ForwardState) -> None:
        """Forget C{state}: a cancelled forward is no longer one of the connection's."""
        self._states = [s for s in self._states if s is not state]

    def with_status(self, status: ForwardStatus) -> list[ForwardState]:
        """The forwards in C{status}."""
        return [state for state in self._states if state.status is status]

    def listening(self, spec: RemoteForward) -> ForwardState | None:
        """The listening forward for C{spec}, if there is one."""
        for state in self._states:
            if state.spec == spec and state.status is ForwardStatus.LISTENING:
                return state
        return None

    def forward_for(self, address: str, port: int) -> RemoteForward | None:
        """
        The listening forward a C{forwarded-tcpip} channel belongs to, or C{None}.

        As ssh does (C{channel_connect_by_listen_address}), both must match exactly: the
        address string we sent in C{tcpip-forward} (C{localhost} for no bind address, C{""}
        for C{*}), which sshd and rfwd-server send back unchanged, and the port the server
        listens on (the allocated one for port 0).  A matching port alone is not enough: a
        server must not reach a destination through a forward it was not asked for.
        """
        for state in self._states:
            if (
                state.status is ForwardStatus.LISTENING
                and state.spec.listen_path is None
                and state.port == port
                and state.spec.request_address == address
            ):
                return state.spec
        return None

    def forward_for_path(self, path: str) -> RemoteForward | None:
        """
        The listening forward a C{forwarded-streamlocal@openssh.com} channel belongs to, or
        C{None}: the socket path must be exactly one we asked the server to listen on.
        """
        for state in self._states:
            if state.status is ForwardStatus.LISTENING and state.spec.listen_path == path:
                return state.spec
        return None
