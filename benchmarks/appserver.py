"""
The benchmark's application server: a separate process (C{python -m benchmarks.appserver}),
single-threaded on selectors so that 10,000 held connections cost it nothing but sockets.

It speaks modes E (echo), V (verified upload) and S (timed stream) of L{harness.application}.
"""

from __future__ import annotations

import selectors
import signal
import socket
import time
from typing import NoReturn

from harness.application import (
    CHUNK,
    FRAME,
    MODE_ECHO,
    MODE_STREAM,
    MODE_VERIFY,
    STREAM_MILLISECONDS,
    STREAM_TOTAL,
    VERIFY_REPLY,
    pattern_stream,
)
from harness.ports import LOOPBACK

LISTENING = r"app server listening on (\d+)"
"""What the app server prints once it accepts connections; group 1 is its port."""


class _AppConnection:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.state = "header"  # header, echo, verify, stream, closing
        self.header = b""
        self.out: list[memoryview] = []
        self.offset = 0  # bytes of pattern received (verify) or sent (stream)
        self.bad_at = -1
        self.deadline = 0.0
        self.events = selectors.EVENT_READ
        self.closed = False


class AppServer:
    def __init__(self) -> None:
        self.selector = selectors.DefaultSelector()
        self.listener = socket.create_server((LOOPBACK, 0), backlog=4096)
        self.listener.setblocking(False)
        self.selector.register(self.listener, selectors.EVENT_READ, None)
        self.buffer = memoryview(bytearray(CHUNK))
        self.pattern = pattern_stream()

    @property
    def port(self) -> int:
        port: int = self.listener.getsockname()[1]
        return port

    def serve_forever(self) -> NoReturn:
        while True:
            for key, events in self.selector.select():
                if key.data is None:
                    self._accept()
                    continue
                conn: _AppConnection = key.data
                try:
                    if events & selectors.EVENT_READ:
                        self._readable(conn)
                    if events & selectors.EVENT_WRITE and not conn.closed:
                        self._writable(conn)
                except OSError:
                    self._close(conn)

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except BlockingIOError:
                return
            except OSError:  # EMFILE and friends: let the backlog wait a little
                time.sleep(0.01)
                return
            sock.setblocking(False)
            conn = _AppConnection(sock)
            self.selector.register(sock, conn.events, conn)

    def _want(self, conn: _AppConnection, events: int) -> None:
        if conn.events != events:
            conn.events = events
            self.selector.modify(conn.sock, events, conn)

    def _close(self, conn: _AppConnection) -> None:
        if not conn.closed:
            conn.closed = True
            self.selector.unregister(conn.sock)
            conn.sock.close()

    def _send(self, conn: _AppConnection) -> bool:
        """Send what is queued; True once all of it has gone."""
        while conn.out:
            try:
                sent = conn.sock.sendmsg(conn.out)
            except BlockingIOError:
                return False
            while sent:
                first = conn.out[0]
                if sent >= len(first):
                    sent -= len(first)
                    conn.out.pop(0)
                else:
                    conn.out[0] = first[sent:]
                    sent = 0
        return True

    def _flush(self, conn: _AppConnection) -> None:
        """Send what is queued; stop reading while it cannot go, close once flushed if done."""
        if not self._send(conn):
            self._want(conn, selectors.EVENT_WRITE)
        elif conn.state == "closing":
            self._close(conn)
        else:
            self._want(conn, selectors.EVENT_READ)

    def _readable(self, conn: _AppConnection) -> None:
        if conn.state == "header":
            self._read_header(conn)
        elif conn.state == "echo":
            data = conn.sock.recv(65536)
            if not data:
                conn.state = "closing"
            else:
                conn.out.append(memoryview(data))
            self._flush(conn)
        elif conn.state == "verify":
            n = conn.sock.recv_into(self.buffer, CHUNK)
            if n == 0:
                ok = conn.bad_at < 0
                conn.out = [memoryview(VERIFY_REPLY.pack(conn.offset, int(ok), conn.bad_at))]
                conn.state = "closing"
                self._flush(conn)
                return
            if conn.bad_at < 0 and not self.pattern.matches(conn.offset, self.buffer[:n]):
                conn.bad_at = conn.offset
            conn.offset += n
        elif not conn.sock.recv(65536):  # stream: the client has nothing to say but EOF
            self._close(conn)

    def _read_header(self, conn: _AppConnection) -> None:
        need = 1 + STREAM_MILLISECONDS.size if conn.header[:1] == MODE_STREAM else 1
        data = conn.sock.recv(need - len(conn.header))
        if not data:
            self._close(conn)
            return
        conn.header += data
        mode = conn.header[:1]
        if mode == MODE_ECHO:
            conn.state = "echo"
            # The mode byte is echoed too, in one send with the first data that follows it.
            conn.out.append(memoryview(MODE_ECHO))
        elif mode == MODE_VERIFY:
            conn.state = "verify"
        elif mode == MODE_STREAM:
            if len(conn.header) == 1 + STREAM_MILLISECONDS.size:
                (milliseconds,) = STREAM_MILLISECONDS.unpack_from(conn.header, 1)
                conn.deadline = time.monotonic() + milliseconds / 1000
                conn.state = "stream"
                self._want(conn, selectors.EVENT_WRITE)
        else:
            self._close(conn)

    def _writable(self, conn: _AppConnection) -> None:
        budget = 16 * CHUNK  # then let other connections have a turn
        while conn.state == "stream" and budget > 0:
            if not conn.out:
                if time.monotonic() < conn.deadline:
                    conn.out = [
                        memoryview(FRAME.pack(CHUNK)),
                        self.pattern.window(conn.offset, CHUNK),
                    ]
                    conn.offset += CHUNK
                    budget -= CHUNK
                else:
                    end = FRAME.pack(0) + STREAM_TOTAL.pack(conn.offset)
                    conn.out = [memoryview(end)]
                    conn.state = "closing"
            if not self._send(conn):
                return
        if conn.state != "stream":  # stream with budget spent: stay registered for writing
            self._flush(conn)


def main() -> NoReturn:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the benchmark process stops us
    server = AppServer()
    print(f"app server listening on {server.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
