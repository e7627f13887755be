"""The whole stack in one test process: dev IdP, an upstream, and the real gateway, on loopback.

Each part is a real uvicorn server on its own port and thread; the gateway is built by the same
``build_gateway`` that ``gateway serve`` uses, from configuration given as ``GATEWAY_*`` variables.
``http()`` speaks HTTP/1.1 over a plain socket (http.client) so tests see exactly what a client sees.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway import cliconfig
from gateway.demo.tenants import CONTOSO_TENANT
from gateway.serve import build_gateway, uvicorn_options
from tests.support.idp import DevIdP
from tests.support.poll import wait_until
from tests.support.servers import ThreadedServer


@dataclass
class Reply:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        values = self.headers_named(name)
        return values[0] if values else None

    def headers_named(self, name: str) -> list[str]:
        lowered = name.lower()
        return [v for n, v in self.headers if n.lower() == lowered]

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Stack:
    idp: DevIdP
    upstream_url: str
    gateway: ThreadedServer
    audit_path: Path
    app: Any
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.gateway.url

    @property
    def port(self) -> int:
        return self.gateway.port

    def mint(self, tenant: str = CONTOSO_TENANT, **options: Any) -> str:
        return self.idp.mint(tenant, **options)

    def http(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        purpose: str | None = None,
        headers: Mapping[str, str] | list[tuple[str, str]] | None = None,
        body: bytes | None = None,
        timeout: float = 30.0,
    ) -> Reply:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.putrequest(method, path, skip_accept_encoding=True)
            if token is not None:
                conn.putheader("Authorization", f"Bearer {token}")
            if purpose is not None:
                conn.putheader("X-Purpose", purpose)
            items = list(headers.items()) if isinstance(headers, Mapping) else list(headers or [])
            for name, value in items:
                conn.putheader(name, value)
            if body is not None and not any(n.lower() in ("content-length", "transfer-encoding") for n, _ in items):
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body)
            response = conn.getresponse()
            return Reply(response.status, response.getheaders(), response.read())
        finally:
            conn.close()

    def wait_ready(self, timeout: float = 20.0) -> None:
        last: list[Reply] = []

        def ready() -> bool:
            last[:] = [self.http("GET", "/readyz", timeout=2)]
            return last[0].status == 200

        wait_until(ready, timeout=timeout, ignoring=(OSError,),
                   message=lambda: f"the gateway to be ready (last /readyz: {last[0].body if last else None!r})")


@dataclass(frozen=True)
class ListeningAt:
    """Where a gateway started as a separate process listens (stands in for the in-thread server)."""

    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def process_stack(idp: DevIdP, port: int, upstream_url: str, audit_path: Path) -> Stack:
    """A ``Stack`` for a gateway running as its own process on ``port``."""
    return Stack(idp=idp, upstream_url=upstream_url, gateway=ListeningAt(port), audit_path=audit_path,  # type: ignore[arg-type]
                 app=None)


def gateway_env(idp: DevIdP, upstream_url: str, audit_path: Path, **overrides: str) -> dict[str, str]:
    env = {
        "GATEWAY_UPSTREAM_URL": upstream_url,
        "GATEWAY_IDENTITY_AUTHORITY": idp.url,
        "GATEWAY_AUDIT_PATH": str(audit_path),
        "GATEWAY_POLICIES_RESOLVER_URL": upstream_url,
    }
    env.update(overrides)
    return env


@contextlib.contextmanager
def running_gateway(
    idp: DevIdP, upstream_url: str, audit_path: Path, *, resolver_url: str | None = None, audit: Any = None,
    **overrides: str,
) -> Iterator[Stack]:
    """``audit``: an ``AuditSink`` to use instead of the SQLite audit log (e.g. ``MemorySink``)."""
    env = gateway_env(idp, upstream_url, audit_path, **overrides)
    if resolver_url:
        env["GATEWAY_POLICIES_RESOLVER_URL"] = resolver_url
    config = cliconfig.load(None, environ=env)
    app = build_gateway(config)
    if audit is not None:
        app.audit = audit
    options = uvicorn_options(config, app.protocol_refusal)
    for key in ("host", "port", "loop", "log_level"):
        options.pop(key)
    options["timeout_graceful_shutdown"] = 5
    server = ThreadedServer(app, **options).start()
    stack = Stack(idp=idp, upstream_url=upstream_url, gateway=server, audit_path=audit_path, app=app, env=env)
    try:
        stack.wait_ready()
        yield stack
    finally:
        server.stop()


def raw_exchange(port: int, data: bytes, timeout: float = 10.0, read_limit: int = 1 << 20) -> bytes:
    """Send raw bytes on a fresh connection (from a thread, so a server that answers early is read
    while the client still sends) and return everything read until close, reset or timeout."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:

        def sender() -> None:
            with contextlib.suppress(OSError):
                sock.sendall(data)

        thread = threading.Thread(target=sender, daemon=True)
        thread.start()
        chunks: list[bytes] = []
        total = 0
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and total < read_limit:
            try:
                chunk = sock.recv(65536)
            except (TimeoutError, ConnectionResetError):
                break
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        thread.join(timeout)
        return b"".join(chunks)
