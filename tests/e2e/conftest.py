from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.demo.upstream import create_upstream_app
from tests.support.echo_upstream import echo_upstream
from tests.support.idp import DevIdP, running_dev_idp
from tests.support.servers import ThreadedServer, serve
from tests.support.stack import Stack, running_gateway


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
    # Its hang and slow routes sleep for as long as a test asks: at the end, those are cut short
    # rather than waited for (uvicorn waits for every open request by default).
    with serve(echo_upstream, timeout_graceful_shutdown=1) as server:
        yield server


@pytest.fixture(scope="module")
def stack(idp: DevIdP, reference_upstream: ThreadedServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The gateway in front of the reference services (module-scoped: tests must not change it)."""
    audit = tmp_path_factory.mktemp("audit") / "audit.sqlite"
    with running_gateway(idp, reference_upstream.url, audit) as running:
        yield running


@pytest.fixture(scope="module")
def echo_stack(
    idp: DevIdP, echo_server: ThreadedServer, reference_upstream: ThreadedServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    """The gateway in front of the echo upstream (facts still resolved from the reference services)."""
    audit = tmp_path_factory.mktemp("audit") / "audit.sqlite"
    with running_gateway(
        idp, echo_server.url, audit, resolver_url=reference_upstream.url,
        GATEWAY_SERVER_MAX_BODY_BYTES=str(8 * 1024 * 1024),
        GATEWAY_UPSTREAM_READ_TIMEOUT_SECONDS="1.5",
    ) as running:
        yield running


@pytest.fixture
def fresh_audit(tmp_path: Path) -> Path:
    return tmp_path / "audit.sqlite"
