"""HTTP/1.1 connections to a uvicorn protocol in-process, on fake time.

The protocol is built as uvicorn's server builds one for each accepted socket (``Config.load()``, then
``config.http_protocol_class(config=..., server_state=..., app_state=..., _loop=...)``), so whatever
``http=`` names, and whatever uvicorn wraps the app in, is what runs. In place of a socket it gets a
``MemoryTransport`` that keeps what it writes and models what the tests rely on: ``close()`` reports
``connection_lost`` on the next loop turn, and bytes sent while reading is paused wait until it resumes.

The loop is looptime's: its clock moves only when every task waits for a timer, and then jumps to
that timer, so a client that stalls for ten seconds costs no wall time and the protocol's timers fire
in their true order. ``in_fake_time`` runs an ``async def`` test in such a loop. A test waiting for
what never comes fails fast: a loop idle with no timer pending within a second, a test still running
at a fake hour at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import looptime
import uvicorn
from uvicorn.server import ServerState

from tests.hostile.support import RawReply, parse_replies

PEER = ("203.0.113.7", 40123)

_UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")


def in_fake_time(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run the ``async def`` test in a fresh looptime loop whose clock starts at 0."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        loop = looptime.new_event_loop(start=0.0, end=3600.0, idle_timeout=1.0)
        try:
            loop.run_until_complete(test(*args, **kwargs))
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    return run


@contextlib.contextmanager
def uvicorn_log_levels_kept() -> Iterator[None]:
    """``uvicorn.Config(log_level=...)`` sets its loggers' levels process-wide: put them back after."""
    levels = {name: logging.getLogger(name).level for name in _UVICORN_LOGGERS}
    try:
        yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def uvicorn_config(app: Any, **options: Any) -> uvicorn.Config:
    """A loaded uvicorn configuration (no logging configuration of its own: the tests' is kept)."""
    options.setdefault("lifespan", "off")
    options.setdefault("log_config", None)
    config = uvicorn.Config(app, **options)
    config.load()
    return config


class MemoryTransport(asyncio.Transport):
    def __init__(self, loop: asyncio.AbstractEventLoop, protocol: asyncio.Protocol) -> None:
        super().__init__()
        self._loop = loop
        self._protocol = protocol
        self.written = bytearray()
        self.written_after_close = 0
        self.closing = False
        self.closed = asyncio.Event()
        self.reading = True
        self._inbox: list[bytes] = []

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": PEER, "sockname": ("127.0.0.1", 8080)}.get(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.closing:
            self.written_after_close += len(data)
            return
        self.written += data

    def close(self) -> None:
        if not self.closing:
            self.closing = True
            self._loop.call_soon(self._lost)

    def abort(self) -> None:
        self.close()

    def _lost(self) -> None:
        self._protocol.connection_lost(None)
        self.closed.set()

    def is_closing(self) -> bool:
        return self.closing

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True
        self._loop.call_soon(self._deliver)

    def is_reading(self) -> bool:
        return self.reading

    def get_write_buffer_size(self) -> int:
        return 0

    def receive(self, data: bytes) -> None:
        self._inbox.append(data)
        self._deliver()

    def _deliver(self) -> None:
        while self._inbox and self.reading and not self.closing:
            self._protocol.data_received(self._inbox.pop(0))


class Connection:
    """One client connection to a protocol built from ``config`` (which must be loaded)."""

    def __init__(self, config: uvicorn.Config, state: ServerState | None = None) -> None:
        loop = asyncio.get_running_loop()
        self.protocol: Any = config.http_protocol_class(  # type: ignore[call-arg]
            config=config, server_state=state or ServerState(), app_state={}, _loop=loop
        )
        self.transport = MemoryTransport(loop, self.protocol)
        self.protocol.connection_made(self.transport)

    def send(self, data: bytes) -> None:
        """What the client writes (not read by the protocol while it has paused reading)."""
        assert not self.transport.closing, "the server closed the connection"
        self.transport.receive(data)

    async def closed(self) -> None:
        await self.transport.closed.wait()

    @property
    def is_closed(self) -> bool:
        return self.transport.closing

    @property
    def replies(self) -> list[RawReply]:
        return parse_replies(bytes(self.transport.written))
