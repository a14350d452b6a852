"""
The scenarios measured on a started pair: bulk upload and download, eight uploads at once,
sequential connection rate, and many connections held at once (memory per connection); each run
becomes a JSON-able record that never raises for the scenario's own failure.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from benchmarks.loadgen import (
    ECHO_LEN,
    IO_TIMEOUT,
    VerifyError,
    connect,
    download,
    echo_message,
    first_echo,
    recv_exact,
    upload,
)
from benchmarks.pairs import Instance
from harness.ports import LOOPBACK
from harness.proc import tree_cpu_seconds, tree_fds, tree_rss_kib

CONC_PHASE_TIMEOUT = 300.0  # seconds each phase of the conc test may take in all


@dataclass
class Options:
    duration: float
    conns: int
    conc: int
    conc_inflight: int


@dataclass
class TestResult:
    metrics: dict[str, float]
    notes: list[str] = field(default_factory=list)


def _mbps(nbytes: int, seconds: float) -> float:
    return nbytes / seconds / 1e6


def bulk_up(inst: Instance, opts: Options) -> TestResult:
    nbytes, start, end = upload(inst.listen_port, opts.duration)
    return TestResult({"mbps": _mbps(nbytes, end - start), "bytes": nbytes})


def bulk_down(inst: Instance, opts: Options) -> TestResult:
    nbytes, start, end = download(inst.listen_port, opts.duration)
    return TestResult({"mbps": _mbps(nbytes, end - start), "bytes": nbytes})


PARALLEL = 8


def par8(inst: Instance, opts: Options) -> TestResult:
    barrier = threading.Barrier(PARALLEL)
    with ThreadPoolExecutor(PARALLEL) as pool:
        futures = [
            pool.submit(upload, inst.listen_port, opts.duration, barrier) for _ in range(PARALLEL)
        ]
        results = [f.result() for f in futures]
    nbytes = sum(r[0] for r in results)
    seconds = max(r[2] for r in results) - min(r[1] for r in results)
    slowest = min(_mbps(r[0], r[2] - r[1]) for r in results)
    return TestResult({"mbps": _mbps(nbytes, seconds), "slowest_mbps": slowest, "bytes": nbytes})


def _percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[round(fraction * (len(ordered) - 1))]


def connrate(inst: Instance, opts: Options) -> TestResult:
    latencies = []
    start = time.perf_counter()
    for i in range(opts.conns):
        began = time.perf_counter()
        with connect(inst.listen_port) as s:
            echoed = first_echo(s, i)
            latencies.append(time.perf_counter() - began)
        if not echoed:
            raise VerifyError(f"connection {i}: wrong echo")
    elapsed = time.perf_counter() - start
    return TestResult(
        {
            "conn_s": opts.conns / elapsed,
            "p50_ms": 1000 * _percentile(latencies, 0.5),
            "p99_ms": 1000 * _percentile(latencies, 0.99),
            "max_ms": 1000 * max(latencies),
        }
    )


def describe(error: BaseException) -> str:
    """An exception as one line for the problems listed under the tables."""
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


def conc(inst: Instance, opts: Options) -> TestResult:
    """N connections held at once: memory per connection on each side, then a second echo."""
    n = opts.conc
    roots = inst.roots()
    before = {side: tree_rss_kib(pid) for side, pid in roots.items()}
    sockets: list[socket.socket | None] = [None] * n
    failures: Counter[str] = Counter()
    wrong: list[int] = []
    open_deadline = time.monotonic() + CONC_PHASE_TIMEOUT

    def open_one(i: int) -> None:
        if time.monotonic() > open_deadline:
            failures["not tried: open phase timed out"] += 1
            return
        try:
            s = socket.socket()
        except OSError as e:
            failures[describe(e)] += 1
            return
        try:
            s.settimeout(IO_TIMEOUT)
            s.connect((LOOPBACK, inst.listen_port))
            if not first_echo(s, i):
                wrong.append(i)
                s.close()
                return
        except (OSError, VerifyError) as e:
            failures[describe(e)] += 1
            s.close()
            return
        sockets[i] = s

    try:
        start = time.monotonic()
        pool = ThreadPoolExecutor(opts.conc_inflight)
        try:
            list(pool.map(open_one, range(n)))
        finally:  # on Ctrl-C, open no more
            pool.shutdown(cancel_futures=True)
        open_seconds = time.monotonic() - start
        opened = [(i, s) for i, s in enumerate(sockets) if s is not None]
        time.sleep(1.0)  # let both ends settle before measuring
        at_n = {side: tree_rss_kib(pid) for side, pid in roots.items()}
        fds = {side: tree_fds(pid) for side, pid in roots.items()}

        # Second echo on every connection at once: all sent, then all read.
        start = time.monotonic()
        echo_deadline = start + CONC_PHASE_TIMEOUT
        second_ok = 0
        sent = []
        for i, s in opened:
            try:
                s.sendall(echo_message(n + i))
                sent.append((i, s))
            except OSError as e:
                failures["second echo: " + describe(e)] += 1
        for i, s in sent:
            try:
                s.settimeout(max(0.1, echo_deadline - time.monotonic()))
                if recv_exact(s, ECHO_LEN) == echo_message(n + i):
                    second_ok += 1
                else:
                    wrong.append(i)
            except (OSError, VerifyError) as e:
                failures["second echo: " + describe(e)] += 1
        echo_seconds = time.monotonic() - start
    finally:
        for held in sockets:
            if held is not None:
                held.close()
    if wrong:
        raise VerifyError(f"{len(wrong)} connections echoed wrong data (first: {wrong[0]})")
    metrics: dict[str, float] = {
        "n": n,
        "ok": len(opened),
        "ok2": second_ok,
        "open_s": open_seconds,
        "echo2_s": echo_seconds,
    }
    for side in roots:
        metrics[f"{side}_rss_before_kib"] = before[side]
        metrics[f"{side}_rss_at_n_kib"] = at_n[side]
        metrics[f"{side}_fds_at_n"] = fds[side]
        if opened:
            metrics[f"{side}_kib_per_conn"] = (at_n[side] - before[side]) / len(opened)
    notes = [f"{count} x {reason}" for reason, count in failures.most_common()]
    return TestResult(metrics, notes)


TESTS: dict[str, Callable[[Instance, Options], TestResult]] = {
    "bulk_up": bulk_up,
    "bulk_down": bulk_down,
    "par8": par8,
    "connrate": connrate,
    "conc": conc,
}
BULK_TESTS = {"bulk_up", "bulk_down", "par8"}


class PeakRss:
    """Highest VmRSS (KiB) of each process tree while in the block, sampled every 0.25 s."""

    def __init__(self, roots: dict[str, int]) -> None:
        self.roots = roots
        self.peak = dict.fromkeys(roots, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        for side, pid in self.roots.items():
            self.peak[side] = max(self.peak[side], tree_rss_kib(pid))

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            self._sample()

    def __enter__(self) -> PeakRss:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


def run_test(inst: Instance, test: str, opts: Options) -> dict[str, Any]:
    """One test on a started pair, as a JSON-able record; never raises for a test's failure."""
    record: dict[str, Any] = {"status": "ok", "metrics": {}, "notes": []}
    roots = inst.roots()
    peak = PeakRss(roots)
    cpu_before = {side: tree_cpu_seconds(pid) for side, pid in roots.items()}
    try:
        with peak:
            result = TESTS[test](inst, opts)
        record.update(metrics=result.metrics, notes=result.notes)
        if test == "connrate":
            # CPU per forwarded connection, each end: its CPU seconds over the test / connections.
            for side, pid in roots.items():
                used = tree_cpu_seconds(pid) - cpu_before[side]
                result.metrics[f"{side}_cpu_ms_per_conn"] = 1000 * used / opts.conns
    except VerifyError as e:
        record.update(status="failed", notes=[str(e)])
    except Exception as e:  # a benchmark records what went wrong and carries on
        record.update(status="error", notes=[describe(e)])
    dead = [child.ended() for child in inst.children() if not child.alive()]
    if dead:
        record["status"] = "error" if record["status"] == "ok" else record["status"]
        record["notes"] = [*record["notes"], *dead]
    if test in BULK_TESTS and peak.peak:
        record["peak_rss_kib"] = peak.peak
    return record
