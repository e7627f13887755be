"""The dev identity provider on loopback, for any test that needs real Entra-shaped tokens.

Use the ``dev_idp`` fixture (a fresh IdP on a free port with its own key in ``tmp_path``)::

    from tests.support.idp import dev_idp  # noqa: F401  (re-export the fixture into the test module)

    async def test_x(dev_idp):
        token = dev_idp.mint(roles=["Support.Agent"])          # Contoso, delegated, v2
        auth = Authenticator(dev_idp.settings())               # authority, tenants, audiences preset

or ``running_dev_idp(dev_dir)`` as a context manager where a fixture does not fit (module scope, the
load harness). ``url, mint = dev_idp`` also works.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from gateway.demo.tenants import CONTOSO_TENANT, GATEWAY_APP_ID_URI, GATEWAY_CLIENT_ID, TENANTS
from gateway.identity.devidp import create_app
from gateway.identity.devkeys import add_key, load_key_ring, rotate_keys
from gateway.identity.devtokens import mint_token
from gateway.identity.settings import IdentitySettings
from tests.support.servers import ThreadedServer, free_port

AsgiWrapper = Callable[[Any], Any]


@dataclass
class DevIdP:
    dev_dir: Path
    port: int
    wrap: AsgiWrapper | None = None
    server: ThreadedServer | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        """The authority: what ``identity.authority`` must be set to."""
        return f"http://127.0.0.1:{self.port}"

    def __iter__(self) -> Iterator[Any]:
        return iter((self.url, self.mint))

    def mint(self, tenant: str = CONTOSO_TENANT, **options: Any) -> str:
        """``mint_token`` with this IdP's dev dir and authority (see its options)."""
        return mint_token(self.dev_dir, tenant, authority=self.url, **options)

    def settings(self, **overrides: Any) -> IdentitySettings:
        """Identity settings trusting this IdP for both fixture tenants and the gateway's audiences."""
        values: dict[str, Any] = {
            "authority": self.url,
            "tenants": TENANTS,
            "audiences": (GATEWAY_CLIENT_ID, GATEWAY_APP_ID_URI),
        }
        values.update(overrides)
        return IdentitySettings(**values)

    @property
    def signing_kid(self) -> str:
        return load_key_ring(self.dev_dir).signing_kid

    def rotate(self) -> str:
        """Publish a new key and sign with it from now on; returns its kid."""
        return rotate_keys(self.dev_dir)

    def add_key(self, *, bound_tenant: str | None = None) -> str:
        """Publish a key without signing with it (``bound_tenant``: bind its issuer to that tenant)."""
        return add_key(self.dev_dir, bound_tenant=bound_tenant)

    def start(self) -> DevIdP:
        """Serve (again) on the same port, e.g. after ``stop()`` to simulate an outage."""
        if self.server is None:
            app = create_app(self.dev_dir, authority=self.url)
            self.server = ThreadedServer(self.wrap(app) if self.wrap else app, port=self.port).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None


@contextlib.contextmanager
def running_dev_idp(
    dev_dir: str | os.PathLike[str], *, port: int | None = None, wrap: AsgiWrapper | None = None
) -> Iterator[DevIdP]:
    """A dev IdP serving ``dev_dir``'s keys on 127.0.0.1 (a free port unless given) until the block ends.

    ``wrap`` wraps the ASGI app, e.g. to inject faults in front of it.
    """
    idp = DevIdP(Path(dev_dir), port or free_port(), wrap).start()
    try:
        yield idp
    finally:
        idp.stop()


@pytest.fixture
def dev_idp(tmp_path: Path) -> Iterator[DevIdP]:
    with running_dev_idp(tmp_path / "dev") as idp:
        yield idp
