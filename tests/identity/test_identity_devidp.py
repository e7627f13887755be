"""The dev IdP: Entra's paths and document shapes, persisted keys, rotation, and the two commands."""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import stat
import subprocess
import sys
import threading
import urllib.request
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.demo.tenants import CONTOSO_TENANT, FABRIKAM_TENANT, GATEWAY_APP_ID_URI, GATEWAY_CLIENT_ID
from gateway.identity import Authenticator
from gateway.identity.commands import register
from gateway.identity.devidp import create_app
from gateway.identity.devkeys import keys_path, load_key_ring
from gateway.identity.devtokens import mint_token
from tests.support.idp import DevIdP, dev_idp  # noqa: F401
from tests.support.processes import close_pipes
from tests.support.servers import free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[2]


def get_json(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:  # it holds the connection
            return error.code, json.loads(error.read())


def segment_json(token: str, index: int) -> dict[str, Any]:
    segment = token.split(".")[index]
    value: dict[str, Any] = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    return value


def claims_of(token: str) -> dict[str, Any]:
    return segment_json(token, 1)


def header_of(token: str) -> dict[str, Any]:
    return segment_json(token, 0)


def run_command(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="gateway")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    status: int = args.func(args)
    return status


def test_discovery_documents_follow_entra(dev_idp: DevIdP) -> None:  # noqa: F811
    base = dev_idp.url
    status, v2 = get_json(f"{base}/{CONTOSO_TENANT}/v2.0/.well-known/openid-configuration")
    assert status == 200
    assert v2["issuer"] == f"{base}/{CONTOSO_TENANT}/v2.0"
    assert v2["jwks_uri"] == f"{base}/{CONTOSO_TENANT}/discovery/v2.0/keys"
    assert v2["id_token_signing_alg_values_supported"] == ["RS256"]
    status, v1 = get_json(f"{base}/{CONTOSO_TENANT}/.well-known/openid-configuration")
    assert v1["issuer"] == f"{base}/{CONTOSO_TENANT}/"
    assert v1["jwks_uri"] == f"{base}/{CONTOSO_TENANT}/discovery/keys"
    status, error = get_json(f"{base}/not-a-tenant/v2.0/.well-known/openid-configuration")
    assert status == 400 and error["error"] == "invalid_tenant"


def test_key_sets_carry_kid_x5t_certificate_and_templated_issuer(dev_idp: DevIdP) -> None:  # noqa: F811
    base = dev_idp.url
    _, v2 = get_json(f"{base}/{FABRIKAM_TENANT}/discovery/v2.0/keys")
    _, v1 = get_json(f"{base}/{FABRIKAM_TENANT}/discovery/keys")
    _, common = get_json(f"{base}/common/discovery/v2.0/keys")
    (key,) = v2["keys"]
    assert key["kid"] == dev_idp.signing_kid and key["kty"] == "RSA" and key["use"] == "sig"
    certificate = base64.b64decode(key["x5c"][0])
    thumbprint = base64.urlsafe_b64encode(hashlib.sha1(certificate).digest()).rstrip(b"=").decode()
    assert key["x5t"] == thumbprint == key["kid"]
    public_key = x509.load_der_x509_certificate(certificate).public_key()
    assert isinstance(public_key, rsa.RSAPublicKey)
    public = public_key.public_numbers()
    assert base64.urlsafe_b64encode(public.n.to_bytes(256, "big")).rstrip(b"=").decode() == key["n"]
    assert key["issuer"] == f"{base}/{FABRIKAM_TENANT}/v2.0"
    assert "issuer" not in v1["keys"][0] and v1["keys"][0]["kid"] == key["kid"]
    assert common["keys"][0]["issuer"] == f"{base}/{{tenantid}}/v2.0"


def test_keys_are_private_files(tmp_path: Path) -> None:
    ring = load_key_ring(tmp_path / "dev")
    path = keys_path(tmp_path / "dev")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert ring.signing_key.private_key.key_size == 2048
    assert load_key_ring(tmp_path / "dev") is ring  # unchanged file: parsed once


def test_concurrent_first_use_creates_one_key(tmp_path: Path) -> None:
    kids: list[str] = []
    threads = [
        threading.Thread(target=lambda: kids.append(load_key_ring(tmp_path / "dev").signing_kid))
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(kids) == 4 and len(set(kids)) == 1


def test_rotation_endpoint_publishes_then_activates(dev_idp: DevIdP) -> None:  # noqa: F811
    first = dev_idp.signing_kid
    request = urllib.request.Request(f"{dev_idp.url}/_dev/rotate?activate=false", method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        staged = json.loads(response.read())
    assert staged["signing_kid"] == first != staged["kid"]
    _, keys = get_json(f"{dev_idp.url}/{CONTOSO_TENANT}/discovery/v2.0/keys")
    assert {k["kid"] for k in keys["keys"]} == {first, staged["kid"]}
    assert header_of(dev_idp.mint())["kid"] == first
    with urllib.request.urlopen(
        urllib.request.Request(f"{dev_idp.url}/_dev/rotate", method="POST"), timeout=30
    ) as r:
        rotated = json.loads(r.read())
    assert rotated["signing_kid"] == rotated["kid"] == dev_idp.signing_kid
    assert header_of(dev_idp.mint())["kid"] == rotated["kid"]


async def test_rotation_endpoint_refuses_remote_callers(tmp_path: Path) -> None:
    app = create_app(tmp_path / "dev", authority="http://127.0.0.1:1")
    before = load_key_ring(tmp_path / "dev").keys
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(dict(message))

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": "/_dev/rotate", "raw_path": b"/_dev/rotate", "query_string": b"", "root_path": "",
        "headers": [(b"host", b"idp")], "client": ("192.0.2.7", 40000), "server": ("192.0.2.1", 8082),
    }  # fmt: skip
    await app(scope, receive, send)
    assert sent[0]["status"] == 403
    assert load_key_ring(tmp_path / "dev").keys == before


def test_minted_claims_are_entra_shaped(tmp_path: Path) -> None:
    dev = tmp_path / "dev"
    v2 = claims_of(mint_token(dev, CONTOSO_TENANT, user="alice", roles=["Sales.Rep"]))
    assert v2["ver"] == "2.0" and v2["aud"] == GATEWAY_CLIENT_ID and v2["scp"] == "access_as_user"
    assert v2["iss"].endswith(f"/{CONTOSO_TENANT}/v2.0") and v2["roles"] == ["Sales.Rep"]
    assert v2["exp"] - v2["iat"] == 3600 and v2["nbf"] == v2["iat"]
    assert v2["oid"] == claims_of(mint_token(dev, CONTOSO_TENANT, user="alice"))["oid"]  # deterministic
    assert v2["oid"] != claims_of(mint_token(dev, FABRIKAM_TENANT, user="alice"))["oid"]
    v1 = claims_of(
        mint_token(dev, CONTOSO_TENANT, app="payments", roles=["Service.Payments"], version=1, ttl=60)
    )
    assert v1["ver"] == "1.0" and v1["aud"] == GATEWAY_APP_ID_URI and v1["idtyp"] == "app"
    assert v1["iss"].endswith(f"/{CONTOSO_TENANT}/") and "appid" in v1 and "scp" not in v1
    assert v1["exp"] - v1["iat"] == 60
    with pytest.raises(ValueError):
        mint_token(dev, CONTOSO_TENANT, user="a", app="b")
    with pytest.raises(ValueError):
        mint_token(dev, CONTOSO_TENANT, app="b", scopes=["x"])


async def test_token_command_prints_a_token_the_gateway_accepts(
    dev_idp: DevIdP,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    common = ["--dev-dir", str(dev_idp.dev_dir), "--authority", dev_idp.url]
    assert (
        run_command(["token", "--app", "crm", "--roles", "Service.CrmSync", "--version", "1", *common]) == 0
    )
    app_token = capsys.readouterr().out
    assert (
        run_command(["token", "--tenant", FABRIKAM_TENANT, "--user", "bob", "--roles", "Auditor", *common])
        == 0
    )
    user_token = capsys.readouterr().out
    assert app_token.count("\n") == user_token.count("\n") == 1
    auth = Authenticator(dev_idp.settings())
    await auth.start()
    try:
        assert await auth.wait_ready(15)
        app = await auth.authenticate(b"Bearer " + app_token.strip().encode())
        user = await auth.authenticate(b"Bearer " + user_token.strip().encode())
    finally:
        await auth.close()
    assert (app.kind, app.roles, app.token_version) == ("app", ("Service.CrmSync",), "1.0")
    assert (user.kind, user.roles, user.tenant) == ("user", ("Auditor",), FABRIKAM_TENANT)
    assert run_command(["token", "--app", "x", "--scopes", "s", *common]) == 2


def test_dev_idp_command_rotates_and_prunes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dev = str(tmp_path / "dev")
    first = load_key_ring(dev).signing_kid
    assert run_command(["dev-idp", "--dev-dir", dev, "--rotate"]) == 0
    second = capsys.readouterr().out.strip()
    assert load_key_ring(dev).signing_kid == second != first
    assert run_command(["dev-idp", "--dev-dir", dev, "--prune"]) == 0
    assert capsys.readouterr().out.split() == [first]
    assert [k.kid for k in load_key_ring(dev).keys] == [second]


def test_dev_idp_command_serves(tmp_path: Path) -> None:
    port = free_port()
    # This package's commands alone, so the test does not depend on the rest of the CLI.
    runner = (
        "import argparse, sys; from gateway.identity.commands import register; "
        "p = argparse.ArgumentParser(); register(p.add_subparsers()); a = p.parse_args(); sys.exit(a.func(a))"
    )
    command = [sys.executable, "-c", runner]
    process = subprocess.Popen(
        [*command, "dev-idp", "--port", str(port), "--dev-dir", str(tmp_path / "dev")],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        wait_for_port(port, timeout=30)
        status, v2 = get_json(
            f"http://127.0.0.1:{port}/{CONTOSO_TENANT}/v2.0/.well-known/openid-configuration"
        )
        assert status == 200 and v2["issuer"] == f"http://127.0.0.1:{port}/{CONTOSO_TENANT}/v2.0"
        assert stat.S_IMODE(keys_path(tmp_path / "dev").stat().st_mode) == 0o600
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        finally:
            close_pipes(process)
