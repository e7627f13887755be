"""MSAL for Python, unmodified, gets app-only tokens from the dev IdP over https as it would from Entra.

The application is registered in the dev dir (``register_app``: what ``gateway dev-idp
--register-app`` does), trusts the dev CA (``verify=`` or ``REQUESTS_CA_BUNDLE``), and is told not to
ask Microsoft whether the authority's host is known (``instance_discovery=False``), or to ask the dev
IdP instead. The token it gets is then used against the real gateway.
"""

from __future__ import annotations

import base64
import datetime
import json
from collections.abc import Iterator
from typing import Any

import msal
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from gateway.demo.tenants import CONTOSO_TENANT, FABRIKAM_TENANT, GATEWAY_APP_ID_URI, GATEWAY_CLIENT_ID
from gateway.identity.devapps import app_client_id, register_app
from tests.clients.conftest import TwoDoorIdP
from tests.support.stack import Stack

SCOPE = [f"{GATEWAY_APP_ID_URI}/.default"]


@pytest.fixture(autouse=True)
def _close_msal_sessions(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """MSAL opens a ``requests.Session`` per application and never closes it; its kept-alive TLS
    connections leak (ResourceWarning) and hold up the https door's shutdown. Closed after each test."""
    sessions: list[requests.Session] = []

    class Recorded(requests.Session):
        def __init__(self) -> None:
            super().__init__()
            sessions.append(self)

    monkeypatch.setattr(requests, "Session", Recorded)  # msal.application imports it when it builds one
    yield
    for session in sessions:
        session.close()


def claims_of(token: str) -> dict[str, Any]:
    segment = token.split(".")[1]
    value: dict[str, Any] = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    return value


def client(idp: TwoDoorIdP, client_id: str, credential: Any, tenant: str = CONTOSO_TENANT,
           **options: Any) -> msal.ConfidentialClientApplication:  # fmt: skip
    options.setdefault("verify", str(idp.ca_path))
    options.setdefault("instance_discovery", False)
    return msal.ConfidentialClientApplication(
        client_id, client_credential=credential, authority=f"{idp.https_url}/{tenant}", **options
    )


def test_acquire_token_for_client_with_a_secret_gets_an_app_token_with_the_registered_roles(
    idp: TwoDoorIdP,
) -> None:
    app, secret = register_app(idp.dev_dir, "mail-backend", roles=["Service.Mail"])
    assert secret is not None and app.client_id == app_client_id("mail-backend")
    result = client(idp, app.client_id, secret).acquire_token_for_client(scopes=SCOPE)
    assert "access_token" in result, result
    assert result["token_type"] == "Bearer" and result["expires_in"] > 3000
    claims = claims_of(result["access_token"])
    assert claims["roles"] == ["Service.Mail"]
    assert claims["idtyp"] == "app" and claims["azp"] == app.client_id and "scp" not in claims
    assert claims["tid"] == CONTOSO_TENANT and claims["aud"] == GATEWAY_CLIENT_ID
    # one issuer whichever door answered: the authority the gateway trusts
    assert claims["iss"] == f"{idp.idp.url}/{CONTOSO_TENANT}/v2.0"


def test_the_token_from_msal_is_accepted_by_the_gateway(idp: TwoDoorIdP, stack: Stack) -> None:
    app, secret = register_app(idp.dev_dir, "mail-backend", roles=["Service.Mail"])
    token = client(idp, app.client_id, secret).acquire_token_for_client(scopes=SCOPE)["access_token"]
    reply = stack.http("GET", "/gmail/v1/users/me/messages", token=token, purpose="essential.service")
    assert reply.status == 200, reply.body[:300]
    assert reply.json()["messages"]
    assert reply.header("X-Decision-Id")


def test_the_ca_bundle_from_the_environment_is_enough(idp: TwoDoorIdP, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(idp.ca_path))
    app, secret = register_app(idp.dev_dir, "analytics-job", roles=["Service.Analytics"])
    application = msal.ConfidentialClientApplication(
        app.client_id, client_credential=secret, authority=f"{idp.https_url}/{FABRIKAM_TENANT}",
        instance_discovery=f"{idp.https_url}/common/discovery/instance",  # asks the dev IdP, not Microsoft
    )  # fmt: skip
    result = application.acquire_token_for_client(scopes=[f"{GATEWAY_CLIENT_ID}/.default"])
    assert "access_token" in result, result
    assert claims_of(result["access_token"])["tid"] == FABRIKAM_TENANT


def test_without_the_dev_ca_the_https_door_is_not_trusted(idp: TwoDoorIdP, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    with pytest.raises(requests.exceptions.SSLError):
        client(idp, app_client_id("mail-backend"), "x", verify=True)


def test_a_wrong_secret_is_refused_as_entra_refuses_it(idp: TwoDoorIdP) -> None:
    app, _ = register_app(idp.dev_dir, "mail-backend", roles=["Service.Mail"])
    result = client(idp, app.client_id, "not-the-secret").acquire_token_for_client(scopes=SCOPE)
    assert "access_token" not in result
    assert result["error"] == "invalid_client"
    assert 7000215 in result["error_codes"] and result["error_description"].startswith("AADSTS7000215")


def test_an_unregistered_app_and_a_foreign_resource_are_refused(idp: TwoDoorIdP) -> None:
    result = client(idp, app_client_id("nobody"), "x").acquire_token_for_client(scopes=SCOPE)
    assert result["error"] == "unauthorized_client" and 700016 in result["error_codes"]
    app, secret = register_app(idp.dev_dir, "mail-backend", roles=["Service.Mail"])
    other = client(idp, app.client_id, secret).acquire_token_for_client(scopes=["api://someone-else/.default"])
    assert other["error"] == "invalid_resource" and 500011 in other["error_codes"]
    delegated = client(idp, app.client_id, secret).acquire_token_for_client(scopes=[f"{GATEWAY_APP_ID_URI}/Mail.Read"])
    assert delegated["error"] == "invalid_scope"


def test_an_app_not_registered_in_the_tenant_gets_no_token_there(idp: TwoDoorIdP) -> None:
    app, secret = register_app(idp.dev_dir, "contoso-only", roles=["Service.Mail"], tenants=[CONTOSO_TENANT])
    result = client(idp, app.client_id, secret, tenant=FABRIKAM_TENANT).acquire_token_for_client(scopes=SCOPE)
    assert result["error"] == "unauthorized_client"


def _certificate() -> tuple[bytes, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "payments-service")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=30)).sign(key, hashes.SHA256())
    )  # fmt: skip
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())  # fmt: skip
    return key_pem, cert.public_bytes(serialization.Encoding.PEM)


@pytest.mark.parametrize("style", ["public_certificate", "thumbprint"])
def test_a_certificate_credential_signs_a_client_assertion_the_dev_idp_verifies(idp: TwoDoorIdP, style: str) -> None:
    key_pem, cert_pem = _certificate()
    app, secret = register_app(idp.dev_dir, f"payments-{style}", roles=["Service.Payments"], certificate_pem=cert_pem)
    assert secret is None
    credential: dict[str, str] = {"private_key": key_pem.decode()}
    if style == "public_certificate":  # MSAL signs PS256 with x5t#S256
        credential["public_certificate"] = cert_pem.decode()
    else:  # the legacy SHA-1 thumbprint: RS256 with x5t
        der = x509.load_pem_x509_certificate(cert_pem).public_bytes(serialization.Encoding.DER)
        credential["thumbprint"] = _sha1_hex(der)
    result = client(idp, app.client_id, credential).acquire_token_for_client(scopes=SCOPE)
    assert "access_token" in result, result
    assert claims_of(result["access_token"])["roles"] == ["Service.Payments"]
    # a key that is not the registered certificate's is refused
    other_key, _ = _certificate()
    forged = {**credential, "private_key": other_key.decode()}
    refused = client(idp, app.client_id, forged).acquire_token_for_client(scopes=SCOPE)
    assert refused.get("error") == "invalid_client", refused


def _sha1_hex(der: bytes) -> str:
    digest = hashes.Hash(hashes.SHA1())
    digest.update(der)
    return digest.finalize().hex()
