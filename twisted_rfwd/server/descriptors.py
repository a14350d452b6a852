"""
File descriptors, which one rfwd-server process shares among all its users.

sshd gets a descriptor table per connection for free (one process each); one reactor has one
table, so one user's forwards could exhaust it and lock everyone out.  L{DescriptorBudget} counts
the descriptors the server holds and refuses new ones in tiers, so that what matters most keeps
working longest:

    limit L: the soft RLIMIT_NOFILE (raised to the hard one at start)
    - listening sockets of new forwards:  while the total stays within L - max(48, L/8), and
      each user's within half of what that tier leaves above the base (so another user's
      forwards still find room);
    - forwarded connections (tunnels already open):  within L - 16 - max(16, L/32);
    - SSH connections (new logins):  within L - 16.

The last 16 are left for what is not counted: a read of authorized_keys, a log file being
rotated, Twisted's own spare descriptor for EMFILE.  Counting is by acquire and release at the
points descriptors are created and closed, never by listing /proc per connection; only the base
(descriptors open before serving: stdio, logs, the reactor, listening ports) is read from
/proc/self/fd, once, when the factory starts.
"""

from __future__ import annotations

import contextlib
import os
import resource
import sys

from twisted.logger import Logger

__all__ = [
    "EDGE",
    "DescriptorBudget",
    "ForwardCounts",
    "count_open_descriptors",
    "raise_nofile_limit",
]

_log = Logger()

# Descriptors never handed out: for what is opened briefly and not counted.
EDGE = 16
# Below the SSH connections' ceiling, kept for logins when forwarded connections pile up.
MINIMUM_LOGIN_RESERVE = 16
# Below the limit, kept from new forwards' listening sockets.
MINIMUM_FORWARD_RESERVE = 48


def raise_nofile_limit() -> tuple[int, int]:
    """
    Raise the soft RLIMIT_NOFILE to the hard one, as far as the system allows; returns the
    (soft, hard) limits now in force.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard
    if hard == resource.RLIM_INFINITY:
        # Linux refuses more than fs.nr_open.
        try:
            with open("/proc/sys/fs/nr_open") as f:
                target = int(f.read())
        except (OSError, ValueError):
            return soft, hard
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(OSError, ValueError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft, hard


def count_open_descriptors() -> int | None:
    """Descriptors this process has open now, or None where the system does not say."""
    for directory in ("/proc/self/fd", "/dev/fd"):
        try:
            # The listing's own directory descriptor is in it.
            return len(os.listdir(directory)) - 1
        except OSError:
            continue
    return None


def _soft_limit() -> int:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return sys.maxsize if soft == resource.RLIM_INFINITY or soft < 0 else soft


class DescriptorBudget:
    """
    The process's descriptors as a budget: C{acquire_*} says whether one more may be opened (and
    counts it if so); each successful acquire is matched by one C{release_*} when it closes.
    """

    def __init__(self, limit: int, base: int = 0) -> None:
        self.limit = limit
        self.base = base
        self.connections = 0
        self.forwarded = 0
        self.listeners = 0
        self._listeners_by_user: dict[str, int] = {}

    @classmethod
    def for_this_process(cls) -> DescriptorBudget:
        """The current soft limit, and the descriptors open now as the base."""
        budget = cls(_soft_limit())
        budget.rebase()
        return budget

    def rebase(self) -> None:
        """Read the limit and the base again (the base: open descriptors the budget does not
        hold).  Cheap enough for a start, too slow for every connection."""
        self.limit = _soft_limit()
        measured = count_open_descriptors()
        if measured is not None:
            self.base = max(0, measured - self.held)

    @property
    def held(self) -> int:
        """Descriptors acquired and not yet released."""
        return self.connections + self.forwarded + self.listeners

    @property
    def in_use(self) -> int:
        """The estimate of descriptors open: base plus held."""
        return self.base + self.held

    @property
    def listeners_ceiling(self) -> int:
        """Total in use beyond which no forward may open a listening socket."""
        return self.limit - max(MINIMUM_FORWARD_RESERVE, self.limit // 8)

    @property
    def forwarded_ceiling(self) -> int:
        """Total in use beyond which no forwarded connection is taken."""
        return self.connections_ceiling - max(MINIMUM_LOGIN_RESERVE, self.limit // 32)

    @property
    def connections_ceiling(self) -> int:
        """Total in use beyond which no SSH connection is taken."""
        return self.limit - EDGE

    @property
    def user_share(self) -> int:
        """Listening sockets one user may hold: half of what the listener tier leaves."""
        return max(0, (self.listeners_ceiling - self.base) // 2)

    def describe(self) -> str:
        """The tiers, for the log at start."""
        return (
            f"limit {self.limit}, {self.base} open at start; forwards' listening sockets up to "
            f"{self.listeners_ceiling} ({self.user_share} per user), forwarded connections up "
            f"to {self.forwarded_ceiling}, SSH connections up to {self.connections_ceiling}"
        )

    def acquire_connection(self) -> bool:
        """An SSH connection was accepted: may it stay?"""
        if self.in_use + 1 > self.connections_ceiling:
            return False
        self.connections += 1
        return True

    def release_connection(self) -> None:
        """An SSH connection admitted by L{acquire_connection} closed."""
        self.connections = self._less(self.connections, 1, "SSH connection")

    def acquire_forwarded(self) -> bool:
        """A connection arrived on a forward's port: may it be forwarded?"""
        if self.in_use + 1 > self.forwarded_ceiling:
            return False
        self.forwarded += 1
        return True

    def release_forwarded(self) -> None:
        """A forwarded connection admitted by L{acquire_forwarded} closed."""
        self.forwarded = self._less(self.forwarded, 1, "forwarded connection")

    def acquire_listeners(self, user: str, count: int) -> bool:
        """May C{user} open C{count} more listening sockets for a forward?"""
        mine = self._listeners_by_user.get(user, 0)
        if self.in_use + count > self.listeners_ceiling or mine + count > self.user_share:
            return False
        self.listeners += count
        self._listeners_by_user[user] = mine + count
        return True

    def release_listeners(self, user: str, count: int) -> None:
        """C{count} listening sockets of C{user}'s, acquired before, closed (or never bound)."""
        self.listeners = self._less(self.listeners, count, "listening socket")
        left = self._less(self._listeners_by_user.get(user, 0), count, "listening socket")
        if left:
            self._listeners_by_user[user] = left
        else:
            self._listeners_by_user.pop(user, None)

    def listeners_of(self, user: str) -> int:
        """Listening sockets C{user} holds."""
        return self._listeners_by_user.get(user, 0)

    def _less(self, held: int, count: int, what: str) -> int:
        if count > held:
            # A release without its acquire: a bug, but never a negative count.
            _log.error(
                "Descriptor budget: released {count} {what}(s) but only {held} held",
                count=count,
                what=what,
                held=held,
            )
            return 0
        return held - count


class ForwardCounts:
    """Forwards (C{tcpip-forward} requests granted) each login name holds, over its connections."""

    def __init__(self) -> None:
        self._by_user: dict[str, int] = {}

    def of(self, user: str) -> int:
        """Forwards C{user} holds now."""
        return self._by_user.get(user, 0)

    def try_add(self, user: str, cap: int) -> bool:
        """Count one more forward for C{user} unless it already holds C{cap}."""
        held = self._by_user.get(user, 0)
        if held >= cap:
            return False
        self._by_user[user] = held + 1
        return True

    def remove(self, user: str) -> None:
        """One of C{user}'s forwards closed (cancelled, or its connection ended)."""
        held = self._by_user.get(user, 0)
        if held <= 1:
            self._by_user.pop(user, None)
        else:
            self._by_user[user] = held - 1

    def __len__(self) -> int:
        return len(self._by_user)
