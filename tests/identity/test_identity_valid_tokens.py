"""Valid v1 and v2 tokens, delegated and app-only, and the Principal they yield; the verified-token cache."""

from __future__ import annotations

import time
from typing import Any

import pytest

from gateway.demo.tenants import CONTOSO_TENANT, FABRIKAM_TENANT, GATEWAY_APP_ID_URI, GATEWAY_CLIENT_ID
from gateway.identity import AuthenticationError, Authenticator
from gateway.identity.devtokens import DEV_CLIENT_ID, dev_guid
from tests.support.idp import DevIdP

USER_OID = "0c7d1b1e-2f4a-4b6e-9d3c-8a1e5f7b9c20"
APP_ID = "5a1f0e9d-3c2b-4a18-b7e6-d5c4b3a29180"


def bearer(token: str) -> bytes:
    return b"Bearer " + token.encode()


@pytest.mark.parametrize("version", [1, 2])
async def test_delegated_token(version: int, authenticator: Authenticator, shared_idp: DevIdP) -> None:
    token = shared_idp.mint(
        FABRIKAM_TENANT,
        user=USER_OID,
        roles=["Support.Agent", "Auditor"],
        scopes=["access_as_user", "User.Read"],
        version=version,
        extra_claims={"groups": ["g1", "g2"]},
    )
    principal = await authenticator.authenticate(bearer(token))
    assert principal.kind == "user" and principal.is_human
    assert principal.id == USER_OID
    assert principal.tenant == FABRIKAM_TENANT
    assert principal.roles == ("Support.Agent", "Auditor")
    assert principal.scopes == ("access_as_user", "User.Read")
    assert principal.groups == ("g1", "g2")
    assert principal.client_id == DEV_CLIENT_ID
    assert principal.token_version == f"{version}.0"
    assert principal.expires_at > time.time() + 3000


@pytest.mark.parametrize("version", [1, 2])
async def test_app_only_token(version: int, authenticator: Authenticator, shared_idp: DevIdP) -> None:
    token = shared_idp.mint(app=APP_ID, roles=["Service.Payments"], version=version)
    principal = await authenticator.authenticate(bearer(token))
    assert principal.kind == "app" and not principal.is_human
    assert principal.id == APP_ID == principal.client_id
    assert principal.tenant == CONTOSO_TENANT
    assert principal.roles == ("Service.Payments",)
    assert principal.scopes == ()
    assert principal.token_version == f"{version}.0"


async def test_app_only_token_without_the_optional_idtyp_claim(
    authenticator: Authenticator, shared_idp: DevIdP
) -> None:
    """Entra emits idtyp only when configured; oid == sub then marks the token app-only."""
    token = shared_idp.mint(app=APP_ID, roles=["Service.Mail"], extra_claims={"idtyp": None})
    principal = await authenticator.authenticate(bearer(token))
    assert (principal.kind, principal.id) == ("app", APP_ID)


async def test_default_delegated_token_and_audiences(
    authenticator: Authenticator, shared_idp: DevIdP
) -> None:
    v2 = await authenticator.authenticate(bearer(shared_idp.mint()))
    v1 = await authenticator.authenticate(bearer(shared_idp.mint(version=1)))
    assert v2.scopes == v1.scopes == ("access_as_user",)
    assert v2.id == v1.id == dev_guid(CONTOSO_TENANT, "user", "dev-user")
    assert v2.roles == () and v2.groups == ()
    # Either configured audience is accepted whatever the version.
    await authenticator.authenticate(bearer(shared_idp.mint(audience=GATEWAY_APP_ID_URI)))
    await authenticator.authenticate(bearer(shared_idp.mint(version=1, audience=GATEWAY_CLIENT_ID)))
    await authenticator.authenticate(bearer(shared_idp.mint(extra_claims={"aud": ["x", GATEWAY_CLIENT_ID]})))


async def test_group_overage_means_unknown_groups(authenticator: Authenticator, shared_idp: DevIdP) -> None:
    overage: dict[str, Any] = {
        "_claim_names": {"groups": "src1"},
        "_claim_sources": {"src1": {"endpoint": "https://graph.microsoft.com/v1.0/users/x/getMemberObjects"}},
    }
    principal = await authenticator.authenticate(bearer(shared_idp.mint(extra_claims=overage)))
    assert principal.groups is None


@pytest.mark.parametrize("header", [b"bearer %s", b"BEARER %s", b"  Bearer \t %s  "])
async def test_scheme_is_case_insensitive_and_whitespace_tolerant(
    header: bytes, authenticator: Authenticator, shared_idp: DevIdP
) -> None:
    principal = await authenticator.authenticate(header % shared_idp.mint().encode())
    assert principal.tenant == CONTOSO_TENANT


async def test_common_endpoint_issuer_templates_and_key_set(shared_idp: DevIdP) -> None:
    """Trusting tenant-specific metadata is the normal set-up; the dev IdP's /common documents carry
    Entra's {tenantid} template, which the validator substitutes like any other issuer."""
    import aiohttp

    async with aiohttp.ClientSession() as session:
        async with session.get(f"{shared_idp.url}/common/v2.0/.well-known/openid-configuration") as r:
            v2 = await r.json()
        async with session.get(f"{shared_idp.url}/common/.well-known/openid-configuration") as r:
            v1 = await r.json()
        async with session.get(v2["jwks_uri"]) as r:
            keys = (await r.json())["keys"]
    assert v2["issuer"] == f"{shared_idp.url}/{{tenantid}}/v2.0"
    assert v1["issuer"] == f"{shared_idp.url}/{{tenantid}}/"
    signing = next(k for k in keys if k["kid"] == shared_idp.signing_kid)
    assert signing["issuer"] == v2["issuer"] and signing["x5t"] == signing["kid"]


async def test_cache_returns_the_verified_principal_until_exp_and_never_past_it(shared_idp: DevIdP) -> None:
    clock = [time.time()]
    auth = Authenticator(shared_idp.settings(leeway_seconds=60), clock=lambda: clock[0])
    await auth.start()
    try:
        assert await auth.wait_ready(15)
        token = shared_idp.mint(ttl=600)
        first = await auth.authenticate(bearer(token))
        assert await auth.authenticate(bearer(token)) is first  # served from the cache
        clock[0] = first.expires_at - 1
        assert await auth.authenticate(bearer(token)) is first
        # Past exp but inside the leeway: not from the cache, verified afresh (and accepted).
        clock[0] = first.expires_at + 30
        again = await auth.authenticate(bearer(token))
        assert again == first and again is not first
        clock[0] = first.expires_at + 61
        with pytest.raises(AuthenticationError) as caught:
            await auth.authenticate(bearer(token))
        assert caught.value.reason == "expired"
    finally:
        await auth.close()


async def test_cache_disabled_verifies_every_time(shared_idp: DevIdP) -> None:
    auth = Authenticator(shared_idp.settings(token_cache_size=0))
    await auth.start()
    try:
        assert await auth.wait_ready(15)
        token = bearer(shared_idp.mint())
        first = await auth.authenticate(token)
        second = await auth.authenticate(token)
        assert first == second and first is not second
    finally:
        await auth.close()


async def test_cache_is_bounded(shared_idp: DevIdP) -> None:
    auth = Authenticator(shared_idp.settings(token_cache_size=3))
    await auth.start()
    try:
        assert await auth.wait_ready(15)
        tokens = [bearer(shared_idp.mint(user=f"user{i}")) for i in range(5)]
        principals = [await auth.authenticate(t) for t in tokens]
        assert len(auth._cache) == 3
        assert await auth.authenticate(tokens[-1]) is principals[-1]  # the newest are kept
        assert await auth.authenticate(tokens[0]) is not principals[0]  # the oldest went
    finally:
        await auth.close()


async def test_not_ready_before_start(shared_idp: DevIdP) -> None:
    auth = Authenticator(shared_idp.settings())
    try:
        assert not auth.ready
        await auth.start()
        assert await auth.wait_ready(15)
        assert auth.ready
    finally:
        await auth.close()
