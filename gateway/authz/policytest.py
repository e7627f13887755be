"""``gateway policy test [DIR] [--coverage] [--threshold PCT]``: run the policy test suites.

Design. A suite is a TOML file in a ``tests/`` folder anywhere under DIR (the packs keep theirs beside
their policies); a pack's ``demo.toml`` (the requests ``gateway demo`` prints) is checked too, so the
demo cannot drift from the policies. Every case becomes a ``gateway.authz.cases.Case`` and is decided
by ``cases.evaluate_case``: the route maps' matching, the request checks, the facts and entities
the gateway builds, and real cedarpy over the loaded, sliced policy set. Nothing here re-implements a
decision; this module only reads the suite format, names things, compares and counts.

Suite format (the ``cases`` format of ``policy explain``, plus names and route ids)::

    [[case]]
    name = "support agent reads a payment: card number masked"
    principal = { kind = "user", tenant = "contoso", roles = ["Support.Agent"] }   # id optional
    route = "payments.read"                          # a route id of the route maps, with its
    params = { tid = "contoso", id = "pay-a-005" }   # path parameters (the case fails if the built
                                                     # path matches another route)
    purpose = "essential.service.operations.support"
    expect = { decision = "allow", policies = ["support-agent-reads"], masked = ["/card_number", "/expiry"] }

Instead of ``route``/``params``: ``request = { method, path }`` (``{contoso}`` in a path is replaced),
or ``action`` + ``resource = { type, id, tenant, owner, categories, fields }`` for a record no route
map carries. Optional: ``recipient``, ``consent`` (the record ``X-Consent-Ref`` would name),
``body`` (a JSON value), ``time``, ``tenant_facts``, ``record`` (the record the upstream answers
with, for routes that read facts from it: ``record = { created_at = "2016-03-14T09:26:53Z" }``; it is
reviewed as a live answer is). ``expect.policies`` is the exact set of determining policy ids
(``default-deny`` when nothing permitted); ``expect.withheld`` the list items the review withheld.
Names (tenant and user aliases, the default time) come from every ``fixtures.toml`` under DIR; a
tenant alias stands for its id wherever a tenant, path parameter or consent party is written, and a
user alias for its oid.

Coverage: a policy is covered when it determined some case's decision: a permit of an allowed
request, a forbid of a refused one (before forwarding, or once the record was read), a forbid that
masked a field or withheld a list item, or the permit that let a field be seen. The engine keeps
only the policies that hide a field, so for that last one the visible fields' categories are asked
of Cedar again, with the facts the decision was made on (``decided_facts``), the engine's entity
builders, and every policy that can decide a field (slicing never changes an answer). Coverage is
reported per folder (``base``, ``packs/aircall``, ...) and overall; ``--threshold`` fails the run
under a percentage.

Exit status: 0 when every case passed (and coverage reaches the threshold), 1 when not or when the
policies are broken (as for every ``policy`` command), 2 when a suite or fixtures file cannot be read
(``file:line`` diagnostics on stderr).

Size: the suite format (its reader, the names of ``fixtures.toml``, ``demo.toml``), running the
cases, coverage and the report, so that what a case file may say and what the run prints about it
are read together.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tomllib
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cedarpy

from gateway.authz.cases import Case, CaseError, evaluate_case_review, mismatches, parse_case
from gateway.authz.decision import Decision
from gateway.authz.engine import FIELD_ACTION, PolicyEngine
from gateway.authz.entities import context_json, field_requests
from gateway.authz.errors import PolicyError, report_broken
from gateway.authz.facts import Facts
from gateway.authz.policyset import build_policy_set
from gateway.authz.review import ResponseReview
from gateway.identity.claims import principal_from_claims
from gateway.identity.devtokens import token_claims
from gateway.identity.principal import Principal

SUITE_DIR = "tests"
DEMO_FILE = "demo.toml"
FIXTURES_FILE = "fixtures.toml"
_ID_NAMESPACE = uuid.UUID("5d0c6f7e-2b1a-4c3d-9e8f-7a6b5c4d3e2f")
_EXTRA_KEYS = frozenset({"route", "params"})
_DEMO_KEYS = frozenset({"title", "expect", "method", "path", "purpose", "token", "headers", "body", "policies"})


class SuiteError(ValueError):
    """A suite, demo or fixtures file that cannot be read; the message starts with ``file:line:``."""


# --- names --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Fixtures:
    """What the suites may name: tenants (alias -> id and facts), users (alias -> oid), consents."""

    tenants: Mapping[str, str]  # alias -> tenant id
    tenant_facts: Mapping[str, Mapping[str, Any]]  # tenant id -> facts the resolvers would give
    users: Mapping[str, str]  # alias -> oid
    consents: Mapping[str, Mapping[str, Any]]  # consent id -> record (for X-Consent-Ref in demo calls)
    time: Any  # default request time

    def tenant(self, value: str) -> str:
        return self.tenants.get(value, value)

    def party(self, value: str) -> str:
        """A user alias, tenant alias or literal (oids, role names)."""
        return self.users.get(value, self.tenants.get(value, value))

    def fill(self, template: str, *, users: bool = True) -> str:
        """``{alias}`` -> its id, for tenants (and users, unless ``users`` is False)."""
        names = (*self.tenants.items(), *self.users.items()) if users else tuple(self.tenants.items())
        for alias, value in names:
            template = template.replace("{" + alias + "}", value)
        return template


def load_fixtures(paths: Iterable[Path]) -> Fixtures:
    tenants: dict[str, str] = {}
    facts: dict[str, dict[str, Any]] = {}
    users: dict[str, str] = {}
    consents: dict[str, dict[str, Any]] = {}
    default_time: Any = None
    for path in paths:
        doc = _read_toml(path)
        unknown = set(doc) - {"defaults", "tenants", "users", "consents"}
        if unknown:
            raise SuiteError(f"{path}:1: unknown top-level keys: {', '.join(sorted(unknown))}")
        default_time = doc.get("defaults", {}).get("time", default_time)
        for alias, spec in doc.get("tenants", {}).items():
            if not isinstance(spec, dict) or not isinstance(spec.get("id"), str):
                raise SuiteError(f"{path}:1: [tenants.{alias}] needs an id")
            if tenants.get(alias, spec["id"]) != spec["id"]:
                raise SuiteError(f"{path}:1: tenant alias {alias!r} is defined twice with different ids")
            tenants[alias] = spec["id"].lower()
            facts[spec["id"].lower()] = {k: v for k, v in spec.items() if k != "id"}
        for alias, oid in doc.get("users", {}).items():
            if not isinstance(oid, str) or users.get(alias, oid) != oid:
                raise SuiteError(f"{path}:1: user alias {alias!r} must name one oid")
            users[alias] = oid
        for consent_id, record in doc.get("consents", {}).items():
            if not isinstance(record, dict):
                raise SuiteError(f"{path}:1: [consents.{consent_id}] must be a table")
            consents[consent_id] = {"id": consent_id, **record}
    return Fixtures(tenants, facts, users, consents, default_time)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise SuiteError(f"{path}:{getattr(exc, 'lineno', 1)}: TOML syntax: {exc}") from None
    except OSError as exc:
        raise SuiteError(f"{path}:1: cannot read: {exc}") from None


def _line_numbers(path: Path, header: str) -> list[int]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [n for n, line in enumerate(lines, 1) if line.strip() == header]


# --- cases --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SuiteCase:
    case: Case
    route_id: str | None  # the route the case names; the request must match it
    kind: str  # "case" | "demo"


def _default_user_id(tenant: str, roles: Sequence[str]) -> str:
    return str(uuid.uuid5(_ID_NAMESPACE, f"{tenant}:{'+'.join(sorted(roles)) or 'end-user'}"))


def _principal(raw: Any, fixtures: Fixtures, where: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise SuiteError(f"{where}: principal must be a table with kind, tenant, roles (and id)")
    principal = dict(raw)
    tenant = fixtures.tenant(str(principal.get("tenant", "")))
    principal["tenant"] = tenant
    roles = principal.get("roles", [])
    if "id" in principal:
        principal["id"] = fixtures.party(str(principal["id"]))
    elif principal.get("kind", "user") == "user":
        principal["id"] = _default_user_id(tenant, [str(r) for r in roles])
    else:
        principal["id"] = "app-" + ("-".join(str(r) for r in roles) or "none").lower()
    return principal


def _request(raw: dict[str, Any], engine: PolicyEngine, fixtures: Fixtures, where: str) -> dict[str, str]:
    route_id = raw["route"]
    route = engine.routes.by_id.get(route_id)
    if route is None:
        raise SuiteError(f"{where}: no route {route_id!r} in the route maps")
    params = raw.get("params", {})
    if not isinstance(params, dict):
        raise SuiteError(f"{where}: params must be a table")
    parts = []
    for segment in route.segments:
        if segment.literal is not None:
            parts.append(segment.literal)
        elif segment.param in params:
            parts.append(fixtures.party(str(params[segment.param])))
        else:
            raise SuiteError(f"{where}: route {route_id} needs the parameter {segment.param!r}")
    unknown = set(params) - {s.param for s in route.segments if s.param}
    if unknown:
        raise SuiteError(f"{where}: route {route_id} has no parameter {', '.join(sorted(unknown))}")
    return {"method": route.method, "path": "/" + "/".join(parts)}


def build_case(raw: Any, where: str, engine: PolicyEngine, fixtures: Fixtures) -> SuiteCase:
    """One suite ``[[case]]`` as a ``cases.Case``, names replaced by ids."""
    if not isinstance(raw, dict):
        raise SuiteError(f"{where}: a case is a table")
    data = {k: v for k, v in raw.items() if k not in _EXTRA_KEYS}
    data["principal"] = _principal(raw.get("principal"), fixtures, where)
    route_id = raw.get("route")
    if route_id is not None:
        if "request" in raw or "action" in raw:
            raise SuiteError(f"{where}: name either route (with params), request, or action and resource")
        data["request"] = _request(raw, engine, fixtures, where)
    elif isinstance(raw.get("request"), dict):
        data["request"] = {**raw["request"], "path": fixtures.fill(str(raw["request"].get("path", "")))}
    if isinstance(raw.get("resource"), dict):
        resource = dict(raw["resource"])
        for key in ("tenant", "owner"):
            if key in resource:
                resource[key] = fixtures.party(str(resource[key]))
        data["resource"] = resource
    if isinstance(raw.get("consent"), dict):
        consent = dict(raw["consent"])
        for key in ("subject", "grantee", "tenant"):
            if key in consent:
                consent[key] = fixtures.party(str(consent[key]))
        data["consent"] = consent
    if "time" not in data and fixtures.time is not None:
        data["time"] = fixtures.time
    if isinstance(data.get("expect"), str):
        data["expect"] = {"decision": data["expect"]}
    if not isinstance(data.get("expect"), dict) or "decision" not in data["expect"]:
        raise SuiteError(f'{where}: a case needs expect = {{ decision = "allow" | "deny", ... }}')
    try:
        case = parse_case(data, where, fixtures.tenant_facts)
    except CaseError as exc:
        raise SuiteError(str(exc)) from None
    return SuiteCase(case, str(route_id) if route_id is not None else None, "case")


def build_demo_call(raw: Any, where: str, fixtures: Fixtures) -> SuiteCase:
    """A ``[[call]]`` of a demo file: the token it describes is turned into a principal by the same
    claim checks the gateway runs on a verified token."""
    if not isinstance(raw, dict):
        raise SuiteError(f"{where}: a call is a table")
    unknown = set(raw) - _DEMO_KEYS
    if unknown:
        raise SuiteError(f"{where}: unknown keys {', '.join(sorted(unknown))}")
    if raw.get("expect") not in ("allow", "deny"):
        raise SuiteError(f'{where}: expect must be "allow" or "deny"')
    token = raw.get("token")
    if not isinstance(token, dict) or not isinstance(token.get("tenant"), str):
        raise SuiteError(f"{where}: token needs at least a tenant")
    tenant = fixtures.tenant(token["tenant"])
    version = int(token.get("version", 2))
    try:
        claims = token_claims(
            tenant,
            user=token.get("user"),
            app=token.get("app"),
            roles=token.get("roles", []),
            scopes=token.get("scopes", []),
            version=version,
        )
        principal = principal_from_claims(claims, tenant, f"{version}.0", float(claims["exp"]))
    except Exception as exc:  # a demo token the gateway would refuse is a broken demo
        raise SuiteError(f"{where}: token: {exc}") from None
    headers = {str(k).lower(): str(v) for k, v in (raw.get("headers") or {}).items()}
    consent_ref = headers.get("x-consent-ref")
    body = raw.get("body")
    data: dict[str, Any] = {
        "name": str(raw.get("title", where)),
        "principal": _principal_dict(principal),
        # `gateway demo` substitutes tenants only, so a demo path may name no user alias
        "request": {
            "method": str(raw.get("method", "GET")),
            "path": fixtures.fill(str(raw.get("path", "")), users=False),
        },
        "purpose": raw.get("purpose"),
        "expect": {"decision": raw.get("expect")},
    }
    if raw.get("policies") is not None:
        data["expect"]["policies"] = raw["policies"]
    if "x-recipient" in headers:
        data["recipient"] = headers["x-recipient"]
    if consent_ref is not None:
        record = fixtures.consents.get(consent_ref)
        if record is None:
            raise SuiteError(f"{where}: X-Consent-Ref {consent_ref!r} is not in the fixtures' [consents]")
        data["consent"] = {k: fixtures.party(v) if isinstance(v, str) else v for k, v in record.items()}
    if body is not None:
        try:
            data["body"] = json.loads(body) if isinstance(body, str) else body
        except ValueError:
            raise SuiteError(f"{where}: body is not JSON") from None
    if fixtures.time is not None:
        data["time"] = fixtures.time
    try:
        case = parse_case(data, where, fixtures.tenant_facts)
    except CaseError as exc:
        raise SuiteError(str(exc)) from None
    # parse_case builds its own Principal from the table; keep the one the claim checks produced.
    return SuiteCase(_with_principal(case, principal), None, "demo")


def _principal_dict(principal: Principal) -> dict[str, Any]:
    return {"kind": principal.kind, "id": principal.id, "tenant": principal.tenant,
            "roles": list(principal.roles), "scopes": list(principal.scopes)}  # fmt: skip


def _with_principal(case: Case, principal: Principal) -> Case:
    return dataclasses.replace(case, principal=principal)


def load_suite(path: Path, engine: PolicyEngine, fixtures: Fixtures) -> list[SuiteCase]:
    doc = _read_toml(path)
    is_demo = path.name == DEMO_FILE
    table = "call" if is_demo else "case"
    unknown = set(doc) - {table}
    if unknown:
        raise SuiteError(f"{path}:1: unknown top-level keys: {', '.join(sorted(unknown))} (expected [[{table}]])")
    items = doc.get(table, [])
    if not isinstance(items, list) or not items:
        raise SuiteError(f"{path}:1: no [[{table}]] entries")
    lines = _line_numbers(path, f"[[{table}]]")
    out = []
    for index, item in enumerate(items):
        where = f"{path}:{lines[index] if index < len(lines) else 1}"
        out.append(build_demo_call(item, where, fixtures) if is_demo else build_case(item, where, engine, fixtures))
    return out


def discover(directory: Path) -> tuple[list[Path], list[Path]]:
    """(fixtures files, suite and demo files) under ``directory``, sorted."""
    fixtures = sorted(p for p in directory.rglob(FIXTURES_FILE) if p.is_file())
    suites = sorted(
        p for p in directory.rglob("*.toml") if p.is_file() and (p.parent.name == SUITE_DIR or p.name == DEMO_FILE)
    )
    return fixtures, suites


# --- running ------------------------------------------------------------------------------------


@dataclass(slots=True)
class Outcome:
    case: SuiteCase
    decision: Decision
    problems: list[str]
    determined: frozenset[str]  # policy ids that determined this decision or one of its field masks
    withheld: tuple[str, ...] = ()  # array items the review of the case's record withheld

    @property
    def passed(self) -> bool:
        return not self.problems


@dataclass(slots=True)
class Coverage:
    group: str
    policies: list[str]
    covered: list[str]

    @property
    def missing(self) -> list[str]:
        return [p for p in self.policies if p not in self.covered]

    @property
    def percent(self) -> float:
        return 100.0 * len(self.covered) / len(self.policies) if self.policies else 100.0


@dataclass(slots=True)
class Report:
    outcomes: list[Outcome] = field(default_factory=list)
    coverage: list[Coverage] = field(default_factory=list)
    files: int = 0

    @property
    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.passed]

    @property
    def covered(self) -> int:
        return sum(len(c.covered) for c in self.coverage)

    @property
    def total(self) -> int:
        return sum(len(c.policies) for c in self.coverage)

    @property
    def percent(self) -> float:
        return 100.0 * self.covered / self.total if self.total else 100.0


def decided_facts(decision: Decision, reviewed: ResponseReview | None) -> Facts | None:
    """The facts Cedar last decided for a case: the request's, with the record's when one was read
    (fetched before forwarding, or the last record of the answer). None when Cedar was not asked."""
    basis = decision.basis
    if basis is None:
        return None
    if decision.record_facts is not None:
        return basis.facts.with_record(decision.record_facts, decision.record_time)
    if reviewed is not None and reviewed.reviewed:
        return basis.facts.with_record(reviewed.reviewed[-1][0], reviewed.reviewed_at)
    return basis.facts


def field_policy_set(engine: PolicyEngine) -> cedarpy.PolicySet | None:
    """Every policy that can decide a field (action ``read_field`` or any action), as one handle.

    The engine evaluates a slice of these; slicing never changes an answer, so the whole set gives
    the same decisions and names the same determining policies.
    """
    chosen = [p for p in engine.policies.policies if p.actions is None or FIELD_ACTION in p.actions]
    return build_policy_set(chosen) if chosen else None


def _field_permits(
    engine: PolicyEngine, handle: cedarpy.PolicySet | None, facts: Facts, decision: Decision
) -> set[str]:
    """The permits that let the visible response fields of an allowed decision be seen."""
    hidden = {m.category for m in decision.masks}
    visible = [c for c in facts.route.field_categories if c not in hidden]
    if not visible or handle is None:
        return set()
    entities = cedarpy.Entities.from_json_str(engine.entities.field_entities_json(facts, visible), engine.schema)
    results = cedarpy.is_authorized_batch(
        field_requests(facts, visible, context_json(facts)), handle, entities, engine.schema
    )
    return {policy for result in results if result.allowed for policy in result.diagnostics.reasons}


def run_case(engine: PolicyEngine, suite_case: SuiteCase, fields_handle: cedarpy.PolicySet | None = None) -> Outcome:
    case = suite_case.case
    try:
        decision, reviewed = evaluate_case_review(engine, case)
    except CaseError as exc:
        raise SuiteError(f"{case.source}: {exc}") from None
    problems = mismatches(case, decision, reviewed)
    if suite_case.route_id is not None and decision.route_id != suite_case.route_id:
        problems.insert(
            0, f"route: expected {suite_case.route_id}, the request matched {decision.route_id or 'no route'}"
        )
    determined = set(decision.policy_ids)
    for mask in decision.masks:
        determined.update(mask.policies)
    if reviewed is not None:
        determined.update(reviewed.policies)  # the policies that withheld items of a list
    facts = decided_facts(decision, reviewed) if decision.allowed else None
    if facts is not None:
        determined |= _field_permits(engine, fields_handle, facts, decision)
    return Outcome(suite_case, decision, problems, frozenset(determined), reviewed.withheld if reviewed else ())


def policy_group(engine: PolicyEngine, directory: Path, policy_id: str) -> str:
    """The folder of a policy's file relative to the policies directory (``base``, ``packs/aircall``)."""
    path = Path(engine.policies.by_id[policy_id].file)
    try:
        relative = path.resolve().parent.relative_to(directory.resolve())
    except ValueError:
        return str(path.parent)
    return str(relative) if str(relative) != "." else "."


def run_suites(
    policies_dir: str | Path, route_maps: Sequence[str | Path], *, engine: PolicyEngine | None = None
) -> Report:
    """Load the policies and every suite under ``policies_dir``; run them all.

    Raises ``PolicyError`` when the policies do not load and ``SuiteError`` when a suite is malformed.
    """
    directory = Path(policies_dir)
    engine = engine or PolicyEngine.load(directory, route_maps, validate_requests=True)
    fixture_files, suite_files = discover(directory)
    fixtures = load_fixtures(fixture_files)
    cases: list[SuiteCase] = []
    for path in suite_files:
        cases.extend(load_suite(path, engine, fixtures))
    fields_handle = field_policy_set(engine)
    outcomes = [run_case(engine, c, fields_handle) for c in cases]
    determined = set().union(*(o.determined for o in outcomes)) if outcomes else set()
    groups: dict[str, list[str]] = {}
    for policy in engine.policies.policies:
        groups.setdefault(policy_group(engine, directory, policy.id), []).append(policy.id)
    coverage = [Coverage(group, ids, [i for i in ids if i in determined]) for group, ids in sorted(groups.items())]
    return Report(outcomes, coverage, len(suite_files))


# --- output -------------------------------------------------------------------------------------


def _describe_request(case: Case, decision: Decision) -> str:
    principal = case.principal
    who = f"{principal.kind} {list(principal.roles) or '[no role]'} of {principal.tenant[:8]}"
    what = f"{case.method} {case.path}" if case.path else f"{case.action} {decision.resource_type}"
    extra = f"  recipient {case.recipient}" if case.recipient else ""
    return f"{who}: {what}  purpose {case.purpose}{extra}"


def _verdict(allowed: bool | None, policies: Iterable[str] | None, masked: Iterable[str] | None) -> str:
    text = "-" if allowed is None else ("allow" if allowed else "deny")
    if policies is not None:
        text += f" by [{', '.join(sorted(policies))}]"
    if masked is not None:
        text += f", masked [{', '.join(sorted(masked))}]"
    return text


def format_failure(outcome: Outcome) -> str:
    case, decision = outcome.case.case, outcome.decision
    expect = case.expect
    expected = _verdict(
        None if expect is None or expect.decision is None else expect.decision == "allow",
        expect.policies if expect is not None else None,
        expect.masked if expect is not None else None,
    )
    shown_masks = (expect is not None and expect.masked is not None) or decision.masks
    masked = decision.masked_pointers if shown_masks else None
    lines = [
        f"FAIL {case.source}  {case.name}",
        f"     request:  {_describe_request(case, decision)}",
        f"     expected: {expected}",
        f"     actual:   {_verdict(decision.allowed, decision.policy_ids, masked)}",
    ]
    if outcome.withheld or (expect is not None and expect.withheld is not None):
        lines.append(f"     withheld: {', '.join(outcome.withheld) or '-'}")
    for reason in decision.reasons:
        lines.append(f"       - {reason['policy']}: {reason['clause']}  ({reason['source']})")
    lines.append("     differences:")
    lines.extend(f"       {problem}" for problem in outcome.problems)
    return "\n".join(lines)


def format_report(report: Report, *, coverage: bool, verbose: bool = False) -> str:
    lines: list[str] = []
    if verbose:
        for outcome in report.outcomes:
            mark = "ok  " if outcome.passed else "FAIL"
            lines.append(f"{mark} {outcome.case.case.source}  {outcome.case.case.name}")
    lines.extend(format_failure(o) for o in report.failures)
    demos = sum(1 for o in report.outcomes if o.case.kind == "demo")
    total = len(report.outcomes)
    lines.append(
        f"policy tests: {total} cases ({total - demos} in suites, {demos} demo calls) from {report.files} file(s): "
        f"{total - len(report.failures)} passed, {len(report.failures)} failed"
    )
    lines.append(
        f"coverage: {report.covered}/{report.total} policies determined at least one decision ({report.percent:.1f}%)"
    )
    if coverage:
        width = max((len(c.group) for c in report.coverage), default=0)
        for item in report.coverage:
            lines.append(
                f"  {item.group:<{width}}  {len(item.covered):>3}/{len(item.policies):<3} {item.percent:5.1f}%"
            )
            if item.missing:
                lines.append(f"  {'':<{width}}  never determined: {', '.join(item.missing)}")
    return "\n".join(lines)


# --- command line -------------------------------------------------------------------------------


def _defaults() -> tuple[str, tuple[str, ...]]:
    from gateway.authz.settings import DEFAULT_POLICIES_DIR, DEFAULT_ROUTE_MAPS

    return DEFAULT_POLICIES_DIR, DEFAULT_ROUTE_MAPS


EXIT_STATUS = (
    "exit status: 0 every case passed (and coverage reaches --threshold); 1 the policies are broken (as for "
    "policy validate), a case failed, coverage is under the threshold or there are no suites; 2 usage error, "
    "or a suite or fixtures file cannot be read"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    policies_dir, route_maps = _defaults()
    parser.add_argument("dir", nargs="?", default=policies_dir, help=f"policies directory (default {policies_dir})")
    parser.add_argument("--coverage", action="store_true", help="show coverage per policy folder")
    parser.add_argument(
        "--threshold", type=float, default=None, metavar="PCT",
        help="fail when fewer than PCT percent of the policies determined a decision",
    )  # fmt: skip
    parser.add_argument(
        "--route-map", action="append", dest="route_maps", metavar="FILE",
        help="route map the cases are matched against (repeatable; default: the shipped maps)",
    )  # fmt: skip
    parser.add_argument("-v", "--verbose", action="store_true", help="list every case")
    parser.set_defaults(func=command, default_route_maps=route_maps)


def command(args: argparse.Namespace) -> int:
    """0: every case passed (and coverage is at least the threshold); 1: not, or broken policies; 2: bad suites."""
    route_maps = tuple(args.route_maps or getattr(args, "default_route_maps", None) or _defaults()[1])
    try:
        report = run_suites(args.dir, route_maps)
    except PolicyError as exc:
        return report_broken(exc)
    except SuiteError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    if not report.outcomes:
        print(f"no policy test suites under {args.dir} (looked for */{SUITE_DIR}/*.toml and {DEMO_FILE})",
              file=sys.stderr)  # fmt: skip
        return 1
    print(format_report(report, coverage=args.coverage, verbose=args.verbose))
    status = 1 if report.failures else 0
    if args.threshold is not None and report.percent < args.threshold:
        print(f"coverage {report.percent:.1f}% is under the threshold {args.threshold:g}%", file=sys.stderr)
        status = 1
    return status


def register(policy_subparsers: Any) -> None:
    """Adds ``test`` to ``gateway policy`` (called by ``gateway.authz.commands``)."""
    parser = policy_subparsers.add_parser(
        "test",
        help="run the policy test suites (tests/*.toml beside the packs, and their demo.toml)",
        epilog=EXIT_STATUS,
    )
    add_arguments(parser)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="gateway policy test", description=(__doc__ or "").split("\n\n")[0], epilog=EXIT_STATUS
    )
    add_arguments(parser)
    return command(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
