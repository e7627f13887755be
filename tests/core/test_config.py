"""The settings layer: one reader (gateway/config.py) into each package's checked settings type."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import typing
from pathlib import Path
from typing import Any

import pytest

from gateway import cliconfig
from gateway.config import SECTIONS, ConfigError, load_config, load_section
from gateway.demo.tenants import CONTOSO_TENANT, FABRIKAM_TENANT, GATEWAY_CLIENT_ID, TENANTS
from gateway.settings import config_fields
from tests.demo.test_ports import reserved_ports

AUDIENCE = "api://privacy-gateway"
#: What a production file must say at least (the types' defaults name no tenant and no audience).
IDENTITY = f"[identity]\ntenants = ['{CONTOSO_TENANT}']\naudiences = ['{AUDIENCE}']\n"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    return path


def gateway_cli(*argv: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """The real command line in a subprocess, with only the given ``GATEWAY_*`` variables."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *argv], capture_output=True, text=True, timeout=60,
        env={**clean, **env}, cwd=cwd,
    )  # fmt: skip


def one_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    return lines[0]


# --- layers -------------------------------------------------------------------------------------


def test_without_a_file_the_defaults_are_the_demo_stack() -> None:
    config = cliconfig.load(None, environ={})
    assert config.upstream.url == "http://127.0.0.1:8081"
    assert config.identity.authority == "http://127.0.0.1:8082"
    assert config.identity.tenants == TENANTS
    assert config.identity.audiences[0] == GATEWAY_CLIENT_ID
    assert config.server.port == 8080 and config.audit.mode == "async"


def test_production_defaults_trust_no_tenant() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, environ={})
    assert caught.value.key == "identity.tenants" and "no tenant configured" in str(caught.value)


def test_a_file_gets_no_demo_tenant_and_entras_authority(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^identity\.tenants: no tenant configured"):
        cliconfig.load(write(tmp_path, "[server]\nport = 9000\n"), environ={})
    with pytest.raises(ConfigError, match=r"^identity\.audiences: no audience configured"):
        cliconfig.load(write(tmp_path, f"[identity]\ntenants = ['{CONTOSO_TENANT}']\n"), environ={})
    config = cliconfig.load(write(tmp_path, IDENTITY), environ={})
    assert config.identity.authority == "https://login.microsoftonline.com"
    assert config.identity.tenants == (CONTOSO_TENANT,)


def test_file_then_environment(tmp_path: Path) -> None:
    path = write(tmp_path, f'[upstream]\nurl = "http://127.0.0.1:9000"\n{IDENTITY}')
    config = cliconfig.load(path, environ={
        "GATEWAY_UPSTREAM_URL": "http://127.0.0.1:9001",
        "GATEWAY_IDENTITY_TENANTS": f"{CONTOSO_TENANT.upper()}, {FABRIKAM_TENANT}",
        "GATEWAY_IDENTITY_AUDIENCES": "x, y",
        "GATEWAY_AUDIT_FAIL_CLOSED": "false",
        "GATEWAY_SERVER_PORT": "8999",
    })  # fmt: skip
    assert config.upstream.url == "http://127.0.0.1:9001"
    assert config.identity.tenants == (CONTOSO_TENANT, FABRIKAM_TENANT)  # normalised by IdentitySettings
    assert config.identity.audiences == ("x", "y")
    assert config.audit.fail_closed is False
    assert config.server.port == 8999
    assert config.source == str(path)


def test_one_section_needs_nothing_from_the_others(tmp_path: Path) -> None:
    """`gateway audit ...` reads [audit] only: an auditor's copy need not hold the policy files."""
    path = write(tmp_path, "[policies]\ndir = '/nowhere'\n[audit]\npath = 'kept.sqlite'\nretention_days = 30\n")
    from gateway.audit.settings import AuditSettings

    audit = load_section(AuditSettings, path, environ={"GATEWAY_AUDIT_RETENTION_DAYS": "31"})
    assert audit.path == "kept.sqlite" and audit.retention_days == 31
    with pytest.raises(ConfigError, match=r"policies\.dir: not a directory"):
        load_config(path, environ={"GATEWAY_IDENTITY_TENANTS": CONTOSO_TENANT, "GATEWAY_IDENTITY_AUDIENCES": "a"})


# --- refusals name the key ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "env", "message"),
    [
        ("[upstream]\nurll = 'x'\n", {}, "upstream.urll: unknown key"),
        ("[upstrem]\nurl = 'x'\n", {}, "upstrem: unknown section"),
        ("[server]\nport = 'eighty'\n", {}, "server.port: expected an integer"),
        ("[server]\nport = true\n", {}, "server.port: expected an integer"),
        ("[server]\nport = 70000\n", {}, "server.port: must be at most 65535, got 70000"),
        ("[server]\nlog_level = 'loud'\n", {}, "server.log_level: expected one of 'critical'"),
        ("[server]\nkeep_alive_seconds = 0\n", {}, "server.keep_alive_seconds: must be at least 1"),
        ("[server]\ndelegation_ttl_seconds = 0\n", {}, "server.delegation_ttl_seconds: must be more than 0"),
        ("[identity]\ntenants = 'abc'\n", {}, "identity.tenants: expected a list"),
        ("[identity]\ntenants = [1]\n", {}, "identity.tenants: expected a list of strings"),
        ("[identity]\nauthority = 'login.example'\n", {}, "identity.authority: expected an http(s) URL"),
        ("[audit]\nmode = 'sometimes'\n", {}, "audit.mode: expected 'async' or 'durable', got 'sometimes'"),
        ("[audit]\nretention_days = -3\n", {}, "audit.retention_days: must be at least 0, got -3"),
        ("[audit]\notlp_endpoint = 'collector:4318'\n", {}, "audit.otlp_endpoint: expected an http(s) URL"),
        ("[audit]\nexport_interval_seconds = nan\n", {}, "audit.export_interval_seconds: expected a finite number"),
        ("[upstream]\nurl = 'ftp://x'\n", {}, "upstream.url: expected an http(s) URL"),
        ("[upstream]\nassertion_ttl_seconds = 61\n", {}, "upstream.assertion_ttl_seconds: must be at most 60"),
        ("[policies]\ndecision_cache_size = -5\n", {}, "policies.decision_cache_size: must be at least 0, got -5"),
        ("[policies]\ndir = '/nonexistent/dir'\n", {}, "policies.dir: not a directory"),
        ("[policies]\nresolver_url = 'nope'\n", {}, "policies.resolver_url: expected an http(s) URL"),
        ("", {"GATEWAY_SERVER_PORT": "x"}, "server.port: expected an integer, got 'x'"),
        ("", {"GATEWAY_SERVER_WORKERS": "0"}, "server.workers: must be at least 1, got 0"),
        ("", {"GATEWAY_AUDIT_EXPORT_INTERVAL_SECONDS": "nan"}, "audit.export_interval_seconds: expected a finite"),
        ("", {"GATEWAY_UPSTREAM_URLL": "x"}, "upstream.urll: unknown key"),
        ("", {"GATEWAY_NOPE_X": "1"}, "GATEWAY_NOPE_X: unknown configuration variable"),
        ("", {"GATEWAY_AUDIT_FAIL_CLOSED": "perhaps"}, "audit.fail_closed: expected a boolean"),
        ("", {"GATEWAY_IDENTITY_TENANTS": "contoso"}, "identity.tenants: expected tenant GUIDs, got 'contoso'"),
        # tuning that code sets is no configuration key
        ("", {"GATEWAY_IDENTITY_RETRY_MIN_SECONDS": "1"}, "identity.retry_min_seconds: unknown key"),
        ("[audit]\nlinger_seconds = 0.1\n", {}, "audit.linger_seconds: unknown key"),
        ("not toml [", {}, "is not valid TOML"),
    ],
)
def test_errors_name_the_key(tmp_path: Path, text: str, env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        cliconfig.load(write(tmp_path, IDENTITY + text if "[identity]" not in text else text), environ=env)
    assert message in str(caught.value)
    assert str(caught.value).startswith(caught.value.key + ": ")


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--config: file not found"):
        load_config(tmp_path / "absent.toml", environ={})


# --- the sweep: every numeric key has a range, and the range is enforced through the reader --------


def numeric_keys() -> list[tuple[str, dataclasses.Field[Any], type[Any]]]:
    keys = []
    for section, cls in SECTIONS.items():
        hints = typing.get_type_hints(cls)
        keys += [(f"{section}.{f.name}", f, hints[f.name]) for f in config_fields(cls) if hints[f.name] in (int, float)]
    return keys


def test_every_numeric_key_declares_its_range() -> None:
    unbounded = [key for key, f, _ in numeric_keys() if f.metadata.get("minimum") is None
                 and f.metadata.get("above") is None]  # fmt: skip
    assert unbounded == []
    assert len(numeric_keys()) > 30  # the sweep sees every section


@pytest.mark.parametrize(("key", "field", "kind"), numeric_keys(), ids=[k for k, _, _ in numeric_keys()])
def test_a_value_below_the_range_is_refused_naming_the_key(key: str, field: dataclasses.Field[Any], kind: type) -> None:
    bound = field.metadata["minimum"] if field.metadata.get("minimum") is not None else field.metadata["above"]
    below = bound - 1 if field.metadata.get("minimum") is not None else bound
    section, name = key.split(".")
    with pytest.raises(ConfigError) as caught:
        cliconfig.load(None, environ={f"GATEWAY_{section.upper()}_{name.upper()}": str(kind(below))})
    assert caught.value.key == key


def test_every_key_is_in_the_readme_table() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    table = readme[readme.index("### Configuration keys"):readme.index("## Auditing")]
    keys = [f"{s}.{f.name}" for s, cls in SECTIONS.items() for f in config_fields(cls)]
    assert [key for key in keys if f"`{key}`" not in table] == []


def test_the_reader_does_not_import_the_demo() -> None:
    """Production defaults never come from gateway.demo: importing the reader loads none of it."""
    code = "import sys, gateway.config; print(sorted(m for m in sys.modules if m.startswith('gateway.demo')))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "[]"


# --- every command that loads configuration: one line, exit 2, nothing written -------------------


def test_cli_exits_2_with_one_line(tmp_path: Path) -> None:
    done = gateway_cli("serve", "--config", str(write(tmp_path, "[server]\nportt = 1\n")), env={}, cwd=tmp_path)
    assert done.returncode == 2
    assert one_line(done) == "gateway: configuration error: server.portt: unknown key"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"GATEWAY_IDENTITY_TENANTS": "contoso"}, "identity.tenants: expected tenant GUIDs, got 'contoso'"),
        ({"GATEWAY_AUDIT_RETENTION_DAYS": "-3"}, "audit.retention_days: must be at least 0, got -3"),
        ({"GATEWAY_POLICIES_DECISION_CACHE_SIZE": "-5"}, "policies.decision_cache_size: must be at least 0"),
    ],
)
def test_serve_refuses_a_value_in_one_line_before_writing_anything(
    tmp_path: Path, env: dict[str, str], message: str
) -> None:
    """Issue 17: values of the right type that a settings type refuses: no traceback, exit 2, and
    refused before any key file or store is made."""
    store = tmp_path / "var"
    with reserved_ports(1) as (port,):  # free for the command only while it runs
        done = gateway_cli("serve", "--port", str(port), env={"GATEWAY_AUDIT_PATH": str(store / "audit.sqlite"), **env},
                           cwd=tmp_path)  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert one_line(done).startswith(f"gateway: configuration error: {message}")
    assert not store.exists()


def test_serve_with_a_file_naming_no_tenant_says_so(tmp_path: Path) -> None:
    done = gateway_cli("serve", "--config", str(write(tmp_path, "[server]\nport = 1\n")), env={}, cwd=tmp_path)
    assert done.returncode == 2
    assert one_line(done).startswith("gateway: configuration error: identity.tenants: no tenant configured")


@pytest.mark.parametrize(
    "argv",
    [("audit", "query"), ("audit", "purge"), ("audit", "report", "--out", "r.html"),
     ("audit", "subject", "ct-a-001"), ("policy", "replay", "policies")],
    ids=lambda argv: " ".join(argv[:2]),
)
def test_other_commands_refuse_the_same_way(tmp_path: Path, argv: tuple[str, ...]) -> None:
    root = Path(__file__).resolve().parents[2]
    args = [str(root / a) if a == "policies" else a for a in argv]
    done = gateway_cli(*args, env={"GATEWAY_AUDIT_RETENTION_DAYS": "-3"}, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert one_line(done) == "gateway: configuration error: audit.retention_days: must be at least 0, got -3"
