"""Shared builders for the authorization tests: real principals, facts and the shipped policies."""

from __future__ import annotations

import atexit
import shutil
import tempfile
import time
from pathlib import Path

from gateway.authz.engine import PolicyEngine
from gateway.authz.facts import ConsentFacts, Facts, TenantFacts
from gateway.demo.tenants import CONTOSO_TENANT, FABRIKAM_TENANT
from gateway.identity.principal import Principal

ROOT = Path(__file__).resolve().parents[2]
#: The shipped policies directory: base policies plus the policy packs.
SHIPPED_POLICIES = ROOT / "policies"


def _base_only() -> Path:
    """The schema, taxonomy, base manifest and base policies, plus the shared retention rule (the
    mechanism that reads records' facts), so these tests pin the base mechanisms whatever the packs
    add (the packs have their own tests)."""
    target = Path(tempfile.mkdtemp(prefix="authz-base-")) / "policies"
    atexit.register(shutil.rmtree, target.parent, True)
    target.mkdir()
    shutil.copy(SHIPPED_POLICIES / "schema.cedarschema", target)
    shutil.copytree(SHIPPED_POLICIES / "taxonomy", target / "taxonomy")
    shutil.copytree(SHIPPED_POLICIES / "base", target / "base")
    (target / "retention").mkdir()
    shutil.copy(SHIPPED_POLICIES / "packs" / "shared" / "retention.cedar", target / "retention")
    (target / "manifests").mkdir()
    shutil.copy(SHIPPED_POLICIES / "manifests" / "base.toml", target / "manifests")
    return target


POLICIES = _base_only()
ROUTE_MAPS = (ROOT / "gateway" / "adapters" / "reference.toml", ROOT / "gateway" / "adapters" / "gmail.toml")
A, B = CONTOSO_TENANT, FABRIKAM_TENANT
USER_1 = "0b1c2d3e-0000-4000-8000-000000000001"
USER_2 = "0b1c2d3e-0000-4000-8000-000000000002"
NOW = int(time.time())


def load_engine(**kwargs: object) -> PolicyEngine:
    return PolicyEngine.load(POLICIES, ROUTE_MAPS, validate_requests=True, **kwargs)  # type: ignore[arg-type]


def user(*roles: str, tenant: str = A, oid: str = USER_1) -> Principal:
    return Principal(
        kind="user",
        id=oid,
        tenant=tenant,
        roles=tuple(roles),
        scopes=("access_as_user",),
        groups=(),
        client_id="client-web",
        token_version="2.0",
        expires_at=NOW + 3600,
    )


def app(*roles: str, tenant: str = A, app_id: str = "app-0001") -> Principal:
    return Principal(
        kind="app",
        id=app_id,
        tenant=tenant,
        roles=tuple(roles),
        scopes=(),
        groups=None,
        client_id=app_id,
        token_version="1.0",
        expires_at=NOW + 3600,
    )


def facts(
    engine: PolicyEngine,
    principal: Principal,
    route_id: str,
    resource_id: str = "",
    *,
    tenant: str | None = None,
    owner: str | None = None,
    purpose: str = "essential.service",
    recipient: str | None = None,
    consent: ConsentFacts | None = None,
    body: tuple[tuple[str, str], ...] = (),
    recording: bool | None = True,
    optouts: frozenset[str] | None = None,
    retention: int | None = None,
    time: int = NOW,
) -> Facts:
    tenant = tenant or principal.tenant
    return Facts(
        principal=principal,
        route=engine.routes.by_id[route_id],
        resource_id=resource_id,
        tenant=tenant,
        owner=owner,
        purpose=purpose,
        recipient=recipient,
        consent=consent,
        body=body,
        tenant_facts=TenantFacts(tenant, True, recording, optouts, retention),
        time=time,
    )


#: The invented roles of ``generated_policies``, as employee roles (add them to a bundle's
#: ``taxonomy/roles.toml`` with ``register_generated_roles``).
GENERATED_ROLES = tuple(f"Gen.Role{i}" for i in range(40))


def register_generated_roles(policies_dir: Path) -> None:
    """Add the generated roles to the employee roles of a copied bundle's role model."""
    path = policies_dir / "taxonomy" / "roles.toml"
    names = ", ".join(f'"{r}"' for r in GENERATED_ROLES)
    path.write_text(path.read_text().replace("[employee]\nroles = [", f"[employee]\nroles = [{names}, ", 1))


def generated_policies(count: int, roles: tuple[str, ...] = ()) -> str:
    """Role-scoped permits and forbids over every action and record type (invented roles by default);
    every tenth policy has no principal scope, so it lands in every slice of its action and type."""
    actions = ["read", "list", "create", "update", "delete", "export", "send", "invite"]
    types = [
        "Contact",
        "Payment",
        "Call",
        "Recording",
        "Transcript",
        "Survey",
        "SurveyResponse",
        "SurveyResult",
        "AnalyticsEvent",
        "GmailMessage",
        "Consent",
        "TenantSettings",
        "OptOutList",
    ]
    out = []
    for i in range(count):
        effect = "forbid" if i % 5 == 0 else "permit"
        role = roles[i % len(roles)] if roles else f"Gen.Role{i % 40}"
        role_type = "ServiceRole" if role.startswith("Service.") else "EmployeeRole"
        principal = "principal" if roles and i % 10 == 3 else f'principal in {role_type}::"{role}"'
        out.append(
            f'@id("gen-{i}")\n@source("generated, benchmark")\n@clause("generated policy {i}")\n'
            f'{effect} ({principal}, action == Action::"{actions[i % len(actions)]}", '
            f"resource is {types[(i // len(actions)) % len(types)]})\n"
            'when { context.purpose in Purpose::"essential.service" && '
            "principal.tenant == resource.tenant };\n"
        )
    return "\n".join(out)
