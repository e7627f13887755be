from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.demo.upstream import create_upstream_app
from tests.hostile.support import Counting, Ledger, tally_path, write_tally
from tests.support.echo_upstream import echo_upstream
from tests.support.idp import DevIdP, running_dev_idp
from tests.support.servers import ThreadedServer, serve


@pytest.fixture(scope="module")
def idp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevIdP]:
    with running_dev_idp(tmp_path_factory.mktemp("dev")) as server:
        yield server


@pytest.fixture(scope="module")
def reference() -> Iterator[tuple[ThreadedServer, Counting]]:
    """The reference services behind a request counter."""
    counting = Counting(create_upstream_app())
    with serve(counting) as server:
        yield server, counting


@pytest.fixture(scope="module")
def echo() -> Iterator[tuple[ThreadedServer, Counting]]:
    counting = Counting(echo_upstream)
    with serve(counting) as server:
        yield server, counting


def _tally_root(factory: pytest.TempPathFactory) -> Path:
    base = factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="module")
def ledger(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ledger]:
    book = Ledger(request.module.__name__.rsplit(".", 1)[-1])
    yield book
    write_tally(tally_path(_tally_root(tmp_path_factory)), book.summary())
    assert book.lost == 0, f"{book.lost} audit records lost in {book.area}"
    assert not book.wrong_allows, f"wrong allows in {book.area}: {book.wrong_allows}"


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    factory = getattr(config, "_tmp_path_factory", None)
    if factory is None:
        return
    path = tally_path(_tally_root(factory))
    if not path.exists():
        return
    from tests.hostile.tally import render

    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    terminalreporter.write_sep("-", "hostile input and faults: tally")
    terminalreporter.write_line(render(rows))
