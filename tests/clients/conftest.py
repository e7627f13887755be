"""Real third-party clients against the real stack: the dev IdP on two doors, the reference services
and the gateway, each a uvicorn server on a loopback port the kernel picks.

The dev IdP is one app served twice: over plain http (the authority the gateway trusts and fetches
keys from, as in every other test) and over https with a certificate from the dev CA in its dev dir
(the authority MSAL is given). Tokens from either door carry the same issuer.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.demo.upstream import create_upstream_app
from gateway.identity.devidp import create_app
from gateway.identity.devtls import dev_tls
from tests.support.idp import DevIdP
from tests.support.servers import ThreadedServer, free_port, serve
from tests.support.stack import Stack, running_gateway


@dataclass
class TwoDoorIdP:
    idp: DevIdP  # the http door: identity.authority
    https_url: str
    ca_path: Path

    @property
    def dev_dir(self) -> Path:
        return self.idp.dev_dir


@contextlib.contextmanager
def two_door_idp(dev_dir: Path) -> Iterator[TwoDoorIdP]:
    http_port, https_port = free_port(), free_port()
    http_url, https_url = f"http://127.0.0.1:{http_port}", f"https://127.0.0.1:{https_port}"
    tls = dev_tls(dev_dir)
    app = create_app(dev_dir, authority=http_url, https_authority=https_url)
    plain = ThreadedServer(app, port=http_port).start()
    try:
        secure = ThreadedServer(
            app, port=https_port, ssl_certfile=str(tls.cert_path), ssl_keyfile=str(tls.key_path)
        ).start()
        try:
            yield TwoDoorIdP(DevIdP(dev_dir, http_port, server=plain), https_url, tls.ca_path)
        finally:
            secure.stop()
    finally:
        plain.stop()


@pytest.fixture(scope="module")
def idp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoDoorIdP]:
    with two_door_idp(tmp_path_factory.mktemp("dev")) as running:
        yield running


@pytest.fixture(scope="module")
def reference() -> Iterator[ThreadedServer]:
    with serve(create_upstream_app()) as server:
        yield server


@pytest.fixture(scope="module")
def stack(idp: TwoDoorIdP, reference: ThreadedServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    audit = tmp_path_factory.mktemp("audit") / "audit.sqlite"
    with running_gateway(idp.idp, reference.url, audit) as running:
        yield running


@pytest.fixture(autouse=True)
def _no_ca_bundle_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """requests lets ``REQUESTS_CA_BUNDLE`` / ``CURL_CA_BUNDLE`` override a session's ``verify`` (and
    so MSAL's): a machine that sets them to the system bundle would hide the ``verify=`` under test."""
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
