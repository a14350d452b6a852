"""
Tests for L{twisted_rfwd.protocol.channel_state}: the channel's three state machines and their
transition tables, without any I/O.  How L{twisted_rfwd.ssh.channel.Channel} acts on them is in
L{tests.unit.test_channel}.
"""

from __future__ import annotations

from collections.abc import Mapping

from twisted.trial.unittest import SynchronousTestCase

from twisted_rfwd.errors import LocalProtocolError, RemoteProtocolError
from twisted_rfwd.protocol.channel_state import (
    CHANNEL_TRANSITIONS,
    CONFIRMED_STATES,
    PEER_EVENTS,
    RECEIVE_TRANSITIONS,
    RELEASED_STATES,
    SEND_TRANSITIONS,
    ChannelState,
    Event,
    ReceiveState,
    SendState,
    next_channel_state,
    next_receive_state,
    next_send_state,
)


class TableTests(SynchronousTestCase):
    """The tables are complete over their states and name only their own machine's states."""

    def test_every_state_has_a_row(self) -> None:
        """Each state of each machine has a row, even if every event in it is refused."""
        self.assertEqual(set(CHANNEL_TRANSITIONS), set(ChannelState))
        self.assertEqual(set(SEND_TRANSITIONS), set(SendState))
        self.assertEqual(set(RECEIVE_TRANSITIONS), set(ReceiveState))

    def test_each_event_belongs_to_one_machine(self) -> None:
        """An event moves one machine only, so no event is applied to two tables."""
        owners: dict[Event, set[str]] = {event: set() for event in Event}
        rows: list[tuple[str, Mapping[Event, object]]] = [
            *(("channel", row) for row in CHANNEL_TRANSITIONS.values()),
            *(("send", row) for row in SEND_TRANSITIONS.values()),
            *(("receive", row) for row in RECEIVE_TRANSITIONS.values()),
        ]
        for name, row in rows:
            for event in row:
                owners[event].add(name)
        self.assertEqual(
            {event: len(names) for event, names in owners.items()}, dict.fromkeys(Event, 1)
        )

    def test_peer_events(self) -> None:
        """Only the peer's EOF and CLOSE are the peer's doing."""
        self.assertEqual(PEER_EVENTS, {Event.PEER_EOF, Event.PEER_CLOSE})

    def test_confirmed_and_released(self) -> None:
        """A channel that never opened is released but not confirmed; CLOSED is both."""
        self.assertEqual(
            CONFIRMED_STATES,
            {
                ChannelState.OPEN,
                ChannelState.CLOSE_SENT,
                ChannelState.CLOSE_RECEIVED,
                ChannelState.CLOSED,
            },
        )
        self.assertEqual(RELEASED_STATES, {ChannelState.CLOSED, ChannelState.FAILED})


class ChannelStateTests(SynchronousTestCase):
    """The open handshake, then CLOSE once each way."""

    def run_events(self, *events: Event) -> ChannelState:
        state = ChannelState.OPENING
        for event in events:
            state = next_channel_state(state, event)
        return state

    def test_we_close_first(self) -> None:
        """Confirmed, our CLOSE, the peer's CLOSE: CLOSED."""
        self.assertIs(self.run_events(Event.CONFIRMED), ChannelState.OPEN)
        self.assertIs(self.run_events(Event.CONFIRMED, Event.OUR_CLOSE), ChannelState.CLOSE_SENT)
        self.assertIs(
            self.run_events(Event.CONFIRMED, Event.OUR_CLOSE, Event.PEER_CLOSE),
            ChannelState.CLOSED,
        )

    def test_peer_closes_first(self) -> None:
        """Confirmed, the peer's CLOSE, our answer: CLOSED."""
        self.assertIs(
            self.run_events(Event.CONFIRMED, Event.PEER_CLOSE), ChannelState.CLOSE_RECEIVED
        )
        self.assertIs(
            self.run_events(Event.CONFIRMED, Event.PEER_CLOSE, Event.OUR_CLOSE),
            ChannelState.CLOSED,
        )

    def test_open_refused(self) -> None:
        """A refused open fails the channel without any CLOSE; a second failure is ignored."""
        self.assertIs(self.run_events(Event.OPEN_FAILED), ChannelState.FAILED)
        self.assertIs(self.run_events(Event.OPEN_FAILED, Event.OPEN_FAILED), ChannelState.FAILED)

    def test_connection_lost(self) -> None:
        """The connection ending fails an unconfirmed channel and closes any other."""
        self.assertIs(self.run_events(Event.CONNECTION_LOST), ChannelState.FAILED)
        for before in (
            (Event.CONFIRMED,),
            (Event.CONFIRMED, Event.OUR_CLOSE),
            (Event.CONFIRMED, Event.PEER_CLOSE),
            (Event.CONFIRMED, Event.OUR_CLOSE, Event.PEER_CLOSE),
        ):
            self.assertIs(self.run_events(*before, Event.CONNECTION_LOST), ChannelState.CLOSED)
        self.assertIs(
            self.run_events(Event.OPEN_FAILED, Event.CONNECTION_LOST), ChannelState.FAILED
        )

    def test_second_close_from_peer_is_its_error(self) -> None:
        """A CLOSE from the peer on a channel it already closed is the peer's protocol error."""
        for state in (ChannelState.CLOSE_RECEIVED, ChannelState.CLOSED):
            error = self.assertRaises(
                RemoteProtocolError, next_channel_state, state, Event.PEER_CLOSE
            )
            self.assertEqual(
                str(error),
                f"CHANNEL_CLOSE from the peer is not allowed when the channel is {state.value}",
            )

    def test_close_from_peer_before_confirmation_is_its_error(self) -> None:
        """The peer cannot close a channel that is not open."""
        for state in (ChannelState.OPENING, ChannelState.FAILED):
            self.assertRaises(RemoteProtocolError, next_channel_state, state, Event.PEER_CLOSE)

    def test_our_mistakes_are_local_errors(self) -> None:
        """Confirming twice, closing twice or before confirmation: our bug, not the peer's."""
        for state, event in [
            (ChannelState.OPEN, Event.CONFIRMED),
            (ChannelState.FAILED, Event.CONFIRMED),
            (ChannelState.OPENING, Event.OUR_CLOSE),
            (ChannelState.CLOSE_SENT, Event.OUR_CLOSE),
            (ChannelState.CLOSED, Event.OUR_CLOSE),
            (ChannelState.OPEN, Event.OPEN_FAILED),
        ]:
            error = self.assertRaises(LocalProtocolError, next_channel_state, state, event)
            self.assertIn(f"when the channel is {state.value}", str(error))

    def test_events_of_other_machines_are_refused(self) -> None:
        """An event of another machine is a bug when given to the channel's table."""
        self.assertRaises(
            LocalProtocolError, next_channel_state, ChannelState.OPEN, Event.STREAM_EOF
        )


class SendStateTests(SynchronousTestCase):
    """Our direction: EOF waits for the data before it, goes once, and nothing follows it."""

    def test_eof_at_once(self) -> None:
        """With nothing waiting, EOF goes straight out."""
        self.assertIs(next_send_state(SendState.OPEN, Event.OUR_EOF), SendState.EOF_SENT)

    def test_eof_pending_then_sent(self) -> None:
        """The stream's EOF waits while data does, then goes."""
        pending = next_send_state(SendState.OPEN, Event.STREAM_EOF)
        self.assertIs(pending, SendState.EOF_PENDING)
        self.assertIs(next_send_state(pending, Event.STREAM_EOF), SendState.EOF_PENDING)
        self.assertIs(next_send_state(pending, Event.OUR_EOF), SendState.EOF_SENT)

    def test_later_stream_eof_ignored(self) -> None:
        """The stream's EOF after ours went, or after the channel was discarded, is ignored."""
        for state in (SendState.EOF_SENT, SendState.DISCARDED):
            self.assertIs(next_send_state(state, Event.STREAM_EOF), state)

    def test_refused_confirmation_discards_pending_eof(self) -> None:
        """Refusing the confirmation drops a pending EOF along with the data."""
        for state in (SendState.OPEN, SendState.EOF_PENDING):
            self.assertIs(next_send_state(state, Event.REFUSED), SendState.DISCARDED)

    def test_eof_twice_is_our_bug(self) -> None:
        """Sending EOF after EOF, or on a discarded channel, raises LocalProtocolError."""
        for state in (SendState.EOF_SENT, SendState.DISCARDED):
            error = self.assertRaises(LocalProtocolError, next_send_state, state, Event.OUR_EOF)
            self.assertEqual(
                str(error),
                f"sending CHANNEL_EOF is not allowed when our direction is {state.value}",
            )


class ReceiveStateTests(SynchronousTestCase):
    """The peer's direction: its EOF, then the stream's write side; either order."""

    def test_eof_then_stream_done(self) -> None:
        """The peer's EOF, then the stream shuts its write side: FINISHED."""
        received = next_receive_state(ReceiveState.OPEN, Event.PEER_EOF)
        self.assertIs(received, ReceiveState.EOF_RECEIVED)
        self.assertIs(next_receive_state(received, Event.STREAM_WRITE_DONE), ReceiveState.FINISHED)

    def test_stream_gone_then_eof(self) -> None:
        """The stream goes first; the peer's EOF then finishes the direction."""
        closed = next_receive_state(ReceiveState.OPEN, Event.STREAM_WRITE_DONE)
        self.assertIs(closed, ReceiveState.STREAM_CLOSED)
        self.assertIs(next_receive_state(closed, Event.PEER_EOF), ReceiveState.FINISHED)

    def test_second_eof_from_peer_ignored(self) -> None:
        """A repeated EOF from the peer changes nothing (OpenSSH ignores it too)."""
        for state in (ReceiveState.EOF_RECEIVED, ReceiveState.FINISHED):
            self.assertIs(next_receive_state(state, Event.PEER_EOF), state)

    def test_every_receive_event_allowed_everywhere(self) -> None:
        """Neither the peer's EOF nor the stream's end is ever refused in this direction."""
        for state in ReceiveState:
            for event in (Event.PEER_EOF, Event.STREAM_WRITE_DONE):
                self.assertIn(next_receive_state(state, event), set(ReceiveState))

    def test_peer_event_of_another_machine_is_the_peers_error(self) -> None:
        """A CLOSE given to the receive table is refused as the peer's doing."""
        self.assertRaises(
            RemoteProtocolError, next_receive_state, ReceiveState.OPEN, Event.PEER_CLOSE
        )
