"""Fixed identifiers shared by the reference services, the dev identity provider and the defaults.

They are deterministic so that tests, the demo and the load harness agree without coordination.
"""

from __future__ import annotations

#: First fixture tenant: call recording enabled.
CONTOSO_TENANT = "3f2a6c1e-8d4b-4c7a-9e21-5b8d0f4a7c11"
#: Second fixture tenant: call recording disabled.
FABRIKAM_TENANT = "9b7e4d2c-1a3f-4e8b-b6d5-2c9f8e1a4d22"
TENANTS: tuple[str, ...] = (CONTOSO_TENANT, FABRIKAM_TENANT)
TENANT_NAMES: dict[str, str] = {CONTOSO_TENANT: "contoso", FABRIKAM_TENANT: "fabrikam"}

#: The gateway's own application registration (the API the tokens are issued for).
GATEWAY_CLIENT_ID = "6e1c9a52-7d3b-4f0e-a8c4-1b2d3e4f5a60"
#: v1 tokens usually carry the App ID URI as audience, v2 tokens the client id.
GATEWAY_APP_ID_URI = "api://privacy-gateway"

#: Default loopback ports of the embedded stack (`gateway demo`).
GATEWAY_PORT = 8080
UPSTREAM_PORT = 8081
IDP_PORT = 8082
