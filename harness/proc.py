"""
Process trees read from /proc: what a process started (sshd forks for every connection), and
what the whole tree holds in memory and file descriptors, and the CPU time it has used.
"""

from __future__ import annotations

import contextlib
import os


def _children() -> dict[int, list[int]]:
    """Every process's children, from each /proc/PID/stat's parent field."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # The command name in parentheses may hold spaces: the fields after it are fixed.
        parent = int(stat[stat.rindex(b")") + 2 :].split()[1])
        children.setdefault(parent, []).append(int(entry))
    return children


def descendants(pid: int) -> list[int]:
    """The process IDs below C{pid} (children, grandchildren...)."""
    children = _children()
    found: list[int] = []
    pending = list(children.get(pid, []))
    while pending:
        child = pending.pop()
        found.append(child)
        pending.extend(children.get(child, []))
    return found


def process_tree(pid: int) -> list[int]:
    """C{pid} and all its descendants."""
    return [pid, *descendants(pid)]


def status_field(pid: int, name: str) -> str | None:
    """A field of /proc/PID/status (C{VmRSS}, C{State}...), or None if there is none."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(name + ":"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def rss_kib(pid: int) -> int | None:
    """Resident memory of C{pid} now (VmRSS), or None for a process that has none."""
    value = status_field(pid, "VmRSS")
    return int(value.split()[0]) if value else None


def tree_rss_kib(pid: int) -> int:
    """Resident memory of C{pid} and its descendants (VmRSS summed)."""
    return sum(rss_kib(p) or 0 for p in process_tree(pid))


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User and system CPU time C{pid} has used so far (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return 0.0
    # utime and stime: fields 14 and 15, the 12th and 13th after the command name.
    fields = stat[stat.rindex(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def tree_cpu_seconds(pid: int) -> float:
    """CPU time used by C{pid} and its living descendants (sshd's per-connection processes)."""
    return sum(cpu_seconds(p) for p in process_tree(pid))


def tree_fds(pid: int) -> int:
    """Open file descriptors of C{pid} and its descendants."""
    total = 0
    for p in process_tree(pid):
        with contextlib.suppress(OSError):
            total += len(os.listdir(f"/proc/{p}/fd"))
    return total


def gone(pid: int) -> bool:
    """Whether C{pid} has exited (no such process, or a zombie)."""
    state = status_field(pid, "State")
    return state is None or state.startswith("Z")
