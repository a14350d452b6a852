"""
The tables: one cell per pair and column, the median over repetitions and, in parentheses, the
median of the per-repetition ratios to the reference pair; then the problems met.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from benchmarks.scenarios import BULK_TESTS, Options

# A column's value, from the records of one pair in one repetition (None: no value).
Extract = Callable[[list[dict[str, Any]]], float | None]


@dataclass(frozen=True)
class Column:
    title: str
    tests: tuple[str, ...]  # the tests the value comes from
    value: Extract
    digits: int = 1
    ratio: bool = True
    suffix: str = ""
    verified: bool = True  # a data verification failure makes the cell FAILED


FAILED = "FAILED"


def _metric(test: str, name: str, scale: float = 1.0) -> Extract:
    def value(records: list[dict[str, Any]]) -> float | None:
        for record in records:
            if record["test"] == test and record["status"] == "ok" and name in record["metrics"]:
                return float(record["metrics"][name]) * scale
        return None

    return value


def _peak(side: str) -> Extract:
    def value(records: list[dict[str, Any]]) -> float | None:
        peaks = [r["peak_rss_kib"][side] for r in records if side in r.get("peak_rss_kib", {})]
        return max(peaks) / 1024 if peaks else None

    return value


def columns(opts: Options) -> tuple[list[Column], list[Column]]:
    rates = [
        Column("bulk_up MB/s", ("bulk_up",), _metric("bulk_up", "mbps")),
        Column("bulk_down MB/s", ("bulk_down",), _metric("bulk_down", "mbps")),
        Column("par8 MB/s", ("par8",), _metric("par8", "mbps")),
        Column("connrate conn/s", ("connrate",), _metric("connrate", "conn_s")),
        Column("p50 ms", ("connrate",), _metric("connrate", "p50_ms"), 2),
        Column("p99 ms", ("connrate",), _metric("connrate", "p99_ms"), 2),
        Column(
            "server CPU ms/conn", ("connrate",), _metric("connrate", "server_cpu_ms_per_conn"), 3
        ),
        Column(
            "client CPU ms/conn", ("connrate",), _metric("connrate", "client_cpu_ms_per_conn"), 3
        ),
    ]
    memory = [
        Column("conc ok", ("conc",), _metric("conc", "ok"), 0, False, f"/{opts.conc}"),
        Column("2nd echo ok", ("conc",), _metric("conc", "ok2"), 0, False, f"/{opts.conc}"),
        Column("conc open s", ("conc",), _metric("conc", "open_s"), 2),
        Column("server KiB/conn", ("conc",), _metric("conc", "server_kib_per_conn")),
        Column("client KiB/conn", ("conc",), _metric("conc", "client_kib_per_conn")),
        Column("peak server MiB", tuple(BULK_TESTS), _peak("server"), verified=False),
        Column("peak client MiB", tuple(BULK_TESTS), _peak("client"), verified=False),
    ]
    return rates, memory


def _cell(
    column: Column, pair: str, by_rep: dict[int, dict[str, list[dict[str, Any]]]], reference: str
) -> str:
    relevant = [
        r for reps in by_rep.values() for r in reps.get(pair, []) if r["test"] in column.tests
    ]
    if not relevant:
        return ""
    if column.verified and any(r["status"] == "failed" for r in relevant):
        return FAILED
    values, ratios = [], []
    for reps in by_rep.values():
        value = column.value(reps.get(pair, []))
        if value is None:
            continue
        values.append(value)
        base = column.value(reps.get(reference, []))
        if base:
            ratios.append(value / base)
    if not values:
        return "error" if any(r["status"] == "error" for r in relevant) else "-"
    text = f"{statistics.median(values):.{column.digits}f}{column.suffix}"
    if column.ratio and ratios and pair != reference:
        text += f" ({statistics.median(ratios):.2f}x)"
    if any(r["status"] == "error" for r in relevant):
        text += " !"
    return text


def _render(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), rule, *(line(row) for row in rows)])


def report(
    records: list[dict[str, Any]],
    pairs: Sequence[str],
    tests: Sequence[str],
    opts: Options,
    reference: str,
) -> str:
    by_rep: dict[int, dict[str, list[dict[str, Any]]]] = {}
    for r in records:
        by_rep.setdefault(r["rep"], {}).setdefault(r["pair"], []).append(r)
    ciphers = {r["pair"]: r["cipher"] for r in records if r.get("cipher")}
    out = []
    for table in columns(opts):
        shown = [c for c in table if any(t in tests for t in c.tests)]
        if not shown:
            continue
        header = ["pair", "cipher"] + [c.title for c in shown]
        rows = [
            [pair, ciphers.get(pair, "")] + [_cell(c, pair, by_rep, reference) for c in shown]
            for pair in pairs
            if any(pair in reps for reps in by_rep.values())
        ]
        if not rows:
            return "no results"
        out.append(_render(header, rows))
    problems = [
        f"- rep {r['rep']} {r['pair']} {r['test']}: {r['status'].upper()}: "
        + "; ".join(r["notes"]).replace("\n", "\n    ")
        for r in records
        if r["status"] != "ok" or r["notes"]
    ]
    if problems:
        out.append("Problems:\n" + "\n".join(problems))
    return "\n\n".join(out)
