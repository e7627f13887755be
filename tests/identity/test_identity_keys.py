"""Key handling against a real authority on loopback: rotation, outages, slow and broken responses."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.demo.tenants import CONTOSO_TENANT
from gateway.identity import AuthenticationError, Authenticator, Principal
from gateway.identity.devkeys import prune_keys
from gateway.identity.devtokens import sign_rs256, token_claims
from tests.identity.faults import FaultyAuthority
from tests.support.idp import DevIdP, running_dev_idp
from tests.support.poll import wait_until_async

COOLDOWN = 0.2
FAST: dict[str, Any] = {
    "unknown_kid_cooldown_seconds": COOLDOWN,
    "retry_min_seconds": 0.05,
    "retry_max_seconds": 0.5,
    "http_timeout_seconds": 5,
}


def bearer(token: str) -> bytes:
    return b"Bearer " + token.encode()


async def reason_of(auth: Authenticator, header: bytes) -> str:
    """The refusal reason; bounded, so a hang fails the test instead of blocking it."""
    try:
        await asyncio.wait_for(auth.authenticate(header), 30)
    except AuthenticationError as error:
        return error.reason
    return "accepted"


async def accepted_eventually(auth: Authenticator, header: bytes) -> Principal:
    async def attempt() -> Principal | None:
        try:
            return await auth.authenticate(header)
        except AuthenticationError as error:
            assert error.reason in ("unknown_kid", "keys_unavailable"), error.description
            return None

    return await wait_until_async(attempt, message="the token to be accepted")


@dataclass
class Authority:
    idp: DevIdP
    faults: FaultyAuthority


@pytest.fixture
def authority(tmp_path: Path) -> Iterator[Authority]:
    faults = FaultyAuthority(None)

    def wrap(app: Any) -> Any:
        faults.app = app
        return faults

    with running_dev_idp(tmp_path / "dev", wrap=wrap) as idp:
        yield Authority(idp, faults)


@pytest.fixture
def mirror(authority: Authority) -> Iterator[Authority]:
    """A second, well-behaved server with the same keys on another port: where a redirect or a foreign
    ``jwks_uri`` would lead. It counts requests, and must see none."""
    faults = FaultyAuthority(None)

    def wrap(app: Any) -> Any:
        faults.app = app
        return faults

    with running_dev_idp(authority.idp.dev_dir, wrap=wrap) as idp:
        yield Authority(idp, faults)


@pytest.fixture
async def auth(authority: Authority) -> AsyncIterator[Authenticator]:
    authenticator = Authenticator(authority.idp.settings(**FAST))
    await authenticator.start()
    assert await authenticator.wait_ready(15)
    yield authenticator
    await authenticator.close()


def forged_unknown_kid(idp: DevIdP, key: rsa.RSAPrivateKey, kid: str = "never-published") -> bytes:
    """A token naming a key the authority does not publish: each one presented forces a refresh."""
    claims = token_claims(CONTOSO_TENANT, authority=idp.url)
    return bearer(sign_rs256({"alg": "RS256", "kid": kid}, claims, key))


async def test_rotation_is_picked_up_without_restart(auth: Authenticator, authority: Authority) -> None:
    idp = authority.idp
    old_kid = idp.signing_kid
    old_token = bearer(idp.mint())
    assert (await auth.authenticate(old_token)).tenant
    async with aiohttp.ClientSession() as session, session.post(f"{idp.url}/_dev/rotate") as response:
        rotated = await response.json()
    assert rotated["signing_kid"] == rotated["kid"] != old_kid
    new_token = bearer(idp.mint())
    assert idp.signing_kid == rotated["kid"]
    await accepted_eventually(auth, new_token)  # a token signed with the rotated-in key
    assert await reason_of(auth, bearer(idp.mint(key_id=old_kid))) == "accepted"  # old key still published


async def test_unknown_kid_fetches_once_per_cooldown(
    authority: Authority, attacker_key: rsa.RSAPrivateKey
) -> None:
    cooldown = 2.0
    auth = Authenticator(authority.idp.settings(**{**FAST, "unknown_kid_cooldown_seconds": cooldown}))
    await auth.start()
    try:
        assert await auth.wait_ready(15)
        await asyncio.sleep(cooldown + 0.05)  # the start-up fetch counts against the cooldown too
        before = dict(authority.faults.requests)
        forged = [forged_unknown_kid(authority.idp, attacker_key, f"kid-{i}") for i in range(20)]
        started = asyncio.get_running_loop().time()
        reasons = await asyncio.gather(*(reason_of(auth, header) for header in forged))
        assert set(reasons) == {"unknown_kid"}
        # One refresh for all twenty: the v2 and v1 documents and key sets, once each.
        assert authority.faults.requests["metadata"] - before["metadata"] == 2
        assert authority.faults.requests["keys"] - before["keys"] == 2
        assert await reason_of(auth, forged[0]) == "unknown_kid"
        if asyncio.get_running_loop().time() - started < cooldown:
            assert authority.faults.requests["keys"] - before["keys"] == 2, (
                "a miss inside the cooldown fetched"
            )
        # ...but a miss during the cooldown schedules one refresh for when it ends.
        await wait_until_async(lambda: authority.faults.requests["keys"] - before["keys"] == 4,
                               message="one more refresh of both key sets when the cooldown ends")
    finally:
        await auth.close()


async def test_keys_survive_an_outage(auth: Authenticator, authority: Authority) -> None:
    idp = authority.idp
    token_before_rotation = bearer(idp.mint())  # never presented before: not in the cache
    idp.stop()
    assert await reason_of(auth, token_before_rotation) == "accepted"
    idp.rotate()
    token_new_key = bearer(idp.mint())
    await asyncio.sleep(COOLDOWN)
    assert await reason_of(auth, token_new_key) == "unknown_kid"  # refused, not hung
    assert auth.ready
    idp.start()
    await accepted_eventually(auth, token_new_key)


async def test_authority_down_from_the_start(authority: Authority) -> None:
    authority.idp.stop()
    auth = Authenticator(authority.idp.settings(**FAST))
    await auth.start()
    try:
        assert not auth.ready
        assert await reason_of(auth, bearer(authority.idp.mint())) == "keys_unavailable"
        authority.idp.start()
        assert await auth.wait_ready(30)
        assert await reason_of(auth, bearer(authority.idp.mint())) == "accepted"
    finally:
        await auth.close()


async def test_withdrawn_key_stops_its_cached_tokens(
    auth: Authenticator, authority: Authority, attacker_key: rsa.RSAPrivateKey
) -> None:
    idp = authority.idp
    old_token = bearer(idp.mint())
    await auth.authenticate(old_token)  # now cached
    idp.rotate()
    prune_keys(idp.dev_dir)  # the old key is no longer published
    await asyncio.sleep(COOLDOWN)
    assert await reason_of(auth, forged_unknown_kid(idp, attacker_key)) == "unknown_kid"  # forces a refresh
    assert await reason_of(auth, old_token) == "unknown_kid"


async def test_slow_key_endpoint_does_not_block_the_event_loop(authority: Authority) -> None:
    authority.faults.faults["keys"] = ("delay", 1.0)
    auth = Authenticator(authority.idp.settings(**FAST))
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticking = asyncio.ensure_future(ticker())
    try:
        await auth.start()
        assert await auth.wait_ready(30)
        assert authority.faults.requests["keys"] >= 2  # both key sets went through the delay
        # A loop blocked for the fetches would have ticked once or twice; a free one about 100 times.
        assert ticks >= 10, f"the event loop ticked only {ticks} times during a 1 s key fetch"
    finally:
        ticking.cancel()
        await auth.close()


async def test_key_fetch_beyond_the_timeout_is_abandoned(authority: Authority) -> None:
    authority.faults.faults["keys"] = ("delay", 2.0)
    auth = Authenticator(authority.idp.settings(**{**FAST, "http_timeout_seconds": 0.2}))
    await auth.start()
    try:
        assert await reason_of(auth, bearer(authority.idp.mint())) == "keys_unavailable"
        assert not auth.ready
    finally:
        await auth.close()


BROKEN_RESPONSES: dict[str, tuple[str, tuple[Any, ...]]] = {
    "garbage JSON keys": ("keys", ("garbage",)),
    "garbage JSON metadata": ("metadata", ("garbage",)),
    "HTTP 500": ("keys", ("status", 500)),
    "HTTP 404 metadata": ("metadata", ("status", 404)),
    "oversized keys with length": ("keys", ("huge", 200_000)),
    "oversized keys streamed": ("keys", ("huge_stream", 2_000_000)),
}


@pytest.mark.parametrize("case", list(BROKEN_RESPONSES))
async def test_broken_refresh_keeps_the_last_good_keys(
    case: str,
    auth: Authenticator,
    authority: Authority,
    attacker_key: rsa.RSAPrivateKey,
    caplog: pytest.LogCaptureFixture,
) -> None:
    kind, fault = BROKEN_RESPONSES[case]
    idp = authority.idp
    before = authority.faults.requests[kind]
    authority.faults.faults[kind] = fault
    await asyncio.sleep(COOLDOWN)
    with caplog.at_level(logging.WARNING, logger="gateway.identity"):
        assert await reason_of(auth, forged_unknown_kid(idp, attacker_key)) == "unknown_kid"
    assert authority.faults.requests[kind] > before, "the refresh did not reach the broken endpoint"
    assert "keeping the last good key set" in caplog.text
    assert auth.ready
    assert await reason_of(auth, bearer(idp.mint())) == "accepted"


@pytest.mark.parametrize("case", list(BROKEN_RESPONSES))
async def test_broken_authority_is_never_trusted(case: str, authority: Authority) -> None:
    kind, fault = BROKEN_RESPONSES[case]
    authority.faults.faults[kind] = fault
    auth = Authenticator(authority.idp.settings(**FAST, max_metadata_bytes=64 * 1024))
    await auth.start()
    try:
        await wait_until_async(lambda: authority.faults.requests[kind] >= 2, message=f"two requests for the {kind}")
        assert not auth.ready
        assert await reason_of(auth, bearer(authority.idp.mint())) == "keys_unavailable"
    finally:
        await auth.close()


@pytest.mark.parametrize("where", ["redirect", "jwks_uri"])
async def test_keys_come_only_from_the_authority(where: str, authority: Authority, mirror: Authority) -> None:
    """A redirect, or a discovery document naming a key set elsewhere, is refused even though the
    other place would serve perfectly good keys."""
    if where == "redirect":
        target = f"{mirror.idp.url}/{CONTOSO_TENANT}/discovery/v2.0/keys"
        authority.faults.faults["keys"] = ("redirect", target)
        kind = "keys"
    else:
        authority.faults.faults["metadata"] = ("jwks_uri", f"{mirror.idp.url}/common/discovery/v2.0/keys")
        kind = "metadata"
    auth = Authenticator(authority.idp.settings(**FAST))
    await auth.start()
    try:
        await wait_until_async(lambda: authority.faults.requests[kind] >= 4, message=f"four requests for the {kind}")
        assert not auth.ready
        assert await reason_of(auth, bearer(authority.idp.mint())) == "keys_unavailable"
        assert sum(mirror.faults.requests.values()) == 0
    finally:
        await auth.close()
