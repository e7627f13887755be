from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.demo.tenants import CONTOSO_TENANT
from gateway.identity import Authenticator
from tests.support.idp import DevIdP, running_dev_idp


@pytest.fixture(scope="module")
def shared_idp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevIdP]:
    """One dev IdP per module for tests that do not change its keys."""
    dev_dir: Path = tmp_path_factory.mktemp("idp")
    with running_dev_idp(dev_dir) as idp:
        yield idp


@pytest.fixture(scope="module")
def contoso_bound_kid(shared_idp: DevIdP) -> str:
    """A key bound to Contoso's issuer, published in every tenant's key set (for the key-issuer check).
    Added before any authenticator of the module loads keys."""
    return shared_idp.add_key(bound_tenant=CONTOSO_TENANT)


@pytest.fixture
async def authenticator(shared_idp: DevIdP, contoso_bound_kid: str) -> AsyncIterator[Authenticator]:
    auth = Authenticator(shared_idp.settings())
    await auth.start()
    assert await auth.wait_ready(15), "the authenticator did not load keys from the dev IdP"
    yield auth
    await auth.close()


@pytest.fixture(scope="session")
def attacker_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)
