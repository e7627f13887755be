"""Which kind of token may carry which role: the role model of ``policies/taxonomy/roles.toml``.

Employee roles count only on delegated tokens (a person, Cedar ``User``), service roles only on
app-only tokens (an application, Cedar ``App``). The schema states it with two role entity types
(``User in [EmployeeRole]``, ``App in [ServiceRole]``), so Cedar itself refuses an entity store in
which an application is a member of an employee role. The engine checks every principal against this
model before any policy is asked: a token carrying a role of the other kind is refused whole, with
one reason naming the mismatch (``role-kind-mismatch``), and is audited like any refusal. A role the
model does not list is dropped from the principal (no policy may name it, so none could grant on it).
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from gateway.authz.errors import PolicyError, read_bundle_text

ROLES_FILE = "roles.toml"
ROLE_KIND_MISMATCH = "role-kind-mismatch"
MISMATCH_SOURCE = "CONTRACT.md, 4. Request contract (Human = delegated token; automated = app-only token)"

#: The Cedar entity type of each kind of role, and the principal kind that may hold it.
ROLE_TYPES: Mapping[str, Literal["user", "app"]] = {"EmployeeRole": "user", "ServiceRole": "app"}
ROLE_TYPE_OF_KIND: Mapping[str, str] = {"user": "EmployeeRole", "app": "ServiceRole"}
_KIND_NAMES = {"user": "delegated (a person's) token", "app": "app-only token"}
_ROLE_NAMES = {"EmployeeRole": "employee role", "ServiceRole": "service role"}


@dataclass(frozen=True, slots=True)
class RoleCheck:
    """A principal's roles sorted by what they are worth on its token."""

    admitted: tuple[str, ...]  # roles of the token's own kind: the principal's Cedar parents
    mismatched: tuple[str, ...]  # roles of the other kind: the token is refused


@dataclass(frozen=True, slots=True)
class RoleModel:
    employee: frozenset[str]
    service: frozenset[str]
    source: str = ROLES_FILE
    _checks: dict[tuple[str, tuple[str, ...]], RoleCheck] = field(default_factory=dict, compare=False, repr=False)

    def type_of(self, role: str) -> str | None:
        """The Cedar entity type of a listed role; None when the model does not list it."""
        if role in self.employee:
            return "EmployeeRole"
        if role in self.service:
            return "ServiceRole"
        return None

    def check(self, kind: str, roles: tuple[str, ...]) -> RoleCheck:
        """Sort a token's roles for a principal of ``kind`` ("user" or "app"); cached per role tuple."""
        key = (kind, roles)
        found = self._checks.get(key)
        if found is None:
            own, other = (self.employee, self.service) if kind == "user" else (self.service, self.employee)
            found = RoleCheck(
                admitted=tuple(r for r in roles if r in own),
                mismatched=tuple(r for r in roles if r in other),
            )
            if len(self._checks) < 65536:  # role tuples come from tokens: bounded
                self._checks[key] = found
        return found

    def mismatch_reason(self, kind: str, mismatched: Iterable[str]) -> dict[str, str]:
        names = sorted(mismatched)
        other = "ServiceRole" if kind == "user" else "EmployeeRole"
        holder = "people (delegated tokens)" if other == "EmployeeRole" else "applications (app-only tokens)"
        plural = "s" if len(names) > 1 else ""
        return {
            "policy": ROLE_KIND_MISMATCH,
            "source": MISMATCH_SOURCE,
            "clause": (
                f"This {_KIND_NAMES[kind]} carries the {_ROLE_NAMES[other]}{plural} {', '.join(names)}, "
                f"which only {holder} may hold; a token whose roles belong to the other kind of caller "
                "is refused."
            ),
        }


def load_roles(directory: Path) -> RoleModel:
    """Read ``roles.toml`` of a bundle's taxonomy directory; ``PolicyError`` naming the file on any problem."""
    path = directory / ROLES_FILE
    try:
        document: dict[str, Any] = tomllib.loads(read_bundle_text(path, "the role model"))
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"{path}:{getattr(exc, 'lineno', 1)}: {exc}") from None
    problems: list[str] = []
    unknown = sorted(set(document) - {"employee", "service"})
    if unknown:
        problems.append(f"{path}:1: unknown section(s) {', '.join(unknown)} (only [employee] and [service])")
    kinds: dict[str, frozenset[str]] = {}
    for kind in ("employee", "service"):
        section = document.get(kind, {})
        roles = section.get("roles", []) if isinstance(section, dict) else None
        if not isinstance(roles, list) or not all(isinstance(r, str) and r.strip() == r and r for r in roles):
            problems.append(f"{path}:1: [{kind}] roles must be a list of role names")
            roles = []
        kinds[kind] = frozenset(roles)
    both = sorted(kinds["employee"] & kinds["service"])
    if both:
        problems.append(f"{path}:1: role(s) {', '.join(both)} listed as both employee and service roles")
    if problems:
        raise PolicyError(*problems)
    return RoleModel(kinds["employee"], kinds["service"], str(path))


def role_literals(node: Any) -> Iterable[tuple[str, str]]:
    """Every ``(entity type, id)`` role literal of a policy's JSON form."""
    if isinstance(node, dict):
        entity = node.get("__entity")
        if isinstance(entity, dict) and entity.get("type") in ROLE_TYPES:
            yield str(entity["type"]), str(entity.get("id"))
            return
        if node.get("type") in ROLE_TYPES and isinstance(node.get("id"), str) and len(node) == 2:
            yield str(node["type"]), str(node["id"])  # a scope's entity: {"type": ..., "id": ...}
        for value in node.values():
            yield from role_literals(value)
    elif isinstance(node, list):
        for value in node:
            yield from role_literals(value)
