"""An upstream that misbehaves below HTTP on purpose, on loopback, by the last path segment.

- ``reset-early``: reads the request head, then resets the connection (RST) without answering.
- ``close-early``: reads the head, then closes (FIN) without answering.
- ``reset-mid``: 200 with ``Content-Length: 1000000``, 64 KiB of it, then RST.
- ``stall-body``: 200 with ``Content-Length: 1000``, 10 bytes, then silence until the peer gives up.
- ``hang``: reads the head and never answers.
- ``garbage``: answers bytes that are not HTTP.
- ``bad-length``: ``Content-Length: abc``.
- ``huge-head``: a 256 KiB header line.
- anything else: ``200 {"ok": true}`` (keep-alive).

Every accepted request is counted by mode. Threads only; every wait is bounded by ``limit`` seconds.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Iterator


class RawUpstream:
    def __init__(self, limit: float = 30.0) -> None:
        self.limit = limit
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.requests: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._acceptor = threading.Thread(target=self._accept, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> RawUpstream:
        self._acceptor.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._acceptor.join(5)
        self.listener.close()
        for thread in self._threads:
            thread.join(2)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(self.limit)
        with conn:
            buffered = b""
            while not self._stop.is_set():
                while b"\r\n\r\n" not in buffered:
                    try:
                        chunk = conn.recv(65536)
                    except OSError:
                        return
                    if not chunk:
                        return
                    buffered += chunk
                head, _, buffered = buffered.partition(b"\r\n\r\n")
                target = head.split(b"\r\n", 1)[0].split(b" ")[1].decode("latin-1")
                mode = target.split("?")[0].rstrip("/").rsplit("/", 1)[-1]
                with self._lock:
                    self.requests[mode] += 1
                if not self._answer(conn, mode):
                    return

    def _answer(self, conn: socket.socket, mode: str) -> bool:
        """Answer one request; False = the connection is finished."""
        if mode == "reset-early":
            _reset(conn)
            return False
        if mode == "close-early":
            return False
        if mode == "reset-mid":
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n\r\n")
            conn.sendall(b"r" * 65536)
            time.sleep(0.05)
            _reset(conn)
            return False
        if mode == "stall-body":
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n0123456789")
            self._wait_for_close(conn)
            return False
        if mode == "hang":
            self._wait_for_close(conn)
            return False
        if mode == "garbage":
            conn.sendall(b"\x00\x01\x02 this is not HTTP \xff\xfe\r\n\r\n")
            return False
        if mode == "bad-length":
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: abc\r\n\r\n{}")
            return False
        if mode == "huge-head":
            conn.sendall(b"HTTP/1.1 200 OK\r\nX-Huge: " + b"h" * (256 * 1024) + b"\r\nContent-Length: 2\r\n\r\n{}")
            return False
        # a record the gateway may pass on (routes whose map reads its creation time)
        body = b'{"ok": true, "created_at": "%s"}' % time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()).encode()
        head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
        conn.sendall(head + body)
        return True

    def _wait_for_close(self, conn: socket.socket) -> None:
        conn.settimeout(0.2)
        end = time.monotonic() + self.limit
        while time.monotonic() < end and not self._stop.is_set():
            try:
                if not conn.recv(65536):
                    return
            except TimeoutError:
                continue
            except OSError:
                return


def _reset(conn: socket.socket) -> None:
    with contextlib.suppress(OSError):
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


@contextlib.contextmanager
def raw_upstream(limit: float = 30.0) -> Iterator[RawUpstream]:
    server = RawUpstream(limit).start()
    try:
        yield server
    finally:
        server.stop()
