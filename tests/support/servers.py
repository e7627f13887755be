"""Real servers on loopback for tests: an ASGI app under uvicorn in a background thread.

Every server binds 127.0.0.1 on a port the kernel picks, and every wait is bounded in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Iterator
from typing import Any

import uvicorn

from tests.support.poll import wait_until


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ThreadedServer:
    """uvicorn serving ``app`` on 127.0.0.1 in its own thread and event loop."""

    def __init__(self, app: Any, port: int | None = None, **uvicorn_options: Any) -> None:
        self.port = port or free_port()
        options: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": self.port,
            "log_level": "warning",
            "lifespan": "auto",
            "loop": "asyncio",
            "http": "httptools",
        }
        options.update(uvicorn_options)
        self.config = uvicorn.Config(app, **options)
        self.server = uvicorn.Server(self.config)
        self.thread = threading.Thread(target=self._run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        asyncio.run(self.server.serve())

    def start(self, timeout: float = 10.0) -> ThreadedServer:
        self.thread.start()

        def started() -> bool:
            if not self.thread.is_alive():
                raise RuntimeError(f"server on port {self.port} stopped before it started")
            return self.server.started

        wait_until(started, timeout=timeout, interval=0.01, message=f"uvicorn on port {self.port} to start")
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)


@contextlib.contextmanager
def serve(app: Any, port: int | None = None, **uvicorn_options: Any) -> Iterator[ThreadedServer]:
    server = ThreadedServer(app, port, **uvicorn_options).start()
    try:
        yield server
    finally:
        server.stop()


def wait_for_port(port: int, timeout: float = 15.0) -> None:
    def accepts() -> bool:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True

    wait_until(accepts, timeout=timeout, ignoring=(OSError,), message=f"something listening on 127.0.0.1:{port}")
