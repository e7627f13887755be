"""Resolvers against real HTTP servers on loopback: the reference services, and broken ones."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import datetime

import aiohttp
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.adapters.routemap import FactRule, Pointer
from gateway.authz.errors import ResolverError
from gateway.authz.resolvers import Resolvers
from gateway.demo.fixtures import OLD_CALL_AGES
from gateway.demo.upstream import create_upstream_app
from tests.authz.support import USER_1, USER_2, A, B
from tests.support.clock import rfc3339_in
from tests.support.servers import ThreadedServer, free_port, serve


@pytest.fixture(scope="module")
def upstream() -> Iterator[ThreadedServer]:
    with serve(create_upstream_app()) as server:
        yield server


def counting_app(status: int = 200, delay: float = 0.0) -> tuple[Starlette, list[str]]:
    calls: list[str] = []

    async def tenant(request: Request) -> Response:
        calls.append(request.url.path)
        if delay:
            await asyncio.sleep(delay)
        if status != 200:
            return Response("broken", status_code=status)
        return JSONResponse({"id": request.path_params["tid"], "call_recording_enabled": True})

    return Starlette(routes=[Route("/tenants/{tid}", tenant)]), calls


async def test_tenant_settings_and_optouts_from_the_reference_services(upstream: ThreadedServer) -> None:
    resolvers = Resolvers(upstream.url)
    await resolvers.start()
    try:
        assert (await resolvers.tenant_settings(A) or {})["call_recording_enabled"] is True
        assert (await resolvers.tenant_settings(B) or {})["call_recording_enabled"] is False
        assert await resolvers.tenant_settings("00000000-0000-4000-8000-000000000000") is None
        assert "optout@example.com" in (await resolvers.optouts(A) or frozenset())
    finally:
        await resolvers.close()


async def test_consents_are_fetched_and_missing_ones_are_none(upstream: ThreadedServer) -> None:
    expires_at = rfc3339_in(days=365)
    async with aiohttp.ClientSession() as session:
        answer = await session.post(
            f"{upstream.url}/consents",
            json={
                "grantee": USER_1,
                "resources": ["m1", "m2"],
                "purpose": "essential.service",
                "expires_at": expires_at,
            },
            headers={"X-Gateway-Tenant": A, "X-Gateway-Principal": USER_2},
        )
        assert answer.status == 201
        consent_id = (await answer.json())["id"]
    resolvers = Resolvers(upstream.url)
    await resolvers.start()
    try:
        consent = await resolvers.consent(consent_id)
        assert consent is not None
        assert (consent.subject, consent.tenant, consent.grantee) == (USER_2, A, USER_1)
        assert consent.resources == frozenset({"m1", "m2"})
        assert consent.expires_at == int(datetime.fromisoformat(expires_at).timestamp())
        assert await resolvers.consent("no-such-consent") is None
    finally:
        await resolvers.close()


async def test_values_are_cached_for_the_ttl_and_fetched_once_under_concurrency() -> None:
    app, calls = counting_app(delay=0.05)
    with serve(app) as server:
        resolvers = Resolvers(server.url, ttl_seconds=60)
        await resolvers.start()
        try:
            results = await asyncio.gather(*(resolvers.tenant_settings(A) for _ in range(20)))
            assert all(r is not None for r in results)
            await resolvers.tenant_settings(A)
            assert calls == [f"/tenants/{A}"]
            resolvers.settings.clock = lambda: 1e12  # far past the TTL
            await resolvers.tenant_settings(A)
            assert len(calls) == 2
        finally:
            await resolvers.close()


@pytest.mark.parametrize("status", [500, 503, 401])
async def test_error_answers_fail_closed_and_are_not_cached(status: int) -> None:
    app, calls = counting_app(status=status)
    with serve(app) as server:
        resolvers = Resolvers(server.url)
        await resolvers.start()
        try:
            for _ in range(2):
                with pytest.raises(ResolverError, match=str(status)):
                    await resolvers.tenant_settings(A)
            assert len(calls) == 2
        finally:
            await resolvers.close()


async def test_timeouts_and_refused_connections_fail_closed() -> None:
    app, _ = counting_app(delay=0.6)
    with serve(app) as server:
        resolvers = Resolvers(server.url, timeout_seconds=0.2)
        await resolvers.start()
        try:
            with pytest.raises(ResolverError, match="in time"):
                await resolvers.tenant_settings(A)
        finally:
            await resolvers.close()
    resolvers = Resolvers(f"http://127.0.0.1:{free_port()}", timeout_seconds=1.0)
    await resolvers.start()
    try:
        with pytest.raises(ResolverError, match="cannot reach"):
            await resolvers.tenant_settings(A)
    finally:
        await resolvers.close()


async def test_not_started_fails_closed() -> None:
    with pytest.raises(ResolverError, match="not started"):
        await Resolvers("http://127.0.0.1:9").tenant_settings(A)


async def test_tenant_retention_settings_are_read_and_checked(upstream: ThreadedServer) -> None:
    resolvers = Resolvers(upstream.url)
    await resolvers.start()
    try:
        settings = await resolvers.tenant_settings(A)
        assert settings is not None and settings["retention_days"]["payments"] == 2555
    finally:
        await resolvers.close()

    async def odd(request: Request) -> Response:
        retention = {"a": {"payments": "forever"}, "b": [30], "c": {"payments": -1}, "d": {"payments": True}}
        return JSONResponse({"id": "x", "retention_days": retention[request.path_params["tid"]]})

    with serve(Starlette(routes=[Route("/tenants/{tid}", odd)])) as server:
        resolvers = Resolvers(server.url)
        await resolvers.start()
        try:
            for tenant in "abcd":
                with pytest.raises(ResolverError, match="retention_days"):
                    await resolvers.tenant_settings(tenant)
        finally:
            await resolvers.close()


CALL_FACTS = (FactRule("age_days", Pointer.parse("/created_at"), "age"),)


async def test_record_facts_are_read_from_the_record_and_cached(upstream: ThreadedServer) -> None:
    resolvers = Resolvers(upstream.url)
    await resolvers.start()
    try:
        facts = await resolvers.record(f"/tenants/{A}/calls/call-a-001", CALL_FACTS)
        ((name, kind, created),) = facts
        assert (name, kind) == ("age_days", "age")
        # the fixture's age of call 1, before the services started (a few seconds ago at most)
        assert 0 <= (time.time() - created) - OLD_CALL_AGES[1] < 600
        fetches = resolvers.fetches
        assert await resolvers.record(f"/tenants/{A}/calls/call-a-001", CALL_FACTS) == facts
        assert resolvers.fetches == fetches  # cached (the facts, not the document)
        assert await resolvers.record(f"/tenants/{A}/calls/call-a-999", CALL_FACTS) is None
        with pytest.raises(ResolverError, match="record facts: the record has no /nope"):
            await resolvers.record(
                f"/tenants/{A}/calls/call-a-002", (FactRule("age_days", Pointer.parse("/nope"), "age"),)
            )
        with pytest.raises(ResolverError, match="not JSON"):
            await resolvers.record(f"/tenants/{A}/calls/call-a-003/recording", CALL_FACTS)
    finally:
        await resolvers.close()
