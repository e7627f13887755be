from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config import ConfigError, load_config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    return path


def test_defaults_are_the_demo_stack() -> None:
    config = load_config(None, environ={})
    assert config.upstream.url == "http://127.0.0.1:8081"
    assert config.identity.authority == "http://127.0.0.1:8082"
    assert len(config.identity.tenants) == 2
    assert config.audit.mode == "async"


def test_file_then_environment(tmp_path: Path) -> None:
    path = write(tmp_path, '[upstream]\nurl = "http://127.0.0.1:9000"\n[identity]\ntenants = ["a", "b"]\n')
    config = load_config(path, environ={"GATEWAY_UPSTREAM_URL": "http://127.0.0.1:9001",
                                        "GATEWAY_IDENTITY_AUDIENCES": "x, y",
                                        "GATEWAY_AUDIT_FAIL_CLOSED": "false",
                                        "GATEWAY_SERVER_PORT": "8999"})
    assert config.upstream.url == "http://127.0.0.1:9001"
    assert config.identity.tenants == ("a", "b")
    assert config.identity.audiences == ("x", "y")
    assert config.audit.fail_closed is False
    assert config.server.port == 8999


@pytest.mark.parametrize(
    ("text", "env", "message"),
    [
        ("[upstream]\nurll = 'x'\n", {}, "upstream.urll: unknown key"),
        ("[upstrem]\nurl = 'x'\n", {}, "upstrem: unknown section"),
        ("[server]\nport = 'eighty'\n", {}, "server.port: expected an integer"),
        ("[server]\nport = true\n", {}, "server.port: expected an integer"),
        ("[identity]\ntenants = 'abc'\n", {}, "identity.tenants: expected a list"),
        ("[audit]\nmode = 'sometimes'\n", {}, "audit.mode:"),
        ("[upstream]\nurl = 'ftp://x'\n", {}, "upstream.url: expected an http(s) URL"),
        ("", {"GATEWAY_SERVER_PORT": "x"}, "server.port: expected an integer"),
        ("", {"GATEWAY_UPSTREAM_URLL": "x"}, "upstream.urll: unknown key"),
        ("", {"GATEWAY_NOPE_X": "1"}, "GATEWAY_NOPE_X: unknown configuration variable"),
        ("", {"GATEWAY_AUDIT_FAIL_CLOSED": "perhaps"}, "audit.fail_closed: expected a boolean"),
        ("[policies]\ndir = '/nonexistent/dir'\n", {}, "policies.dir: not a directory"),
        ("not toml [", {}, "is not valid TOML"),
    ],
)
def test_errors_name_the_key(tmp_path: Path, text: str, env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text), environ=env)
    assert message in str(caught.value)


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "absent.toml", environ={})


def test_cli_exits_2_with_one_line(tmp_path: Path) -> None:
    path = write(tmp_path, "[server]\nportt = 1\n")
    done = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "serve", "--config", str(path)],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert "server.portt: unknown key" in lines[0]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"GATEWAY_IDENTITY_TENANTS": "contoso"}, "identity.tenants must be tenant GUIDs"),
        ({"GATEWAY_AUDIT_RETENTION_DAYS": "-3"}, "audit.retention_days must not be negative"),
    ],
)
def test_a_setting_a_component_refuses_is_one_line_and_exit_2(
    tmp_path: Path, env: dict[str, str], message: str
) -> None:
    """Values of the right type that a component's own settings refuse (issue 17): no traceback."""
    import os

    from tests.demo.test_ports import reserved_ports

    with reserved_ports(1) as (port,):  # free for the command only while it runs
        done = subprocess.run(
            [sys.executable, "-m", "gateway.cli", "serve", "--port", str(port)],
            capture_output=True, text=True, timeout=60,
            env={**os.environ, "GATEWAY_AUDIT_PATH": str(tmp_path / "audit.sqlite"), **env},
        )  # fmt: skip
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], done.stderr
