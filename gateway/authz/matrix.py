"""``gateway policy matrix [DIR] [--route-map FILE ...] [--format table|json] [--kind user|app] [--role R]``:
every allow of a policy set, as one table a reviewer can diff.

What it enumerates. Every role of the role model (``taxonomy/roles.toml``), each alone, plus "no
role" (an end user, or an application holding none), times both kinds of principal (``user``: a
delegated token; ``app``: an app-only token), times every route of the route maps, times every
purpose of the taxonomy. Each combination is decided by the real engine (``PolicyEngine.decide``:
the role-kind check, slicing, entities, cedarpy, masking); nothing here re-implements a decision.
The command loads its engine with ``every_purpose`` (``PolicyEngine.load``): one entity store serves
every purpose of a combination, which cuts the shipped matrix from 25 s to 9.5 s with the same
output, line for line.

How a request is built. Like a live request of a caller in its own tenant: the ``contoso`` tenant of
the packs' ``fixtures.toml`` (its facts as the resolvers would give them: recording enabled, its
opt-out list on the routes that resolve one, its retention table for the route's kind of record),
the fixtures' default time, the caller ``bob`` (a person) or ``matrix-app`` (an application). The
path's tenant is the caller's; a record id is a representative ``rec-1`` (the tenant's own id where
the record *is* the tenant); the inputs go through ``authorizer.check_inputs`` as a live request's
headers and body do. Some routes are asked more than once, each a *variant* of the row:

- a route with an owner (a Gmail mailbox ``{userId}``, a consent's subject): ``owner=other`` (another
  person's, ``alice``) and ``owner=own`` (the caller's own, what ``me`` resolves to);
- a route that needs ``X-Recipient``: ``recipient=NAME`` for every recipient and recipient group the
  manifests list;
- a route that lifts its body: an ordinary address (``new.customer@example.com``) for an e-mail.

Trade-offs, on purpose:

- Only the first decision, the one made before forwarding: no record facts (age, opt-out) and no
  consent (``X-Consent-Ref``). An allow that a record's facts later withhold (retention, an opted-out
  contact) is still listed, because the policy set does allow the request; allows that exist only
  with a consent (Google Limited Use exception 1) are not enumerated: a consent names specific
  records, and the matrix would have to invent them.
- One tenant, the caller's own. Cross-tenant requests are the tenant-isolation properties' concern
  (``tests/policies/test_properties.py``); a matrix over two tenants would double every row for
  what is, by construction, one deny.
- Roles alone, never combined: a policy that needs two roles at once, or a forbid scoped to one role
  that cancels a permit of another, does not show. Combinations grow as 2^13; single roles are what
  a review of a role grant asks about.
- Output for diffs, not for reading at a glance: one line per (kind, role, route, variant, determining
  permits, masked fields) with fixed column widths (a new long name shifts only its own line), sorted,
  purposes compressed over the purpose tree (``p*``: ``p`` and every purpose below it, with the same
  permits and masks; a leaf is never starred), so a change adds, removes or edits exactly the lines
  of the allows it changes. ``--format json`` gives the same rows with the purposes also expanded.

The last line is ``N decisions, M allows over K (kind, role, route) rows``: every decision asked
(variants and purposes included), the allowed ones, and the (kind, role, route) combinations walked.
Exit 0; 1 with ``file:line`` diagnostics when the policy set (or a fixtures file) cannot be read; 2 for
a ``--role`` the role model does not list.

Size: the enumeration, the request built for each combination, the compression into rows and both
output formats sit together, so that what a cell of the table means and how it was decided are read
in one place.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from gateway.adapters.routemap import Route
from gateway.authz.decide import InvalidInput, check_inputs
from gateway.authz.emails import canonical_or_folded
from gateway.authz.engine import PolicyEngine
from gateway.authz.errors import PolicyError
from gateway.authz.facts import Facts, TenantFacts
from gateway.authz.policytest import Fixtures, SuiteError, discover, load_fixtures
from gateway.authz.taxonomy import Tree
from gateway.identity.principal import Principal

Kind = Literal["user", "app"]
KINDS: tuple[Kind, ...] = ("user", "app")
NO_ROLE = "(none)"
#: What ``--role`` takes for "no role".
NO_ROLE_ARGUMENTS = frozenset({"none", NO_ROLE})
TENANT_ALIAS = "contoso"
CALLER_ALIAS = "bob"
OTHER_ALIAS = "alice"
APP_ID = "matrix-app"
REPRESENTATIVE_ID = "rec-1"
ORDINARY_EMAIL = "new.customer@example.com"
ORDINARY_STRING = "matrix"
#: Used when the policies directory has no fixtures (a bare policy set): a tenant with recording on.
FALLBACK_TENANT = "3f2a6c1e-8d4b-4c7a-9e21-5b8d0f4a7c11"
FALLBACK_CALLER = "0b1c2d3e-0000-4000-8000-000000000b0b"
FALLBACK_OTHER = "0b1c2d3e-0000-4000-8000-00000000a11c"
FALLBACK_TIME = 1_790_856_000  # 2026-10-01T12:00:00Z
_WIDTHS = (5, 22, 22, 26)  # kind, role, route, variant


# --- the setting: who asks, where, when ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Setting:
    """The facts every request of the matrix shares: the caller's tenant and its settings, the
    caller, another person of the tenant (whose mailbox is not the caller's) and the time."""

    tenant: str
    recording: bool | None
    optouts: frozenset[str]
    retention: tuple[tuple[str, int], ...]  # the tenant's retention_days table, sorted
    caller: str  # the person's oid
    other: str  # another person's oid
    app_id: str
    time: int

    def tenant_facts(self, route: Route) -> TenantFacts:
        """What the resolvers would give for ``route``: opt-outs only where the route resolves them,
        the retention of the route's kind of record only where the route map names one."""
        retention = dict(self.retention).get(route.tenant_retention) if route.tenant_retention else None
        return TenantFacts(
            tenant=self.tenant,
            known=True,
            call_recording_enabled=self.recording,
            optouts=self.optouts if "optouts" in route.resolve else None,
            retention_days=retention,
        )


def _time(value: Any) -> int:
    if isinstance(value, bool):
        raise SuiteError(f"fixtures: default time {value!r} is not a time")
    if isinstance(value, int):
        return value
    if isinstance(value, datetime):
        return int(value.timestamp())
    if isinstance(value, str):
        try:
            return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp())
        except ValueError:
            pass
    raise SuiteError(f"fixtures: default time {value!r} is not RFC 3339 or seconds since the epoch")


def setting_from(fixtures: Fixtures) -> Setting:
    """The setting from the packs' fixtures: the ``contoso`` tenant (else the first one listed), the
    users ``bob`` (the caller) and ``alice`` (another person), the default time."""
    tenant = fixtures.tenants.get(TENANT_ALIAS) or next(iter(fixtures.tenants.values()), FALLBACK_TENANT)
    raw: Mapping[str, Any] = fixtures.tenant_facts.get(tenant, {})
    recording = raw.get("call_recording_enabled") if fixtures.tenants else True
    table = raw.get("retention_days") or {}
    if not isinstance(table, dict) or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in table.values()
    ):
        raise SuiteError(f"fixtures: tenant {tenant}: retention_days must be a table of day counts")
    return Setting(
        tenant=tenant,
        recording=bool(recording) if recording is not None else None,
        optouts=frozenset(canonical_or_folded(str(o)) for o in raw.get("optouts") or ()),
        retention=tuple(sorted((str(k), int(v)) for k, v in table.items())),
        caller=fixtures.users.get(CALLER_ALIAS, FALLBACK_CALLER),
        other=fixtures.users.get(OTHER_ALIAS, FALLBACK_OTHER),
        app_id=APP_ID,
        time=_time(fixtures.time) if fixtures.time is not None else FALLBACK_TIME,
    )


def load_setting(policies_dir: str | Path) -> Setting:
    """The setting from every ``fixtures.toml`` under ``policies_dir`` (``SuiteError`` if unreadable)."""
    fixture_files, _ = discover(Path(policies_dir))
    return setting_from(load_fixtures(fixture_files))


def principal_for(setting: Setting, kind: str, roles: Sequence[str]) -> Principal:
    """A verified token's principal: a person (delegated token, ``access_as_user``) or an application."""
    if kind == "user":
        return Principal(
            kind="user", id=setting.caller, tenant=setting.tenant, roles=tuple(roles),
            scopes=("access_as_user",), groups=(), client_id="client-web", token_version="2.0",
            expires_at=setting.time + 3600,
        )  # fmt: skip
    return Principal(
        kind="app", id=setting.app_id, tenant=setting.tenant, roles=tuple(roles), scopes=(), groups=None,
        client_id=setting.app_id, token_version="1.0", expires_at=setting.time + 3600,
    )  # fmt: skip


# --- the requests of one route ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Variant:
    """One way of asking a route: whose record, which recipient, which body."""

    label: str  # "" for the route's only variant; else e.g. "owner=own", "recipient=salesforce"
    owner: Literal["own", "other"] | None
    recipient: str | None
    body: bytes | None


def _body(route: Route) -> bytes | None:
    if not route.lift:
        return None
    document: dict[str, Any] = {}
    for rule in route.lift:
        node = document
        for token in rule.pointer.tokens[:-1]:
            node = node.setdefault(token, {})
        node[rule.pointer.tokens[-1]] = ORDINARY_EMAIL if rule.kind == "email" else ORDINARY_STRING
    return json.dumps(document).encode()


def variants(engine: PolicyEngine, route: Route) -> tuple[Variant, ...]:
    """The variants of ``route``, sorted by label."""
    owners: tuple[Literal["own", "other"] | None, ...] = (None,)
    if route.owner_param is not None or "consent_owner" in route.resolve:
        owners = ("other", "own")
    recipients: tuple[str | None, ...] = (None,)
    if "recipient" in route.require:
        recipients = tuple(sorted(engine.manifests.recipient_members))
    body = _body(route)
    out = []
    for owner, recipient in itertools.product(owners, recipients):
        parts = ([f"owner={owner}"] if owner else []) + ([f"recipient={recipient}"] if recipient else [])
        out.append(Variant(",".join(parts), owner, recipient, body))
    return tuple(sorted(out, key=lambda v: v.label))


def request_facts(
    engine: PolicyEngine, setting: Setting, principal: Principal, route: Route, variant: Variant, purpose: str
) -> Facts:
    """The facts of the live request for ``route`` asked as ``variant`` for ``purpose``, before the
    upstream answers. ``InvalidInput`` when the request would be a 400 (an unknown purpose)."""
    inputs = check_inputs(engine, route, purpose, variant.recipient, None, variant.body)
    if route.id_param is None:
        resource_id = ""
    elif route.id_param == route.tenant_param:
        resource_id = setting.tenant
    else:
        resource_id = REPRESENTATIVE_ID
    owner = None
    if variant.owner == "own":
        owner = principal.id
    elif variant.owner == "other":
        owner = setting.other
    return Facts(
        principal=principal,
        route=route,
        resource_id=resource_id,
        tenant=setting.tenant,
        owner=owner,
        purpose=inputs.purpose,
        recipient=inputs.recipient,
        consent=None,
        body=inputs.body,
        tenant_facts=setting.tenant_facts(route),
        time=setting.time,
    )


# --- the matrix ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Allow:
    """One allowed decision."""

    kind: str
    role: str | None
    route: str
    variant: str
    purpose: str
    policies: tuple[str, ...]  # the determining permits
    masked: tuple[str, ...]  # the masked fields' pointers, sorted


@dataclass(frozen=True, slots=True)
class Row:
    """Allowed purposes of one (kind, role, route, variant) with the same permits and masks."""

    kind: str
    role: str | None
    route: str
    variant: str
    purposes: tuple[str, ...]  # compressed over the purpose tree
    expanded: tuple[str, ...]  # every allowed purpose, sorted
    policies: tuple[str, ...]
    masked: tuple[str, ...]

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "role": self.role,
            "route": self.route,
            "variant": self.variant or None,
            "purposes": list(self.purposes),
            "purposes_expanded": list(self.expanded),
            "policies": list(self.policies),
            "masked": list(self.masked),
        }


@dataclass(frozen=True, slots=True)
class Matrix:
    allows: tuple[Allow, ...]
    rows: tuple[Row, ...]
    decisions: int
    combinations: int  # (kind, role, route) combinations walked

    @property
    def summary(self) -> str:
        allows, rows = len(self.allows), self.combinations
        return f"{self.decisions} decisions, {allows} allows over {rows} (kind, role, route) rows"


def compress(tree: Tree, purposes: Iterable[str]) -> tuple[str, ...]:
    """``purposes`` over the purpose tree: a purpose with children, all of whose descendants are in the
    set, is written once as ``p*`` (its descendants not listed); the others as they are. Sorted."""
    chosen = set(purposes)
    full = {p for p in chosen if len(tree.descendants[p]) > 1 and tree.descendants[p] <= chosen}
    out = []
    for purpose in sorted(chosen):
        if any(a in full for a in tree.ancestors[purpose]):
            continue
        out.append(purpose + "*" if purpose in full else purpose)
    return tuple(out)


def _role_key(role: str | None) -> tuple[int, str]:
    return (0, "") if role is None else (1, role)


def build_matrix(
    engine: PolicyEngine,
    setting: Setting,
    *,
    kinds: Iterable[str] = KINDS,
    roles: Iterable[str | None] | None = None,
) -> Matrix:
    """Decide every (kind, role, route, variant, purpose) and gather the allows into rows.

    ``roles``: the roles to walk (None stands for no role); default every role of the role model
    and no role."""
    if roles is None:
        roles = [None, *sorted(engine.roles.employee | engine.roles.service)]
    role_list = sorted(set(roles), key=_role_key)
    kind_list = [k for k in KINDS if k in set(kinds)]
    routes = sorted(engine.routes.routes, key=lambda r: r.id)
    purposes = sorted(engine.taxonomy.purposes.parents)
    route_variants = {route.id: variants(engine, route) for route in routes}
    allows: list[Allow] = []
    decisions = 0
    for kind, role in itertools.product(kind_list, role_list):
        principal = principal_for(setting, kind, () if role is None else (role,))
        for route in routes:
            for variant in route_variants[route.id]:
                for purpose in purposes:
                    try:
                        facts = request_facts(engine, setting, principal, route, variant, purpose)
                    except InvalidInput:
                        decisions += 1  # a 400: asked, not allowed
                        continue
                    verdict, _ = engine.decide(facts)
                    decisions += 1
                    if verdict.allowed:
                        masked = tuple(sorted({m.pointer.text for m in verdict.masks}))
                        allows.append(
                            Allow(kind, role, route.id, variant.label, purpose, tuple(verdict.policy_ids), masked)
                        )
    return Matrix(
        allows=tuple(allows),
        rows=_rows(engine.taxonomy.purposes, allows),
        decisions=decisions,
        combinations=len(kind_list) * len(role_list) * len(routes),
    )


def _rows(tree: Tree, allows: Iterable[Allow]) -> tuple[Row, ...]:
    groups: dict[tuple[str, str | None, str, str, tuple[str, ...], tuple[str, ...]], list[str]] = {}
    for allow in allows:
        key = (allow.kind, allow.role, allow.route, allow.variant, tuple(sorted(allow.policies)), allow.masked)
        groups.setdefault(key, []).append(allow.purpose)
    rows = [
        Row(kind, role, route, variant, compress(tree, found), tuple(sorted(found)), policies, masked)
        for (kind, role, route, variant, policies, masked), found in groups.items()
    ]
    rows.sort(
        key=lambda r: (KINDS.index(r.kind) if r.kind in KINDS else 9, _role_key(r.role), r.route, r.variant,
                       r.expanded, r.policies, r.masked)
    )  # fmt: skip
    return tuple(rows)


# --- output -------------------------------------------------------------------------------------


def _line(cells: Sequence[str]) -> str:
    fixed = "".join(cell.ljust(width) + " " for cell, width in zip(cells[:4], _WIDTHS, strict=True))
    return (fixed + "  ".join(cells[4:])).rstrip()


def format_table(matrix: Matrix) -> str:
    lines = [_line(("kind", "role", "route", "variant", "purposes | permits | masked"))]
    for row in matrix.rows:
        lines.append(
            _line((
                row.kind, row.role or NO_ROLE, row.route, row.variant or "-",
                " ".join(row.purposes) + " | " + " ".join(row.policies) + " | " + (" ".join(row.masked) or "-"),
            ))
        )  # fmt: skip
    lines.append(matrix.summary)
    return "\n".join(lines)


def format_json(matrix: Matrix) -> str:
    """One JSON array of rows, then the summary line (as ``policy replay --format json`` does)."""
    return json.dumps([row.as_json() for row in matrix.rows], indent=2) + "\n" + matrix.summary


# --- command line -------------------------------------------------------------------------------


def _defaults() -> tuple[str, tuple[str, ...]]:
    from gateway.authz.settings import DEFAULT_POLICIES_DIR, DEFAULT_ROUTE_MAPS

    return DEFAULT_POLICIES_DIR, DEFAULT_ROUTE_MAPS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    policies_dir, route_maps = _defaults()
    parser.add_argument("dir", nargs="?", default=policies_dir, help=f"policies directory (default {policies_dir})")
    parser.add_argument(
        "--route-map", action="append", dest="route_maps", metavar="FILE",
        help="route map whose routes are walked (repeatable; default: the shipped maps)",
    )  # fmt: skip
    parser.add_argument("--format", choices=("table", "json"), default="table", help="output format (default table)")
    parser.add_argument("--kind", choices=KINDS, default=None, help="only this kind of principal")
    parser.add_argument(
        "--role", action="append", dest="roles", metavar="R",
        help="only this role (repeatable; 'none' for no role)",
    )  # fmt: skip
    parser.set_defaults(func=command, default_route_maps=route_maps)


def command(args: argparse.Namespace) -> int:
    """0: the matrix was printed; 1: the policies or fixtures cannot be read; 2: an unknown role."""
    route_maps = tuple(args.route_maps or getattr(args, "default_route_maps", None) or _defaults()[1])
    try:
        engine = PolicyEngine.load(args.dir, route_maps, validate_requests=True, every_purpose=True)
        setting = load_setting(args.dir)
    except PolicyError as exc:
        for line in exc.diagnostics:
            print(line, file=sys.stderr)
        print(f"{len(exc.diagnostics)} error(s)", file=sys.stderr)
        return 1
    except SuiteError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    roles: list[str | None] | None = None
    if args.roles:
        listed = engine.roles.employee | engine.roles.service
        unknown = sorted(r for r in args.roles if r not in listed and r not in NO_ROLE_ARGUMENTS)
        if unknown:
            print(
                f"gateway policy matrix: {', '.join(unknown)}: not a role of {engine.roles.source} "
                f"(listed: {', '.join(sorted(listed))}; 'none' for no role)",
                file=sys.stderr,
            )
            return 2
        roles = [None if r in NO_ROLE_ARGUMENTS else r for r in args.roles]
    matrix = build_matrix(engine, setting, kinds=(args.kind,) if args.kind else KINDS, roles=roles)
    print(format_json(matrix) if args.format == "json" else format_table(matrix))
    return 0


def register(policy_subparsers: Any) -> None:
    """Adds ``matrix`` to ``gateway policy`` (called by ``gateway.authz.commands``)."""
    parser = policy_subparsers.add_parser(
        "matrix",
        help="every role x principal kind x route x purpose against the policies: the allow table",
        description=(__doc__ or "").split("\n\n")[0],
    )
    add_arguments(parser)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gateway policy matrix", description=(__doc__ or "").split("\n\n")[0])
    add_arguments(parser)
    return int(command(parser.parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
