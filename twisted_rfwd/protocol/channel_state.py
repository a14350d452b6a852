"""
The state of one SSH channel (RFC 4254 section 5), as three small machines and their tables.

The rules, which L{twisted_rfwd.ssh.channel.Channel} follows and the tables below encode:

The channel (L{ChannelState}): the open handshake and the CLOSE handshake.
  - A channel is OPENING until the peer confirms it (or we confirm the peer's), then OPEN; if
    the open is refused, or the connection ends first, it is FAILED without any CLOSE.
  - CLOSE is sent once and received once.  The channel is CLOSED when it went both ways, or
    when the SSH connection ended under an open channel; a received CLOSE is answered at once.
  - The channel is released (its number forgotten by the multiplexer) once CLOSED or FAILED.
  - Nothing goes out after our CLOSE, and after the peer's CLOSE nothing but our answering
    CLOSE.  A CLOSE from the peer on a channel it already closed, or did not confirm, is the
    peer's protocol error.  (The multiplexer refuses messages for channels that are not open
    before they get here; the table says why.)

Our direction (L{SendState}): what the local stream reads, going to the peer.
  - While OPEN, the local stream's bytes go out as CHANNEL_DATA within the peer's window (before
    the channel is confirmed they wait, as they do when the window is used up).
  - When the local stream reaches EOF, EOF is pending until every waiting byte has gone (and
    the channel is confirmed); then CHANNEL_EOF is sent, once.  No data follows it.
  - Our CLOSE is preceded by EOF if one was pending.
  - A channel the peer confirmed on terms we refuse is DISCARDED: its waiting bytes and EOF are
    dropped, and only CLOSE is sent.
  - A second local EOF, or one after the direction ended, is ignored.

The peer's direction (L{ReceiveState}): what the peer sends, going to the local stream.
  - While OPEN, the peer's CHANNEL_DATA is written to the local stream, and window credit goes
    back only for bytes the stream took.
  - The peer's EOF shuts the local stream's write side once it has flushed: EOF_RECEIVED until
    then, FINISHED after.  A second EOF from the peer is ignored, as OpenSSH does.
  - If the local stream goes away first, the direction is STREAM_CLOSED: the peer's data has
    nowhere to go.
  - Data the peer sends after its EOF, or after our CLOSE, is dropped but still counted against
    the window; the window, not this module, decides whether it is allowed at all.

We send CLOSE ourselves once we sent EOF and the peer's EOF reached the local stream, or as soon
as the local stream is lost on an open channel.

An event that a table does not list for the current state is refused: a L{RemoteProtocolError}
when the peer caused it (L{PEER_EVENTS}), a L{LocalProtocolError} when our own code did, which is
a bug.  An event that maps a state to itself is allowed and ignored.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import TypeVar

from twisted_rfwd.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "CHANNEL_TRANSITIONS",
    "CONFIRMED_STATES",
    "PEER_EVENTS",
    "RECEIVE_TRANSITIONS",
    "RELEASED_STATES",
    "SEND_TRANSITIONS",
    "ChannelState",
    "Event",
    "ReceiveState",
    "SendState",
    "next_channel_state",
    "next_receive_state",
    "next_send_state",
]


class _IdentityHashed(enum.Enum):
    """
    Members hashed by identity: they are looked up in the tables several times per channel
    message, and Enum's own hash (of the member's name) is a Python call each time.
    """

    __hash__ = object.__hash__


class ChannelState(_IdentityHashed):
    """The channel as a whole: the open handshake, then the CLOSE handshake."""

    OPENING = "opening"
    OPEN = "open"
    CLOSE_SENT = "closed by us"
    CLOSE_RECEIVED = "closed by the peer"
    CLOSED = "closed"
    FAILED = "never opened"


class SendState(_IdentityHashed):
    """Our direction: from the local stream to the peer."""

    OPEN = "open"
    EOF_PENDING = "waiting to send EOF"
    EOF_SENT = "EOF sent"
    DISCARDED = "discarded"


class ReceiveState(_IdentityHashed):
    """The peer's direction: from the peer to the local stream."""

    OPEN = "open"
    EOF_RECEIVED = "EOF received"
    STREAM_CLOSED = "local stream closed"
    FINISHED = "finished"


class Event(_IdentityHashed):
    """What happens to a channel; the value names it for error messages."""

    CONFIRMED = "the channel's confirmation"
    OPEN_FAILED = "the channel's open failure"
    CONNECTION_LOST = "the end of the SSH connection"
    OUR_CLOSE = "sending CHANNEL_CLOSE"
    PEER_CLOSE = "CHANNEL_CLOSE from the peer"
    STREAM_EOF = "EOF from the local stream"
    OUR_EOF = "sending CHANNEL_EOF"
    REFUSED = "refusing the peer's confirmation"
    PEER_EOF = "CHANNEL_EOF from the peer"
    STREAM_WRITE_DONE = "the local stream's write side closing"


PEER_EVENTS = frozenset({Event.PEER_CLOSE, Event.PEER_EOF})
"""The events the peer causes: refusing one is the peer's protocol error, not our bug."""


CHANNEL_TRANSITIONS: Mapping[ChannelState, Mapping[Event, ChannelState]] = {
    ChannelState.OPENING: {
        Event.CONFIRMED: ChannelState.OPEN,
        Event.OPEN_FAILED: ChannelState.FAILED,
        Event.CONNECTION_LOST: ChannelState.FAILED,
    },
    ChannelState.OPEN: {
        Event.OUR_CLOSE: ChannelState.CLOSE_SENT,
        Event.PEER_CLOSE: ChannelState.CLOSE_RECEIVED,
        Event.CONNECTION_LOST: ChannelState.CLOSED,
    },
    ChannelState.CLOSE_SENT: {
        Event.PEER_CLOSE: ChannelState.CLOSED,
        Event.CONNECTION_LOST: ChannelState.CLOSED,
    },
    ChannelState.CLOSE_RECEIVED: {
        Event.OUR_CLOSE: ChannelState.CLOSED,
        Event.CONNECTION_LOST: ChannelState.CLOSED,
    },
    ChannelState.CLOSED: {
        Event.CONNECTION_LOST: ChannelState.CLOSED,
    },
    ChannelState.FAILED: {
        Event.OPEN_FAILED: ChannelState.FAILED,
        Event.CONNECTION_LOST: ChannelState.FAILED,
    },
}

SEND_TRANSITIONS: Mapping[SendState, Mapping[Event, SendState]] = {
    SendState.OPEN: {
        Event.STREAM_EOF: SendState.EOF_PENDING,
        Event.OUR_EOF: SendState.EOF_SENT,
        Event.REFUSED: SendState.DISCARDED,
    },
    SendState.EOF_PENDING: {
        Event.STREAM_EOF: SendState.EOF_PENDING,
        Event.OUR_EOF: SendState.EOF_SENT,
        Event.REFUSED: SendState.DISCARDED,
    },
    SendState.EOF_SENT: {
        Event.STREAM_EOF: SendState.EOF_SENT,
    },
    SendState.DISCARDED: {
        Event.STREAM_EOF: SendState.DISCARDED,
    },
}

RECEIVE_TRANSITIONS: Mapping[ReceiveState, Mapping[Event, ReceiveState]] = {
    ReceiveState.OPEN: {
        Event.PEER_EOF: ReceiveState.EOF_RECEIVED,
        Event.STREAM_WRITE_DONE: ReceiveState.STREAM_CLOSED,
    },
    ReceiveState.EOF_RECEIVED: {
        Event.PEER_EOF: ReceiveState.EOF_RECEIVED,
        Event.STREAM_WRITE_DONE: ReceiveState.FINISHED,
    },
    ReceiveState.STREAM_CLOSED: {
        Event.PEER_EOF: ReceiveState.FINISHED,
        Event.STREAM_WRITE_DONE: ReceiveState.STREAM_CLOSED,
    },
    ReceiveState.FINISHED: {
        Event.PEER_EOF: ReceiveState.FINISHED,
        Event.STREAM_WRITE_DONE: ReceiveState.FINISHED,
    },
}

CONFIRMED_STATES = frozenset(
    {ChannelState.OPEN, ChannelState.CLOSE_SENT, ChannelState.CLOSE_RECEIVED, ChannelState.CLOSED}
)
"""The peer knows the channel by our number: it was confirmed, one way or the other."""

RELEASED_STATES = frozenset({ChannelState.CLOSED, ChannelState.FAILED})
"""Nothing more goes either way: the multiplexer may forget the channel."""


_State = TypeVar("_State", ChannelState, SendState, ReceiveState)


def _next(
    table: Mapping[_State, Mapping[Event, _State]], what: str, state: _State, event: Event
) -> _State:
    try:
        return table[state][event]
    except KeyError:
        message = f"{event.value} is not allowed when {what} is {state.value}"
        if event in PEER_EVENTS:
            raise RemoteProtocolError(message) from None
        raise LocalProtocolError(message) from None


def next_channel_state(state: ChannelState, event: Event) -> ChannelState:
    """The channel's state after C{event}; raises if the rules do not allow it."""
    return _next(CHANNEL_TRANSITIONS, "the channel", state, event)


def next_send_state(state: SendState, event: Event) -> SendState:
    """Our direction's state after C{event}; raises if the rules do not allow it."""
    return _next(SEND_TRANSITIONS, "our direction", state, event)


def next_receive_state(state: ReceiveState, event: Event) -> ReceiveState:
    """The peer's direction's state after C{event}; raises if the rules do not allow it."""
    return _next(RECEIVE_TRANSITIONS, "the peer's direction", state, event)
