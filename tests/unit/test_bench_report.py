"""
The benchmark's bookkeeping, without running a benchmark: CPU time read from /proc, and the
connection-rate columns (rate, latency, CPU per connection of each end) with their ratios to
the chosen reference pair.
"""

from __future__ import annotations

import os
import time
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from benchmarks.report import report
from benchmarks.scenarios import Options
from harness.proc import cpu_seconds, tree_cpu_seconds


def _connrate(
    pair: str, rep: int, rate: float, server_ms: float, client_ms: float
) -> dict[str, Any]:
    metrics = {
        "conn_s": rate,
        "p50_ms": 1.0,
        "p99_ms": 2.0,
        "server_cpu_ms_per_conn": server_ms,
        "client_cpu_ms_per_conn": client_ms,
    }
    return {"rep": rep, "pair": pair, "test": "connrate", "status": "ok", "metrics": metrics,
            "notes": [], "cipher": "c"}  # fmt: skip


class CpuTimeTests(SynchronousTestCase):
    def test_own_cpu_time_grows_with_work(self) -> None:
        """The CPU seconds read from /proc for this process rise while it computes."""
        before = cpu_seconds(os.getpid())
        deadline = time.monotonic() + 10
        while cpu_seconds(os.getpid()) < before + 0.05 and time.monotonic() < deadline:
            sum(range(10_000))
        self.assertGreaterEqual(cpu_seconds(os.getpid()), before + 0.05)
        self.assertGreaterEqual(tree_cpu_seconds(os.getpid()), cpu_seconds(os.getpid()))

    def test_gone_process_has_no_cpu_time(self) -> None:
        self.assertEqual(cpu_seconds(2**22 + 12345), 0.0)


class ConnectionRateReportTests(SynchronousTestCase):
    def test_cpu_per_connection_columns_and_ratios_to_the_reference(self) -> None:
        """Each end's CPU per connection is shown, with the ratio to the reference pair's."""
        records = [
            _connrate("ossh-tty", 0, 2000.0, 0.15, 0.16),
            _connrate("rfwd", 0, 1000.0, 0.45, 0.48),
        ]
        table = report(
            records, ["ossh-tty", "rfwd"], ["connrate"], Options(4, 500, 10, 5), "ossh-tty"
        )
        self.assertIn("server CPU ms/conn", table)
        self.assertIn("client CPU ms/conn", table)
        rfwd_row = next(line for line in table.splitlines() if line.startswith("| rfwd"))
        self.assertIn("1000.0 (0.50x)", rfwd_row)
        self.assertIn("0.450 (3.00x)", rfwd_row)
        self.assertIn("0.480 (3.00x)", rfwd_row)
