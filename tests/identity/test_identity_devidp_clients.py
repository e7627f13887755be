"""The dev IdP's client side: the app registry and its command, the dev CA, the token endpoint as a
plain HTTP client sees it (both doors, v1 and v2, Entra's errors), and ``gateway dev-idp
--https-port`` as a process. MSAL itself is in tests/clients/test_msal.py."""

from __future__ import annotations

import argparse
import base64
import json
import os
import signal
import ssl
import stat
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from gateway.demo.tenants import CONTOSO_TENANT, GATEWAY_APP_ID_URI, GATEWAY_CLIENT_ID, TENANTS
from gateway.identity import Authenticator
from gateway.identity.commands import register
from gateway.identity.devapps import apps_path, load_apps, register_app
from gateway.identity.devtls import dev_tls
from tests.clients.conftest import TwoDoorIdP, two_door_idp
from tests.support.processes import close_pipes
from tests.support.servers import free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[2]
FORM = "application/x-www-form-urlencoded"
# This package's commands alone, so the test does not depend on the rest of the CLI.
RUNNER = (
    "import argparse, sys; from gateway.identity.commands import register; "
    "p = argparse.ArgumentParser(); register(p.add_subparsers()); a = p.parse_args(); sys.exit(a.func(a))"
)


@pytest.fixture(scope="module")
def idp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoDoorIdP]:
    with two_door_idp(tmp_path_factory.mktemp("dev")) as running:
        yield running


def post(url: str, form: dict[str, str] | bytes, ca: Path | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:  # fmt: skip
    body = form if isinstance(form, bytes) else urllib.parse.urlencode(form).encode()
    request = urllib.request.Request(url, body, {"Content-Type": FORM, **(headers or {})}, method="POST")
    context = ssl.create_default_context(cafile=str(ca)) if ca else None
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:  # it holds the connection
            return error.code, json.loads(error.read())


def get(url: str, ca: Path | None = None) -> tuple[int, dict[str, Any]]:
    context = ssl.create_default_context(cafile=str(ca)) if ca else None
    try:
        with urllib.request.urlopen(url, timeout=10, context=context) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:  # it holds the connection
            return error.code, json.loads(error.read())


def claims_of(token: str) -> dict[str, Any]:
    segment = token.split(".")[1]
    value: dict[str, Any] = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    return value


def run_command(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    parser = argparse.ArgumentParser(prog="gateway")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    status: int = args.func(args)
    return status, capsys.readouterr().out


def test_register_app_prints_the_secret_once_and_stores_only_its_hash(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dev = str(tmp_path / "dev")
    status, out = run_command(["dev-idp", "--dev-dir", dev, "--register-app", "crm-sync", "--roles",
                               "Service.CrmSync"], capsys)  # fmt: skip
    assert status == 0
    values = dict(line.split("=", 1) for line in out.split())
    secret = values["client_secret"]
    stored = apps_path(dev).read_text()
    assert secret not in stored and values["client_id"] in stored
    assert stat.S_IMODE(apps_path(dev).stat().st_mode) == 0o600
    app = load_apps(dev)[values["client_id"]]
    assert app.roles == ("Service.CrmSync",) and app.tenants == TENANTS and app.secret_matches(secret)
    # registering again keeps the client id, adds a secret, and both work
    _, again = run_command(["dev-idp", "--dev-dir", dev, "--register-app", "crm-sync", "--roles", "Service.CrmSync"],
                           capsys)  # fmt: skip
    second = dict(line.split("=", 1) for line in again.split())
    assert second["client_id"] == values["client_id"] and second["client_secret"] != secret
    app = load_apps(dev)[values["client_id"]]
    assert app.secret_matches(secret) and app.secret_matches(second["client_secret"])
    assert not app.secret_matches(secret[:-1])
    _, listing = run_command(["dev-idp", "--dev-dir", dev, "--list-apps"], capsys)
    assert "crm-sync" in listing and "secrets=2" in listing
    status, _ = run_command(["dev-idp", "--dev-dir", dev, "--register-app", "x", "--tenants", "not-a-guid"], capsys)
    assert status == 2


def test_the_dev_ca_is_kept_and_the_server_certificate_reissued_for_a_new_host(tmp_path: Path) -> None:
    first = dev_tls(tmp_path)
    ca, cert = first.ca_path.read_bytes(), first.cert_path.read_bytes()
    assert dev_tls(tmp_path).cert_path.read_bytes() == cert  # nothing to do
    assert stat.S_IMODE(first.key_path.stat().st_mode) == 0o600
    again = dev_tls(tmp_path, ["idp.localhost"])
    assert again.ca_path.read_bytes() == ca and again.cert_path.read_bytes() != cert
    names = x509.load_pem_x509_certificate(again.cert_path.read_bytes()).extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    ).value.get_values_for_type(x509.DNSName)
    assert "idp.localhost" in names and "localhost" in names


def test_metadata_on_the_https_door_names_https_endpoints_and_the_one_issuer(idp: TwoDoorIdP) -> None:
    status, secure = get(f"{idp.https_url}/{CONTOSO_TENANT}/v2.0/.well-known/openid-configuration", idp.ca_path)
    assert status == 200
    assert secure["issuer"] == f"{idp.idp.url}/{CONTOSO_TENANT}/v2.0"
    assert secure["jwks_uri"].startswith(idp.https_url + "/")
    assert secure["token_endpoint"] == f"{idp.https_url}/{CONTOSO_TENANT}/oauth2/v2.0/token"
    _, plain = get(f"{idp.idp.url}/{CONTOSO_TENANT}/v2.0/.well-known/openid-configuration")
    assert plain["issuer"] == secure["issuer"] and plain["jwks_uri"].startswith(idp.idp.url + "/")
    assert plain["token_endpoint"] == secure["token_endpoint"]  # a secret should not travel in clear
    status, keys = get(secure["jwks_uri"], idp.ca_path)
    assert status == 200 and keys["keys"]
    status, answer = get(f"{idp.https_url}/{CONTOSO_TENANT}/oauth2/v2.0/authorize?client_id=x", idp.ca_path)
    assert status == 400 and answer["error"] == "unsupported_response_type"


async def test_a_v1_token_from_the_v1_endpoint_passes_the_gateways_validation(idp: TwoDoorIdP) -> None:
    app, secret = register_app(idp.dev_dir, "v1-service", roles=["Service.Analytics"])
    assert secret is not None
    status, answer = post(f"{idp.https_url}/{CONTOSO_TENANT}/oauth2/token", {
        "grant_type": "client_credentials", "client_id": app.client_id, "client_secret": secret,
        "resource": GATEWAY_APP_ID_URI,
    }, idp.ca_path)  # fmt: skip
    assert status == 200, answer
    claims = claims_of(answer["access_token"])
    assert claims["ver"] == "1.0" and claims["aud"] == GATEWAY_APP_ID_URI and claims["appid"] == app.client_id
    authenticator = Authenticator(idp.idp.settings())
    await authenticator.start()
    try:
        principal = await authenticator.authenticate(f"Bearer {answer['access_token']}".encode())
    finally:
        await authenticator.close()
    assert principal.kind == "app" and principal.id == app.client_id and principal.roles == ("Service.Analytics",)


def test_client_secret_basic_and_the_errors_entra_answers(idp: TwoDoorIdP) -> None:
    app, secret = register_app(idp.dev_dir, "basic-service", roles=["Service.Mail"])
    assert secret is not None
    url = f"{idp.https_url}/{CONTOSO_TENANT}/oauth2/v2.0/token"
    scope = f"{GATEWAY_CLIENT_ID}/.default"
    basic = base64.b64encode(f"{app.client_id}:{urllib.parse.quote(secret)}".encode()).decode()
    status, answer = post(url, {"grant_type": "client_credentials", "scope": scope}, idp.ca_path,
                          {"Authorization": f"Basic {basic}"})  # fmt: skip
    assert status == 200 and claims_of(answer["access_token"])["roles"] == ["Service.Mail"]
    cases: list[tuple[dict[str, str] | bytes, int, str]] = [
        ({"grant_type": "password", "client_id": app.client_id, "scope": scope}, 400, "unsupported_grant_type"),
        ({"grant_type": "client_credentials", "client_id": app.client_id, "scope": scope}, 401, "invalid_client"),
        ({"grant_type": "client_credentials", "client_id": app.client_id}, 400, "invalid_request"),
        ({"grant_type": "client_credentials", "client_id": app.client_id, "client_secret": secret,
          "scope": f"{scope} openid"}, 400, "invalid_scope"),
        (b"grant_type=client_credentials&grant_type=client_credentials", 400, "invalid_request"),
        (b"%zz=\xff", 400, "invalid_request"),
    ]
    for form, code, error in cases:
        status, answer = post(url, form, idp.ca_path)
        assert (status, answer["error"]) == (code, error), form
        assert answer["error_description"].startswith("AADSTS") and answer["error_codes"]
        assert "access_token" not in answer
    status, answer = post(f"{idp.https_url}/common/oauth2/v2.0/token", {
        "grant_type": "client_credentials", "client_id": app.client_id, "client_secret": secret, "scope": scope,
    }, idp.ca_path)  # fmt: skip
    assert status == 400 and "access_token" not in answer


def test_dev_idp_serves_both_doors_as_a_process_and_stops_on_sigterm(tmp_path: Path) -> None:
    port, https_port = free_port(), free_port()
    dev = tmp_path / "dev"
    process = subprocess.Popen(
        [sys.executable, "-c", RUNNER, "dev-idp", "--port", str(port), "--https-port", str(https_port),
         "--dev-dir", str(dev)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    try:
        wait_for_port(port, timeout=30)
        wait_for_port(https_port, timeout=30)
        status, secure = get(f"https://127.0.0.1:{https_port}/{CONTOSO_TENANT}/v2.0/.well-known/openid-configuration",
                             dev / "idp" / "tls" / "ca.pem")  # fmt: skip
        assert status == 200 and secure["issuer"] == f"http://127.0.0.1:{port}/{CONTOSO_TENANT}/v2.0"
        status, _ = get(f"http://127.0.0.1:{port}/{CONTOSO_TENANT}/discovery/v2.0/keys")
        assert status == 200
    finally:
        process.terminate()
        try:
            code = process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
            close_pipes(process)
            raise
    assert process.stderr is not None
    with process.stderr:
        # uvicorn re-raises the signal it shut down on once both servers are down: either way it stopped
        assert code in (0, -signal.SIGTERM), process.stderr.read()
