"""Shared helpers for the policy-pack tests: the shipped policies, route maps and fixture names."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from gateway.authz.engine import PolicyEngine
from gateway.demo.tenants import CONTOSO_TENANT, FABRIKAM_TENANT

ROOT = Path(__file__).resolve().parents[2]
POLICIES = ROOT / "policies"
ROUTE_MAPS = (ROOT / "gateway" / "adapters" / "reference.toml", ROOT / "gateway" / "adapters" / "gmail.toml")
TENANTS = (CONTOSO_TENANT, FABRIKAM_TENANT)
ALICE = "0b1c2d3e-0000-4000-8000-00000000a11c"
BOB = "0b1c2d3e-0000-4000-8000-000000000b0b"
CAROL = "0b1c2d3e-0000-4000-8000-00000000ca01"
PEOPLE = (ALICE, BOB, CAROL)
EMPLOYEE_ROLES = (
    "Support.Agent", "Sales.Rep", "Billing.Admin", "Marketing.Manager", "Analyst", "Security.Investigator",
    "Legal.Officer", "Auditor", "Engineering.Operator",
)  # fmt: skip
SERVICE_ROLES = ("Service.Mail", "Service.Payments", "Service.Analytics", "Service.CrmSync")
ROLES = EMPLOYEE_ROLES + SERVICE_ROLES


@cache
def shipped_engine() -> PolicyEngine:
    """The shipped policies (base and every pack) over the shipped route maps, loaded once per process."""
    return PolicyEngine.load(POLICIES, ROUTE_MAPS, validate_requests=True)
