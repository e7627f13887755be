"""Role kinds (issue 18), as properties over every role, route and purpose of the shipped policies.

- no app-only token is ever allowed by a policy meant for an employee role (a permit whose principal
  scope or ``when`` needs ``EmployeeRole::...``), and no delegated token by a policy meant for a
  service role;
- a token carrying any role of the other kind is refused whole, with exactly ``role-kind-mismatch``;
- a role the role model does not list changes nothing.

Tokens hold 1 to 3 roles drawn from every listed role and an unlisted ``Custom.Role``. Half the
examples are biased towards the requests where a broken rule would show: a (role, route, variant,
purpose) the role's *own* kind of token is allowed (the allows of ``gateway policy matrix``), asked
with a token of the other kind. The last tests remove the rule (schema, role check and entity
builder all admitting either kind of role on either kind of token) and check the property then fails.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.adapters.routemap import Route
from gateway.authz import entities
from gateway.authz.decision import Verdict
from gateway.authz.engine import PolicyEngine
from gateway.authz.entities import EntityBuilder
from gateway.authz.matrix import KINDS, Variant, build_matrix, load_setting, principal_for, request_facts, variants
from gateway.authz.roles import ROLE_KIND_MISMATCH, RoleCheck, RoleModel
from gateway.identity.principal import Principal
from tests.policies.support import POLICIES, ROUTE_MAPS, shipped_engine

ENGINE = shipped_engine()
SETTING = load_setting(POLICIES)
# The role model as shipped, read once: the properties judge by it, not by what the engine under test
# says (the rule-removed engine's check admits everything).
EMPLOYEE = frozenset(ENGINE.roles.employee)
SERVICE = frozenset(ENGINE.roles.service)
UNLISTED = "Custom.Role"
ALL_ROLES = (*sorted(EMPLOYEE), *sorted(SERVICE), UNLISTED)
ROUTES = tuple(sorted(ENGINE.routes.routes, key=lambda r: r.id))
ROUTE_BY_ID = {r.id: r for r in ROUTES}
VARIANTS = {r.id: variants(ENGINE, r) for r in ROUTES}
VARIANT_BY_LABEL = {(r.id, v.label): v for r in ROUTES for v in VARIANTS[r.id]}
PURPOSES = tuple(sorted(ENGINE.taxonomy.purposes.parents))
OTHER_KIND = {"user": "app", "app": "user"}
OTHER_ROLES = {"user": SERVICE, "app": EMPLOYEE}  # the roles a token of the kind may not carry
KIND_ROLES = {"user": "employee", "app": "service"}

SETTINGS = settings(
    max_examples=1000,
    deadline=None,
    database=None,
    derandomize=True,
    report_multiple_bugs=False,
    suppress_health_check=[HealthCheck.too_slow],
)

Target = tuple[str, str, str, str, str]  # kind to ask as, role, route id, variant label, purpose


@cache
def other_kind_allows() -> tuple[Target, ...]:
    """Every (role, route, variant, purpose) its own kind of token is allowed, as the other kind's."""
    # The engine `gateway policy matrix` uses: one entity store for all purposes of a combination
    # (tests/authz/test_matrix.py checks it decides as the traffic engine does).
    packed = PolicyEngine.load(POLICIES, ROUTE_MAPS, every_purpose=True)
    found = build_matrix(packed, SETTING, roles=sorted(EMPLOYEE | SERVICE))
    return tuple(sorted({(OTHER_KIND[a.kind], a.role, a.route, a.variant, a.purpose) for a in found.allows if a.role}))


@dataclass(frozen=True)
class Ask:
    kind: str
    roles: tuple[str, ...]
    route: Route
    variant: Variant
    purpose: str

    def __repr__(self) -> str:
        where = f"{self.route.id}{' ' + self.variant.label if self.variant.label else ''}"
        return f"Ask({self.kind} {list(self.roles)} -> {where} for {self.purpose})"


@st.composite
def asks(draw: st.DrawFn, targets: tuple[Target, ...], kinds: tuple[str, ...] = KINDS) -> Ask:
    others = st.lists(st.sampled_from(ALL_ROLES), max_size=2, unique=True)
    biased: bool = bool(targets) and draw(st.booleans())
    if biased:
        kind, role, route_id, label, purpose = draw(st.sampled_from(targets))
        roles = tuple(draw(st.permutations([role, *(r for r in draw(others) if r != role)])))
        return Ask(kind, roles, ROUTE_BY_ID[route_id], VARIANT_BY_LABEL[(route_id, label)], purpose)
    route = draw(st.sampled_from(ROUTES))
    return Ask(
        draw(st.sampled_from(kinds)),
        tuple(draw(st.lists(st.sampled_from(ALL_ROLES), min_size=1, max_size=3, unique=True))),
        route,
        draw(st.sampled_from(VARIANTS[route.id])),
        draw(st.sampled_from(PURPOSES)),
    )


def decide(engine: PolicyEngine, ask: Ask, roles: Iterable[str] | None = None) -> Verdict:
    principal = principal_for(SETTING, ask.kind, tuple(ask.roles if roles is None else roles))
    verdict, _ = engine.decide(request_facts(engine, SETTING, principal, ask.route, ask.variant, ask.purpose))
    return verdict


def check_no_allow_by_the_other_kinds_policies(engine: PolicyEngine, ask: Ask, verdict: Verdict) -> None:
    if not verdict.allowed:
        return
    other = OTHER_ROLES[ask.kind]
    for policy_id in verdict.policy_ids:
        scoped = engine.policies.by_id[policy_id].principal_roles
        assert not (scoped and scoped <= other), (
            f"{ask!r} allowed by {policy_id}, a policy for the {KIND_ROLES[OTHER_KIND[ask.kind]]} "
            f"role(s) {sorted(scoped)}"
        )


def check_mismatch_refused(engine: PolicyEngine, ask: Ask, verdict: Verdict) -> None:
    mismatched = [r for r in ask.roles if r in OTHER_ROLES[ask.kind]]
    if mismatched:
        assert (verdict.allowed, verdict.status, verdict.policy_ids) == (False, 403, (ROLE_KIND_MISMATCH,)), (
            f"{ask!r} carries {mismatched} and is not refused as a role-kind mismatch: {verdict.policy_ids}"
        )
        clause = verdict.reasons[0]["clause"]
        assert all(role in clause for role in mismatched), clause
    elif UNLISTED in ask.roles:
        assert decide(engine, ask, (r for r in ask.roles if r != UNLISTED)) == verdict, f"{ask!r}: {UNLISTED} counted"


Check = Callable[[PolicyEngine, Ask, Verdict], None]
ALL_CHECKS: tuple[Check, ...] = (check_no_allow_by_the_other_kinds_policies, check_mismatch_refused)


def role_kind_property(
    engine: PolicyEngine, *, checks: tuple[Check, ...] = ALL_CHECKS, kinds: tuple[str, ...] = KINDS
) -> Callable[[], None]:
    targets = tuple(t for t in other_kind_allows() if t[0] in kinds)

    @SETTINGS
    @given(asks(targets, kinds))
    def prop(ask: Ask) -> None:
        verdict = decide(engine, ask)
        for check in checks:
            check(engine, ask, verdict)

    return prop


def test_the_bias_has_targets_in_both_directions() -> None:
    targets = other_kind_allows()
    by_kind = {kind: {t[1] for t in targets if t[0] == kind} for kind in KINDS}
    # the employee roles' allows asked by applications, the service roles' by people
    assert by_kind["app"] and by_kind["app"] <= EMPLOYEE
    assert by_kind["user"] and by_kind["user"] <= SERVICE
    assert ("app", "Legal.Officer", "gmail.messages.read", "owner=other", "essential.legal_obligation") in targets


def test_no_token_is_allowed_by_a_policy_of_the_other_kind_of_role() -> None:
    role_kind_property(ENGINE)()


# --- checked to fail when the rule is removed -------------------------------------------------


def without_the_rule(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, edit: Callable[[Path], None] | None = None
) -> PolicyEngine:
    """The shipped policies with the role-kind rule removed: the schema lets both kinds of principal
    hold both kinds of role, the role check admits every listed role on any token, and the principal's
    parents are typed by each role's own kind."""
    other_kind_allows()  # the targets come from the shipped engine: computed before anything is patched
    target = tmp_path / "policies"
    shutil.copytree(POLICIES, target)
    schema = target / "schema.cedarschema"
    text = schema.read_text(encoding="utf-8")
    for old in ("entity User in [EmployeeRole]", "entity App in [ServiceRole]"):
        assert old in text, old
        text = text.replace(old, old.split(" in ")[0] + " in [EmployeeRole, ServiceRole]")
    schema.write_text(text, encoding="utf-8")
    if edit is not None:
        edit(target)

    def admit_every_role(self: RoleModel, kind: str, roles: tuple[str, ...]) -> RoleCheck:
        return RoleCheck(admitted=tuple(r for r in roles if r in self.employee or r in self.service), mismatched=())

    original = entities.principal_entity

    def typed_by_the_roles_kind(self: EntityBuilder, principal: Principal) -> str:
        document = json.loads(original(principal, self.roles.check(principal.kind, principal.roles).admitted))
        document["parents"] = [{"type": self.roles.type_of(p["id"]), "id": p["id"]} for p in document["parents"]]
        return json.dumps(document)

    monkeypatch.setattr(RoleModel, "check", admit_every_role)
    monkeypatch.setattr(EntityBuilder, "principal_entity", typed_by_the_roles_kind)
    return PolicyEngine.load(target, ROUTE_MAPS, validate_requests=True)


def ask(kind: str, roles: tuple[str, ...], route_id: str, label: str, purpose: str) -> Ask:
    return Ask(kind, roles, ROUTE_BY_ID[route_id], VARIANT_BY_LABEL[(route_id, label)], purpose)


def test_the_property_fails_when_the_rule_is_removed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    broken = without_the_rule(tmp_path, monkeypatch)
    # the hole is real: an application holding the legal officer's role reads another person's mail
    legal_bot = ask("app", ("Legal.Officer",), "gmail.messages.read", "owner=other", "essential.legal_obligation")
    assert decide(broken, legal_bot).policy_ids == ("legal-officer-reads",)
    # and the property finds it without being told where to look
    with pytest.raises(AssertionError, match=r"allowed by .*a policy for the employee role"):
        role_kind_property(broken, checks=(check_no_allow_by_the_other_kinds_policies,))()
    with pytest.raises(AssertionError, match="not refused as a role-kind mismatch"):
        role_kind_property(broken, checks=(check_mismatch_refused,))()


def _drop_the_app_guards(target: Path) -> None:
    """The service roles' permits also say ``principal is App``: take that second lock off too."""
    roles = target / "base" / "roles.cedar"
    text = roles.read_text(encoding="utf-8")
    assert text.count("when { principal is App && ") >= 3
    roles.write_text(text.replace("when { principal is App && ", "when { "), encoding="utf-8")


def test_the_converse_fails_when_the_rule_and_the_app_guards_are_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With only the rule removed, a person holding a service role is still refused by the service
    # permits' own `principal is App`; without both, the property (people only) finds the hole.
    broken = without_the_rule(tmp_path, monkeypatch, edit=_drop_the_app_guards)
    payments_person = ask("user", ("Service.Payments",), "payments.read", "", "essential.service.payment_processing")
    assert decide(broken, payments_person).policy_ids == ("service-payments",)
    with pytest.raises(AssertionError, match=r"allowed by .*a policy for the service role"):
        role_kind_property(broken, checks=(check_no_allow_by_the_other_kinds_policies,), kinds=("user",))()
