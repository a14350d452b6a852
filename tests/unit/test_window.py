"""
Tests for L{twisted_rfwd.protocol.window}: receive- and send-window accounting (RFC 4254
section 5.2).
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from twisted_rfwd.errors import RemoteProtocolError
from twisted_rfwd.protocol.window import MAX_WINDOW, ReceiveWindow, SendWindow


class DataReceivedTests(SynchronousTestCase):
    """The peer must stay within the window and the maximum packet size."""

    def test_initial(self) -> None:
        """A new window has all of its size available and owes no credit."""
        window = ReceiveWindow(1000, 100)
        self.assertEqual((window.size, window.max_packet, window.available), (1000, 100, 1000))
        self.assertEqual(window.credit_due(), 0)

    def test_charges_available(self) -> None:
        """Received bytes are taken off the available window."""
        window = ReceiveWindow(1000, 100)
        window.data_received(100)
        window.data_received(30)
        self.assertEqual(window.available, 870)

    def test_exactly_fills_window(self) -> None:
        """Data up to exactly the window is accepted."""
        window = ReceiveWindow(100, 100)
        window.data_received(60)
        window.data_received(40)
        self.assertEqual(window.available, 0)

    def test_beyond_window(self) -> None:
        """One byte more than the window raises and leaves the window unchanged."""
        window = ReceiveWindow(100, 100)
        window.data_received(60)
        error = self.assertRaises(RemoteProtocolError, window.data_received, 41)
        self.assertEqual(str(error), "peer sent 41 bytes with only 40 left in the window")
        self.assertEqual(window.available, 40)

    def test_empty_window(self) -> None:
        """With no window left even one byte is a violation."""
        window = ReceiveWindow(10, 10)
        window.data_received(10)
        self.assertRaises(RemoteProtocolError, window.data_received, 1)

    def test_beyond_max_packet(self) -> None:
        """A packet larger than the maximum raises even with window to spare."""
        window = ReceiveWindow(1000, 100)
        window.data_received(100)
        error = self.assertRaises(RemoteProtocolError, window.data_received, 101)
        self.assertEqual(str(error), "peer sent a 101-byte packet; the maximum is 100")
        self.assertEqual(window.available, 900)


class CreditTests(SynchronousTestCase):
    """Credit is granted for consumed bytes, in batches once half the window is used."""

    def test_no_credit_without_consumption(self) -> None:
        """A drained window owes nothing until the consumer takes some bytes."""
        window = ReceiveWindow(100, 100)
        window.data_received(100)
        self.assertEqual(window.credit_due(), 0)
        self.assertEqual(window.available, 0)

    def test_no_credit_above_half(self) -> None:
        """While more than half the window remains, consumed bytes are held back."""
        window = ReceiveWindow(100, 100)
        window.data_received(49)
        window.consumed(49)
        self.assertEqual(window.credit_due(), 0)
        self.assertEqual(window.available, 51)

    def test_credit_at_half(self) -> None:
        """At exactly half, all consumed bytes are granted and the window is restored."""
        window = ReceiveWindow(100, 100)
        window.data_received(49)
        window.consumed(49)
        window.data_received(1)
        window.consumed(1)
        self.assertEqual(window.credit_due(), 50)
        self.assertEqual(window.available, 100)

    def test_credit_is_all_consumed(self) -> None:
        """Credit equals everything consumed so far, not only what crossed the threshold."""
        window = ReceiveWindow(1000, 1000)
        window.data_received(800)
        window.consumed(300)
        window.consumed(200)
        self.assertEqual(window.credit_due(), 500)
        self.assertEqual(window.available, 700)

    def test_credit_only_once(self) -> None:
        """Once granted, the same consumption is not granted again."""
        window = ReceiveWindow(100, 100)
        window.data_received(80)
        window.consumed(80)
        self.assertEqual(window.credit_due(), 80)
        self.assertEqual(window.credit_due(), 0)
        self.assertEqual(window.available, 100)

    def test_partial_consumption(self) -> None:
        """A slow consumer gets credit for what it took; the rest waits."""
        window = ReceiveWindow(100, 100)
        window.data_received(90)
        window.consumed(10)
        self.assertEqual(window.credit_due(), 10)
        self.assertEqual(window.available, 20)
        self.assertEqual(window.credit_due(), 0)
        window.consumed(80)
        self.assertEqual(window.credit_due(), 80)
        self.assertEqual(window.available, 100)

    def test_credit_restores_room_for_data(self) -> None:
        """After credit the peer may send that many more bytes, and no more."""
        window = ReceiveWindow(100, 100)
        window.data_received(100)
        window.consumed(60)
        self.assertEqual(window.credit_due(), 60)
        window.data_received(60)
        self.assertRaises(RemoteProtocolError, window.data_received, 1)

    def test_odd_size(self) -> None:
        """Half of an odd size rounds down: 101 grants at 50 left, not 51."""
        window = ReceiveWindow(101, 101)
        window.data_received(50)
        window.consumed(50)
        self.assertEqual(window.credit_due(), 0)
        window.data_received(1)
        window.consumed(1)
        self.assertEqual(window.credit_due(), 51)


class SendWindowTests(SynchronousTestCase):
    """We send within the peer's window and maximum packet, and a bounded number of packets."""

    def test_initial(self) -> None:
        """A new send window has the peer's window and maximum packet."""
        window = SendWindow(1000, 100)
        self.assertEqual((window.available, window.max_packet), (1000, 100))

    def test_max_packet_at_least_one(self) -> None:
        """A peer announcing a maximum packet of 0 still gets one byte per packet, not none."""
        self.assertEqual(SendWindow(1000, 0).max_packet, 1)

    def test_take_all_within_window(self) -> None:
        """What fits in the window and the packets goes whole, and is charged."""
        window = SendWindow(1000, 100)
        self.assertEqual(window.take(250, 16), 250)
        self.assertEqual(window.available, 750)

    def test_take_bounded_by_window(self) -> None:
        """No more than the window goes; the window is then empty."""
        window = SendWindow(150, 100)
        self.assertEqual(window.take(300, 16), 150)
        self.assertEqual(window.available, 0)
        self.assertEqual(window.take(10, 16), 0)

    def test_take_bounded_by_packets(self) -> None:
        """No more than C{packets} full packets go at once; the window keeps the rest."""
        window = SendWindow(10_000, 100)
        self.assertEqual(window.take(5000, 16), 1600)
        self.assertEqual(window.available, 8400)

    def test_zero_window_sends_nothing(self) -> None:
        """With a window of 0 nothing may go until the peer adjusts it."""
        window = SendWindow(0, 100)
        self.assertEqual(window.take(4, 16), 0)
        window.adjust(4)
        self.assertEqual(window.take(4, 16), 4)

    def test_adjust_adds(self) -> None:
        """WINDOW_ADJUST adds to what is left."""
        window = SendWindow(100, 100)
        window.take(60, 16)
        window.adjust(500)
        self.assertEqual(window.available, 540)

    def test_adjust_capped(self) -> None:
        """Credit beyond 2**32-1 is capped there, not an error, whatever the peer sends."""
        self.assertEqual(MAX_WINDOW, 2**32 - 1)
        window = SendWindow(MAX_WINDOW - 10, 100)
        window.adjust(MAX_WINDOW)
        self.assertEqual(window.available, MAX_WINDOW)
