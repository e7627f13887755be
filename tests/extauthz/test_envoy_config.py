"""``gateway envoy-config`` and the ``server.mode`` key: what they accept, refuse and print."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from gateway import cliconfig
from gateway.cli import main
from gateway.config import ConfigError
from gateway.extauthz.envoyconfig import EnvoyConfigError, render
from tests.extauthz.conftest import require_envoy


def test_the_printed_bootstrap_is_one_envoy_accepts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    binary = require_envoy()
    assert main(["envoy-config", "--upstream", "http://127.0.0.1:8081", "--gateway", "http://127.0.0.1:8080",
                 "--proxy-gateway", "http://localhost:8090"]) == 0
    text = capsys.readouterr().out
    assert "port_value: 10000" in text
    assert "failure_mode_allow: false" in text and "code: ServiceUnavailable" in text
    assert "clear_route_cache: true" in text
    assert not [line for line in text.splitlines() if line.strip().startswith("with_request_body")]
    assert 'address: "localhost", port_value: 8090' in text and "STRICT_DNS" in text
    config = tmp_path / "envoy.yaml"
    config.write_text(text)
    checked = subprocess.run([binary, "--mode", "validate", "-c", str(config)], capture_output=True, text=True,
                             timeout=60, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_https_upstreams_get_tls(tmp_path: Path) -> None:
    text = render("https://service.internal", "http://127.0.0.1:8080", listen_port=10443)
    assert "UpstreamTlsContext" in text and 'sni: "service.internal"' in text and "port_value: 443" in text


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--upstream", "ftp://x", "--gateway", "http://127.0.0.1:1"], "--upstream: expected an http(s) URL"),
        (["--upstream", "http://x", "--gateway", "http://127.0.0.1:1/check"], "--gateway: expected a URL without"),
        (["--upstream", "http://x", "--gateway", "http://127.0.0.1:1", "--listen", "70000"], "--listen: not a TCP"),
    ],
)
def test_unusable_options_are_one_line_errors(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["envoy-config", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_render_refuses_a_bad_listen_address() -> None:
    with pytest.raises(EnvoyConfigError, match="--listen-address"):
        render("http://x", "http://y", listen_address="everywhere")


def test_server_mode_key() -> None:
    assert cliconfig.load(None, environ={}).server.mode == "proxy"
    assert cliconfig.load(None, environ={"GATEWAY_SERVER_MODE": "ext-authz"}).server.mode == "ext-authz"
    with pytest.raises(ConfigError, match=r"server\.mode: expected 'proxy' or 'ext-authz'"):
        cliconfig.load(None, environ={"GATEWAY_SERVER_MODE": "sidecar"})
    with pytest.raises(ConfigError, match=r"server\.delegation_secret: at least 32"):
        cliconfig.load(None, environ={"GATEWAY_SERVER_DELEGATION_SECRET": "short"})


def test_the_example_in_deploy_is_the_commands_output(capsys: pytest.CaptureFixture[str]) -> None:
    example = Path(__file__).resolve().parents[2] / "deploy" / "envoy" / "envoy.yaml"
    assert main(["envoy-config", "--upstream", "http://127.0.0.1:8081", "--gateway", "http://127.0.0.1:8080",
                 "--admin-port", "9901"]) == 0
    assert capsys.readouterr().out == example.read_text()
