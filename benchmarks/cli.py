"""
Benchmark of SSH remote port forwarding (ssh -R) on loopback: OpenSSH, twisted-rfwd and the two
mixed pairs, driven by the same load generator against the same application server.

    load (this process) -> 127.0.0.1:LISTEN  [SSH server]  ==SSH==>  [SSH client] -> app server

Usage: python benchmarks/run.py [--pairs ...] [--reps N] [--duration S] [--conns N] [--conc N]
                                [--tests ...] [--json FILE] [--logdir DIR]
See benchmarks/README.md for what each test measures.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from benchmarks.loadgen import raise_nofile_limit
from benchmarks.pairs import DEFAULT_PAIRS, PAIRS, REFERENCE, PairSpec, start_instance
from benchmarks.report import report
from benchmarks.scenarios import TESTS, Options, run_test
from harness.keys import Keys, make_keys
from harness.plugins import CHECKOUT
from harness.processes import StartError, stop_all


def _names(text: str, known: Sequence[str], what: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown {what} {', '.join(unknown) or '(none)'}; choose from {', '.join(known)}"
        )
    return names


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    parser.add_argument(
        "--pairs",
        type=lambda t: _names(t, list(PAIRS), "pair"),
        default=DEFAULT_PAIRS,
        help=f"comma-separated, from {', '.join(PAIRS)} [default: {','.join(DEFAULT_PAIRS)}]",
    )
    parser.add_argument(
        "--tests",
        type=lambda t: _names(t, list(TESTS), "test"),
        default=list(TESTS),
        help=f"comma-separated, from {', '.join(TESTS)} [default: all]",
    )
    parser.add_argument("--reps", type=int, default=3, help="repetitions [default: 3]")
    parser.add_argument(
        "--ref",
        choices=list(PAIRS),
        default=REFERENCE,
        help=f"the pair the ratios compare with [default: {REFERENCE}]",
    )
    parser.add_argument(
        "--duration", type=float, default=4.0, help="seconds per bulk test [default: 4]"
    )
    parser.add_argument(
        "--conns", type=int, default=500, help="sequential connections of connrate [default: 500]"
    )
    parser.add_argument(
        "--conc", type=int, default=1000, help="connections held by conc [default: 1000]"
    )
    parser.add_argument(
        "--conc-inflight", type=int, default=50, help="conc's connects in flight [default: 50]"
    )
    parser.add_argument("--json", type=Path, help="append raw results (JSON lines) to this file")
    parser.add_argument("--logdir", type=Path, help="keep the processes' logs here")
    parser.add_argument(
        "--checkout",
        type=Path,
        default=CHECKOUT,
        help="the twisted-rfwd source tree whose plugins run [default: this one]",
    )
    return parser.parse_args(argv)


def _interrupt(signum: int, frame: object) -> NoReturn:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    opts = Options(args.duration, args.conns, args.conc, args.conc_inflight)
    pairs: list[str] = args.pairs
    tests: list[str] = args.tests
    checkout: Path = args.checkout.resolve()
    if not (checkout / "twisted_rfwd").is_dir():
        print(f"{checkout} holds no twisted_rfwd", file=sys.stderr)
        return 2
    limit = raise_nofile_limit()
    if "conc" in tests and opts.conc + 200 > limit:
        print(f"note: {opts.conc} connections need more than the {limit} file descriptors allowed")
    # Even when started in the background with SIGINT ignored: every way of stopping us cleans up.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)

    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    print(
        f"rfwd benchmark {started}: pairs {','.join(pairs)}; tests {','.join(tests)}; "
        f"{args.reps} reps; bulk {opts.duration:g} s; connrate {opts.conns}; "
        f"conc {opts.conc} ({opts.conc_inflight} in flight); rfwd from {checkout}",
        flush=True,
    )
    records: list[dict[str, Any]] = []
    tmp = Path(tempfile.mkdtemp(prefix="rfwd-bench-"))
    logdir: Path = args.logdir.resolve() if args.logdir else tmp / "logs"
    interrupted = False
    try:
        keys = make_keys(tmp / "keys", comment="rfwd-bench")
        serial = 0
        for rep in range(args.reps):
            order = pairs[rep % len(pairs) :] + pairs[: rep % len(pairs)]
            for test in tests:
                for pair in order:
                    serial += 1
                    workdir = logdir / f"{serial:03d}-rep{rep}-{test}-{pair.replace('>', '-to-')}"
                    record = _run_pair_test(PAIRS[pair], test, opts, keys, workdir, checkout)
                    record.update(rep=rep, pair=pair, test=test, started=started)
                    records.append(record)
                    print(_progress(record), flush=True)
    except KeyboardInterrupt:
        interrupted = True
        print("interrupted; results so far:", file=sys.stderr)
    finally:
        for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(number, signal.SIG_IGN)  # a second Ctrl-C must not leave processes
        stop_all()
        shutil.rmtree(tmp, ignore_errors=True)

    print()
    print(report(records, pairs, tests, opts, args.ref))
    print(
        f"\ncells: median over reps ({args.ref} = 1.00x: median of per-rep ratios); MB/s = 1e6 B/s"
    )
    if args.json:
        with open(args.json, "a") as f:
            run = {"type": "run", "started": started, "argv": list(argv), "python": sys.version}
            f.write(json.dumps(run) + "\n")
            for record in records:
                f.write(json.dumps({"type": "result", **record}) + "\n")
    return 130 if interrupted else 0


def _run_pair_test(
    spec: PairSpec, test: str, opts: Options, keys: Keys, workdir: Path, checkout: Path
) -> dict[str, Any]:
    try:
        inst = start_instance(spec, keys, workdir, checkout)
    except StartError as e:
        return {"status": "error", "metrics": {}, "notes": [f"start: {e}"], "cipher": ""}
    try:
        record = run_test(inst, test, opts)
        record["cipher"] = inst.cipher
        return record
    finally:
        inst.stop()
        time.sleep(0.2)


def _progress(record: dict[str, Any]) -> str:
    metrics = record["metrics"]
    shown = ", ".join(
        f"{k}={v:.0f}" if float(v).is_integer() else f"{k}={v:.4g}"
        for k, v in metrics.items()
        if not k.endswith(("_kib", "bytes", "fds_at_n"))
    )
    notes = f" [{'; '.join(record['notes'])[:200]}]" if record["notes"] else ""
    where = f"rep {record['rep']} {record['test']:<9} {record['pair']:<11}"
    return f"{where} {record['status']}:{' ' if shown else ''}{shown}{notes}"
