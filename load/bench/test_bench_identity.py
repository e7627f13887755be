"""Cost of authenticating one request: a cold verification (signature and claims) and a cached one.

Keys are fetched once over HTTP from a dev IdP on loopback, as in production; the timed part is
``Authenticator.authenticate`` alone, driven without an event loop round trip (with keys loaded it
never suspends), so the figures are the CPU cost a request pays.

    .venv/bin/pytest load/bench/test_bench_identity.py --benchmark-enable -p no:cacheprovider
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # tests.support is not on the path when pytest runs from load/
    sys.path.insert(0, str(ROOT))

from gateway.identity import Authenticator, Principal  # noqa: E402
from tests.support.idp import DevIdP, running_dev_idp  # noqa: E402


def complete(coroutine: Coroutine[Any, Any, Principal]) -> Principal:
    """Run a coroutine that must not suspend (keys are loaded): no event-loop overhead in the figure."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coroutine.close()
    raise AssertionError("authenticate suspended: keys were not loaded")


@pytest.fixture(scope="module")
def idp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevIdP]:
    with running_dev_idp(tmp_path_factory.mktemp("idp")) as running:
        yield running


def ready_authenticator(idp: DevIdP, **settings: Any) -> tuple[Authenticator, asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    auth = Authenticator(idp.settings(**settings))
    loop.run_until_complete(auth.start())
    assert loop.run_until_complete(auth.wait_ready(30))
    return auth, loop


def close(auth: Authenticator, loop: asyncio.AbstractEventLoop) -> None:
    loop.run_until_complete(auth.close())
    loop.close()


def test_cold_verification(benchmark: Any, idp: DevIdP) -> None:
    """Cache disabled: every call parses, checks the RS256 signature and all claims."""
    auth, loop = ready_authenticator(idp, token_cache_size=0)
    header = b"Bearer " + idp.mint(roles=["Support.Agent"]).encode()
    try:
        principal = benchmark(lambda: complete(auth.authenticate(header)))
        assert principal.roles == ("Support.Agent",)
    finally:
        close(auth, loop)


def test_cold_verification_fresh_tokens(benchmark: Any, idp: DevIdP) -> None:
    """Cache on, but a token never seen before each round (the first request of each client)."""
    auth, loop = ready_authenticator(idp)
    headers = iter([b"Bearer " + idp.mint(user=f"user{i}").encode() for i in range(600)])
    try:
        benchmark.pedantic(lambda: complete(auth.authenticate(next(headers))), rounds=500, iterations=1)
    finally:
        close(auth, loop)


def test_cached_verification(benchmark: Any, idp: DevIdP) -> None:
    """The same token again: size and structure checks, a SHA-256 and a dictionary lookup."""
    auth, loop = ready_authenticator(idp)
    header = b"Bearer " + idp.mint(roles=["Support.Agent"]).encode()
    try:
        first = complete(auth.authenticate(header))
        assert benchmark(lambda: complete(auth.authenticate(header))) is first
    finally:
        close(auth, loop)


def test_mint_token(benchmark: Any, idp: DevIdP) -> None:
    """What the load harness pays per minted token (an RSA 2048 signature)."""
    benchmark(lambda: idp.mint(roles=["Analyst"]))
