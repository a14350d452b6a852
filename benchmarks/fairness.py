"""
Fairness between the users of one rfwd-server: how much another connection's load slows a
well-behaved user's tunnel, by the maximum packet size that connection announces.

    echo (this process) -> good forward  [rfwd-server]  ==SSH==> rfwd-client     -> app server
    load (this process) -> other forward [rfwd-server]  ==SSH==> loader client   -> app server

The loader client (this script, run with --loader-client) logs in like rfwd-client and confirms
its forwarded-tcpip channels announcing --max-packet bytes; threads here push the benchmark
pattern into its forward without pause.  For each load the median time of a 1 MiB echo through
the good forward is compared with the median without load.

Usage: python benchmarks/fairness.py [--loads 32768,1024,1] [--echoes 7] [--size BYTES]
                                     [--checkout DIR] [--logdir DIR]
A load of 32768 is what OpenSSH, Go, Paramiko and rfwd announce: the cost of a heavy but normal
user, the fair-share reference.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

# Run as a script, as run.py is: the package path mypy also uses, after the checkout under test.
sys.path.append(str(Path(__file__).resolve().parent.parent))
from benchmarks.appserver import LISTENING as APP_LISTENING
from benchmarks.loadgen import raise_nofile_limit
from benchmarks.pairs import PairSpec, start_instance
from harness.application import CHUNK, MODE_ECHO, MODE_VERIFY, pattern_stream
from harness.keys import Keys, make_keys
from harness.plugins import CHECKOUT, SERVER_LISTENING, plugin_env
from harness.ports import LOOPBACK, free_port
from harness.processes import Child, StartError, stop_all

LOADERS = 2  # threads pushing into the loader's forward at once


def loader_client_main(args: argparse.Namespace) -> NoReturn:
    """Log in, ask for one forward, then confirm channels with a --max-packet of our choice."""
    from twisted.internet import reactor

    # Here, not at the top: only the loader needs it, from the checkout under test (PYTHONPATH).
    from twisted_rfwd import (  # noqa: PLC0415
        ClientConfig,
        HostKeyPolicy,
        RemoteForward,
        connect,
        load_identity,
    )

    config = ClientConfig(
        host=LOOPBACK,
        user=args.user,
        port=args.ssh_port,
        forwards=[RemoteForward(args.listen_port, LOOPBACK, args.app_port, LOOPBACK)],
        identities=[load_identity(args.key)],
        strict_host_key_checking=HostKeyPolicy.NO,
        known_hosts=[args.known_hosts],
        reconnect=False,
    )

    def ready(tunnel: Any) -> None:
        # rfwd-client announces 32 KiB (128 KiB to rfwd): a hostile client announces anything.
        tunnel.connection._max_packet = args.max_packet
        print(f"loader ready, announcing {args.max_packet}-byte packets", flush=True)

    def failed(failure: Any) -> None:
        print(f"loader failed: {failure.getErrorMessage()}", flush=True)
        reactor.stop()

    connect(reactor, config).addCallbacks(ready, failed)
    reactor.run()
    sys.exit(1)


@dataclass
class Load:
    """Threads pushing the pattern into a forward, reconnecting whenever it is closed."""

    port: int
    stop: threading.Event
    pushed: int = 0
    connections: int = 0
    closed_by_server: int = 0

    def run(self) -> None:
        stream = pattern_stream()
        while not self.stop.is_set():
            try:
                with socket.create_connection((LOOPBACK, self.port), 5.0) as s:
                    self.connections += 1
                    s.settimeout(0.5)
                    s.sendall(MODE_VERIFY)
                    offset = 0
                    while not self.stop.is_set():
                        try:
                            n = s.send(stream.window(offset, CHUNK))
                        except TimeoutError:
                            continue
                        offset += n
                        self.pushed += n
            except OSError:
                self.closed_by_server += 1
                time.sleep(0.01)


def echo_seconds(port: int, payload: bytes) -> float:
    """Time of one echo of C{payload} through C{port}; every byte is checked."""
    request = MODE_ECHO + payload  # the mode byte comes back too
    with socket.create_connection((LOOPBACK, port), 10.0) as s:
        s.settimeout(60.0)
        start = time.monotonic()
        sender = threading.Thread(target=s.sendall, args=(request,))
        sender.start()
        received = bytearray()
        while len(received) < len(request):
            chunk = s.recv(CHUNK)
            if not chunk:
                break
            received += chunk
        elapsed = time.monotonic() - start
        sender.join()
    if received != request:
        raise RuntimeError(f"echo came back wrong ({len(received)} of {len(request)} bytes)")
    return elapsed


def measure(port: int, payload: bytes, echoes: int) -> float:
    echo_seconds(port, payload)  # warm up
    return statistics.median(echo_seconds(port, payload) for _ in range(echoes))


def start_loader(
    keys: Keys, workdir: Path, checkout: Path, ssh_port: int, app_port: int, max_packet: int
) -> tuple[Child, int]:
    listen_port = free_port()
    argv = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--loader-client",
        "--ssh-port",
        str(ssh_port),
        "--listen-port",
        str(listen_port),
        "--app-port",
        str(app_port),
        "--max-packet",
        str(max_packet),
        "--key",
        str(keys.user_key),
        "--user",
        keys.user,
        "--known-hosts",
        str(workdir / f"known_hosts_loader_{max_packet}"),
    ]
    log = workdir / f"loader-{max_packet}.log"
    child = Child(f"loader-{max_packet}", argv, log, plugin_env(checkout))
    child.wait_for(r"loader ready")
    return child, listen_port


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    parser.add_argument(
        "--loads",
        default="32768,1024,1",
        help="maximum packets the loading client announces [default: 32768,1024,1]",
    )
    parser.add_argument("--echoes", type=int, default=7, help="echoes per measurement")
    parser.add_argument("--size", type=int, default=1 << 20, help="bytes per echo [1 MiB]")
    parser.add_argument("--checkout", type=Path, default=CHECKOUT)
    parser.add_argument("--logdir", type=Path, help="keep the processes' logs here")
    loader = parser.add_argument_group("loader client (internal)")
    loader.add_argument("--loader-client", action="store_true", help=argparse.SUPPRESS)
    for name in ("--ssh-port", "--listen-port", "--app-port", "--max-packet"):
        loader.add_argument(name, type=int, help=argparse.SUPPRESS)
    for name in ("--key", "--user", "--known-hosts"):
        loader.add_argument(name, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def _interrupt(signum: int, frame: object) -> NoReturn:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    if args.loader_client:
        loader_client_main(args)
    checkout: Path = args.checkout.resolve()
    loads = [int(x) for x in args.loads.split(",") if x.strip()]
    payload = bytes(pattern_stream().window(0, min(args.size, CHUNK)))
    payload = (payload * (args.size // len(payload) + 1))[: args.size]
    raise_nofile_limit()
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    tmp = Path(tempfile.mkdtemp(prefix="rfwd-fairness-"))
    workdir: Path = args.logdir.resolve() if args.logdir else tmp / "logs"
    workdir.mkdir(parents=True, exist_ok=True)
    rows: list[tuple[str, float, float, str]] = []
    print(f"rfwd fairness: {args.size} B echoes, median of {args.echoes}; rfwd from {checkout}")
    try:
        keys = make_keys(tmp / "keys", comment="rfwd-bench")
        inst = start_instance(PairSpec("rfwd", "rfwd", "rfwd"), keys, workdir / "pair", checkout)
        assert inst.server is not None
        ssh_port = int(inst.server.wait_for(SERVER_LISTENING).group(1))
        app_port = int(inst.app.wait_for(APP_LISTENING).group(1))
        base = measure(inst.listen_port, payload, args.echoes)
        rows.append(("none", base, 1.0, ""))
        print(f"  no load: {base * 1000:.1f} ms", flush=True)
        for max_packet in loads:
            loader, port = start_loader(keys, workdir, checkout, ssh_port, app_port, max_packet)
            load = Load(port, threading.Event())
            threads = [threading.Thread(target=load.run) for _ in range(LOADERS)]
            for t in threads:
                t.start()
            time.sleep(1.0)  # let the load reach its steady state
            started, pushed = time.monotonic(), load.pushed
            try:
                loaded = measure(inst.listen_port, payload, args.echoes)
            finally:
                rate = (load.pushed - pushed) / (time.monotonic() - started) / 1e6
                load.stop.set()
                for t in threads:
                    t.join()
                loader.stop()
            note = f"{rate:.1f} MB/s pushed, {load.connections} connections"
            if load.closed_by_server:
                note += f", {load.closed_by_server} closed by the server"
            rows.append((f"{max_packet} B", loaded, loaded / base, note))
            print(f"  max packet {max_packet}: {loaded * 1000:.1f} ms ({note})", flush=True)
    except (KeyboardInterrupt, StartError) as e:
        print(f"stopped: {e}", file=sys.stderr)
        return 1
    finally:
        stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    print()
    print("| other user's max packet | 1 MiB echo (median) | vs no load | other user's load |")
    print("|---|---|---|---|")
    for name, seconds, ratio, note in rows:
        print(f"| {name} | {seconds * 1000:.1f} ms | {ratio:.2f}x | {note} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
