"""What ``gateway serve`` runs without ``--config``: the demo's tenants, API, identity provider and
reference services (CONTRACT section 2: "the built-in defaults that ``gateway demo`` uses").

It is a layer below the file and the environment, applied only when no file is named. The
settings types' own defaults are production's and name no tenant or audience, so a configuration
file that forgets ``identity.tenants`` is an error naming the key, never a gateway that trusts the
demo's tenants.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.demo import tenants

DEMO_DEFAULTS: Mapping[str, Mapping[str, Any]] = {
    "server": {"port": tenants.GATEWAY_PORT},
    "upstream": {"url": f"http://127.0.0.1:{tenants.UPSTREAM_PORT}"},
    "identity": {
        "authority": f"http://127.0.0.1:{tenants.IDP_PORT}",
        "tenants": list(tenants.TENANTS),
        "audiences": [tenants.GATEWAY_CLIENT_ID, tenants.GATEWAY_APP_ID_URI],
    },
}


def defaults_for(config_path: object) -> Mapping[str, Mapping[str, Any]] | None:
    """The demo layer when no configuration file is named, else none."""
    return None if config_path else DEMO_DEFAULTS
