"""For all inputs: the token parser, the route matcher, body lifting, masking and the whole decision
end in a refusal or a well-formed allow, never in an exception.

What tests/identity already fuzzes (mutations of a valid token, byte- and claim-level) is not repeated:
here the Authorization header is arbitrary. The route matcher is checked against the upstream's own
router (Starlette), the strongest form of "the gateway decides on what the upstream will serve".
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from starlette.routing import Match

from gateway.adapters.routemap import LiftRule, Pointer, Route
from gateway.authz.authorizer import Authorizer
from gateway.authz.decide import InvalidInput, lift_body
from gateway.authz.decision import DEFAULT_DENY, FAIL_CLOSED, MaskRule
from gateway.authz.emails import canonical_email
from gateway.authz.masking import REDACTED, apply_masks
from gateway.authz.settings import DEFAULT_POLICIES_DIR, DEFAULT_ROUTE_MAPS, AuthzSettings
from gateway.demo.tenants import CONTOSO_TENANT as A
from gateway.demo.tenants import FABRIKAM_TENANT as B
from gateway.demo.upstream import create_upstream_app
from gateway.identity import AuthenticationError, Authenticator, www_authenticate
from gateway.identity.principal import Principal
from gateway.identity.settings import is_guid
from tests.hostile.support import Counting, Ledger
from tests.support.idp import DevIdP
from tests.support.servers import ThreadedServer

EXAMPLES = settings(max_examples=200, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])  # fmt: skip
UNKNOWN_TENANT = "00000000-0000-4000-8000-000000000000"
ROLES = ["Support.Agent", "Sales.Rep", "Billing.Admin", "Marketing.Manager", "Analyst", "Security.Investigator",
         "Legal.Officer", "Auditor", "Engineering.Operator", "Service.Mail", "Service.Payments",
         "Service.Analytics", "Service.CrmSync"]  # fmt: skip
examples_run: Counter[str] = Counter()


@pytest.fixture(scope="module", autouse=True)
def book(ledger: Ledger) -> Iterator[None]:
    yield
    for name, count in examples_run.items():
        ledger.tried(f"fuzz: {name}", count)


def settings_for(resolver_url: str) -> AuthzSettings:
    return AuthzSettings(policies_dir=DEFAULT_POLICIES_DIR, route_maps=DEFAULT_ROUTE_MAPS, resolver_url=resolver_url,
                         watch=False)  # fmt: skip


class Loop:
    """An event loop of its own, driven synchronously from hypothesis examples."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()

    def run(self, awaitable: Any) -> Any:
        return self.loop.run_until_complete(awaitable)

    def close(self) -> None:
        self.loop.close()


# -- the Authorization header ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def authenticator(idp: DevIdP) -> Iterator[tuple[Loop, Authenticator]]:
    loop = Loop()
    auth = Authenticator(idp.settings())
    loop.run(auth.start())
    assert loop.run(auth.wait_ready(15))
    yield loop, auth
    loop.run(auth.close())
    loop.close()


def b64(raw: bytes) -> bytes:
    return base64.urlsafe_b64encode(raw).rstrip(b"=")


json_value = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
claims = st.fixed_dictionaries(
    {},
    optional={
        "tid": st.sampled_from([A, B, UNKNOWN_TENANT, A.upper(), ""]) | json_value,
        "iss": st.sampled_from([f"https://login.microsoftonline.com/{A}/v2.0", f"https://sts.windows.net/{A}/"])
        | json_value,
        "aud": json_value, "exp": st.floats(allow_nan=True) | st.integers() | json_value, "iat": json_value,
        "nbf": json_value, "ver": st.sampled_from(["1.0", "2.0", "3.0"]) | json_value, "scp": json_value,
        "roles": st.lists(st.sampled_from(ROLES)) | json_value, "oid": json_value, "azp": json_value,
        "appid": json_value, "idtyp": st.sampled_from(["app", "user"]) | json_value,
    },
)  # fmt: skip
jose_header = st.fixed_dictionaries(
    {},
    optional={"alg": st.sampled_from(["RS256", "none", "HS256", "rs256", ""]) | json_value, "kid": json_value,
              "crit": json_value, "jku": st.just("http://evil.example/keys"), "typ": json_value},
)  # fmt: skip
segment = (
    st.builds(lambda v: b64(json.dumps(v).encode()), json_value)
    | st.builds(b64, st.binary(max_size=64))
    | st.integers(1000, 20000).map(lambda n: b64(b"[" * n))  # nesting deeper than the JSON decoder goes
    | st.binary(max_size=32)
)
jws = st.builds(
    lambda h, p, s: b".".join((h, p, s)),
    st.builds(lambda v: b64(json.dumps(v).encode()), jose_header) | segment,
    st.builds(lambda v: b64(json.dumps(v, allow_nan=True).encode()), claims) | segment,
    st.builds(b64, st.binary(min_size=0, max_size=300)) | segment,
)
authorization = (
    st.builds(lambda t, ws: b"Bearer" + ws + t, jws, st.sampled_from([b" ", b"  ", b"\t", b" \t"]))
    | st.binary(max_size=9000)
    | st.builds(lambda t: b"Bearer " + t, st.binary(max_size=200))
    | st.none()
)


@EXAMPLES
@given(header=authorization)
@example(header=b"Bearer " + b"eyJ" * 3000)
@example(header=b"Bearer " + b64(b"[" * 5000) + b"." + b64(b"{}") + b".c2ln")
@example(header=b"Bearer " + b64(b'{"alg":"RS256","kid":"x"}') + b"." + b64(b'{"tid":' + b"1" * 5000 + b"}") + b".c2ln")
def test_any_authorization_header_is_refused_with_a_reason(
    authenticator: tuple[Loop, Authenticator], header: bytes | None
) -> None:
    loop, auth = authenticator
    examples_run["Authorization header"] += 1
    try:
        principal = loop.run(auth.authenticate(header))
    except AuthenticationError as error:
        assert error.reason and error.reason.replace("_", "").isalpha(), error.reason
        challenge = www_authenticate(error)
        assert challenge.startswith(b"Bearer") and not any(c in challenge for c in b"\r\n\x00")
        return
    raise AssertionError(f"an unsigned or forged token authenticated: {principal}")


# -- the route matcher against the upstream's router ---------------------------------------------------


@pytest.fixture(scope="module")
def authorizer_offline() -> Authorizer:
    return Authorizer.load(settings_for("http://127.0.0.1:9"))


UPSTREAM_ROUTES = create_upstream_app().routes
methods = st.sampled_from(["GET", "POST", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS", "get"])
PIECES = ["tenants", "contacts", "payments", "calls", "recording", "transcript", "surveys", "responses",
          "results", "invitations", "analytics", "events", "export", "optouts", "consents", "gmail", "v1",
          "users", "messages", "send", "me", "ME", A, B, A.upper(), UNKNOWN_TENANT, "ct-a-001", "ct-b-001",
          "c-1", ".", "..", "%2e", "%2E%2e", ".%2e", "%2f", "%2F", "%5c", "\\", ";", ";x=1", "a;b", "", "%00",
          "%25", "%2525", "%41", "%7e", "~", "%7E", "%C3%A9", "a%2fb", "%20", "+", "@", ":", "!", "$", "'",
          "%u002e", "%c0%ae", "healthz", "Tenants", "x" * 130, "%3f", "%23"]  # fmt: skip


def encode_some(text: str, mask: int) -> str:
    """Percent-encode the characters of ``text`` whose bit is set in ``mask`` (unreserved ones too)."""
    return "".join(f"%{ord(c):02X}" if mask >> (i % 60) & 1 else c for i, c in enumerate(text))


def instantiate(route: Route, values: list[str], masks: list[int]) -> str:
    """The route's path with its parameters taken from ``values`` in order (cycling), each segment
    percent-encoded where ``masks`` say."""
    parts = []
    taken = 0
    for i, spec in enumerate(route.segments):
        if spec.literal is not None:
            value = spec.literal
        else:
            value = values[taken % len(values)]
            taken += 1
        parts.append(encode_some(value, masks[i % len(masks)]))
    return "/" + "/".join(parts)


ALL_ROUTES = list(Authorizer.load(settings_for("http://127.0.0.1:9")).engine.routes.routes)
PARAM_VALUES = {
    "tid": [A, B, UNKNOWN_TENANT, A, B, A.upper(), "me"],
    "userId": ["me", "0c9f0a54-2f0e-4e0b-a5d6-3f1c2b7e9a10", "me", "ME", A],
    "id": ["ct-a-001", "x.y", "a~b", "a:b@c+d", "ct-b-001", "-x", "." * 3, "x" * 129, A],
}


@st.composite
def route_requests(draw: Any) -> tuple[str, str]:
    """A route's own method (mostly) and its path with parameter values that fit (mostly), some
    characters percent-encoded, and now and then one segment swapped for a trick."""
    route = draw(st.sampled_from(ALL_ROUTES))
    method = route.method if draw(st.integers(0, 9)) else draw(methods)
    values = [draw(st.sampled_from(PARAM_VALUES.get(s.param or "", PARAM_VALUES["id"])))
              for s in route.segments if s.param]  # fmt: skip
    masks = draw(st.lists(st.just(0) | st.integers(0, 2**60), min_size=1, max_size=3))
    path = instantiate(route, values or ["x"], masks)
    if draw(st.integers(0, 4)) == 0:
        parts = path.split("/")
        parts[draw(st.integers(1, len(parts) - 1))] = draw(st.sampled_from(PIECES))
        path = "/".join(parts)
    return method, path
soup_paths = st.builds(
    lambda lead, pieces: lead + "/".join(pieces),
    st.sampled_from(["/", "//", "/./", ""]),
    st.lists(st.sampled_from(PIECES), min_size=0, max_size=8),
)


def upstream_view(method: str, path: str) -> tuple[str, dict[str, str]] | None:
    """The route Starlette picks for this decoded path, with its parameters, or None."""
    scope = {"type": "http", "method": method, "path": path, "root_path": ""}
    for route in UPSTREAM_ROUTES:
        matched, child = route.matches(scope)
        if matched is Match.FULL:
            return route.path, child["path_params"]
    return None


@EXAMPLES
@given(request=st.one_of(route_requests(), route_requests(), st.tuples(methods, soup_paths)))
@example(request=("GET", f"/tenants/{A}/contacts/%2e%2e/%2e%2e/{B}/contacts"))
@example(request=("GET", f"/tenants/%{ord(B[0]):02x}{B[1:]}/contacts"))
def test_a_matched_route_is_the_route_the_upstream_serves(
    authorizer_offline: Authorizer, request: tuple[str, str]
) -> None:
    method, raw = request
    examples_run["route matcher path"] += 1
    if not raw.startswith("/"):
        raw = "/" + raw
    decoded = urllib.parse.unquote(raw) if "%" in raw else raw  # what uvicorn puts in scope["path"]
    match = authorizer_offline.match(method, decoded, raw.encode())
    event("refused" if match is None else "matched")
    if match is None:
        return
    assert match.path == decoded, "the gateway decided on another path than the upstream receives"
    view = upstream_view(method, decoded)
    assert view is not None, f"{method} {raw}: matched route {match.route.id}, but the upstream has no such route"
    template, params = view
    assert template.replace("{user_id}", "{userId}") == match.route.template, (raw, template, match.route.template)
    assert sorted(params.values()) == sorted(match.params.values()), (raw, params, dict(match.params))
    for value in match.params.values():
        assert value and "/" not in value and value not in (".", "..")
    if match.route.tenant_param:
        assert is_guid(match.params[match.route.tenant_param])


# -- body lifting and masking ---------------------------------------------------------------------------

INVITE_RULES = (LiftRule("email", Pointer.parse("/email"), "email", True, 320),)
MIXED_RULES = (
    LiftRule("email", Pointer.parse("/email"), "email", False, 320),
    LiftRule("name", Pointer.parse("/a/0/b~1c"), "string", False, 5),
    LiftRule("id", Pointer.parse("/id"), "string", True, 40),
)
bodies = (
    st.builds(lambda v: json.dumps(v).encode(), json_value)
    | st.builds(lambda v: json.dumps(v).encode(),
                st.fixed_dictionaries({"email": st.emails() | json_value | st.text(max_size=400)},
                                      optional={"id": json_value | st.text(max_size=50),
                                                "a": st.lists(st.dictionaries(st.just("b/c"), json_value))}))
    | st.binary(max_size=600)
    | st.none()
)  # fmt: skip


@EXAMPLES
@given(body=bodies, rules=st.sampled_from([INVITE_RULES, MIXED_RULES]))
def test_lifting_a_body_yields_valid_fields_or_a_400(body: bytes | None, rules: tuple[LiftRule, ...]) -> None:
    examples_run["body to lift"] += 1
    try:
        lifted = lift_body(rules, body)
    except InvalidInput as refusal:
        assert refusal.reason == "bad_body"
        return
    by_name = {rule.name: rule for rule in rules}
    for name, value in lifted:
        rule = by_name[name]
        assert 0 < len(value) <= rule.max_length and value == value.strip()
        if rule.kind == "email":
            assert "@" in value and canonical_email(value) == value  # already in its one canonical form
    assert {r.name for r in rules if r.required} <= {n for n, _ in lifted}


@pytest.mark.parametrize("depth", [2000, 100_000])
def test_a_deeply_nested_body_to_lift_is_a_400(depth: int) -> None:
    examples_run["body to lift"] += 1
    with pytest.raises(InvalidInput):
        lift_body(INVITE_RULES, b"[" * depth + b"]" * depth)


MASKS = (
    MaskRule(Pointer.parse("/card_number"), "user.financial.credit_card", "last4", (DEFAULT_DENY,)),
    MaskRule(Pointer.parse("/contacts/*/email"), "user.contact.email", "redact", (DEFAULT_DENY,)),
    MaskRule(Pointer.parse("/payload/parts/*/body/data"), "user.content.private.email.body", "redact", ("p",)),
)
documents = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(["card_number", "contacts", "email", "payload", "parts", "body", "data", "x"]),
                      children, max_size=4),
    max_leaves=20,
)  # fmt: skip


@EXAMPLES
@given(document=documents)
def test_masking_any_json_leaves_no_masked_value_behind(document: Any) -> None:
    examples_run["response to mask"] += 1
    body = json.dumps(document).encode()
    masked, pointers = apply_masks(body, MASKS)
    result = json.loads(masked)
    for pointer in pointers:
        node = result
        for token in pointer[1:].split("/"):
            token = token.replace("~1", "/").replace("~0", "~")
            node = node[int(token)] if isinstance(node, list) else node[token]
        assert node in (REDACTED, None) or (isinstance(node, str) and set(node[:-4]) <= {"*"}), (pointer, node)


@pytest.mark.parametrize("body", [b"[" * 5000 + b"]" * 5000, b'{"card_number": ' * 3000 + b"1" + b"}" * 3000],
                         ids=["arrays", "objects"])
def test_a_response_nested_too_deep_to_mask_is_refused_as_unmaskable(body: bytes) -> None:
    """The gateway turns ``ValueError`` from masking into a 502; anything else would be a 500."""
    examples_run["response to mask"] += 1
    with pytest.raises(ValueError):
        apply_masks(body, MASKS)


# -- the whole decision ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def authorizer(reference: tuple[ThreadedServer, Counting]) -> Iterator[tuple[Loop, Authorizer]]:
    loop = Loop()
    authz = Authorizer.load(settings_for(reference[0].url))
    loop.run(authz.start())
    yield loop, authz
    loop.run(authz.close())
    loop.close()


# The reference role model (CONTRACT.md section 4): the kind of token and the purpose each role works
# under, so that a good share of the generated requests is one policy would allow.
ROLE_MODEL = {
    "Support.Agent": ("user", "essential.service.operations.support"), "Sales.Rep": ("user", "essential.service"),
    "Billing.Admin": ("user", "essential.service.payment_processing"),
    "Marketing.Manager": ("user", "marketing.communications.email"), "Analyst": ("user", "analytics.reporting"),
    "Security.Investigator": ("user", "essential.service.security"),
    "Legal.Officer": ("user", "essential.legal_obligation"), "Auditor": ("user", "essential.legal_obligation"),
    "Engineering.Operator": ("user", "essential.service.operations"), "Service.Mail": ("app", "essential.service"),
    "Service.Payments": ("app", "essential.service.payment_processing"),
    "Service.Analytics": ("app", "analytics.reporting"), "Service.CrmSync": ("app", "essential.service"),
    "": ("user", "essential.service"),
}  # fmt: skip
USERS = ["0c9f0a54-2f0e-4e0b-a5d6-3f1c2b7e9a10", "aecd6b79-7c59-5fbc-bf40-4b116835aa41"]


@st.composite
def requests_to_decide(draw: Any, authz: Authorizer) -> tuple[Principal, Route, str, str | None]:
    """(principal, route, path, purpose): mostly a role with its own kind and purpose on its own
    tenant, otherwise anything (other tenants, unknown tenants, wrong kinds, junk roles and purposes)."""
    role = draw(st.sampled_from(sorted(ROLE_MODEL)))
    kind, purpose = ROLE_MODEL[role]
    roles = [role] if role else []
    if draw(st.integers(0, 2)) == 0:
        kind = draw(st.sampled_from(["user", "app"]))
        roles += draw(st.lists(st.sampled_from(ROLES) | st.text(max_size=12), max_size=2))
    if draw(st.integers(0, 2)) == 0:
        known = sorted(authz.engine.taxonomy.purposes.parents)
        purpose = draw(st.sampled_from(known) | st.sampled_from([None, "", "essential.service.x", "sales"])
                       | st.text(max_size=40))  # fmt: skip
    tenant = draw(st.sampled_from([A, B]))
    user = draw(st.sampled_from(USERS))
    principal = Principal(kind=kind, id=user if kind == "user" else "app-" + user[:8], tenant=tenant,
                          roles=tuple(roles), scopes=("access_as_user",) if kind == "user" else (), groups=(),
                          client_id="client", token_version="2.0", expires_at=time.time() + 3600)  # fmt: skip
    route = draw(st.sampled_from(list(authz.engine.routes.routes)))
    other = B if tenant == A else A
    choices = {
        "tid": [tenant, tenant, tenant, other, UNKNOWN_TENANT],
        "userId": ["me", "me", user, USERS[0] if user != USERS[0] else USERS[1]],
        "id": [f"ct-{'a' if tenant == A else 'b'}-001", f"pay-{'a' if tenant == A else 'b'}-001",
               f"call-{'a' if tenant == A else 'b'}-001", f"sv-{'a' if tenant == A else 'b'}-001", "ct-b-002",
               "c-unknown"],
    }  # fmt: skip
    values = [draw(st.sampled_from(choices.get(s.param or "", choices["id"]))) for s in route.segments if s.param]
    return principal, route, instantiate(route, values or ["x"], [0]), purpose


@EXAMPLES
@given(data=st.data())
def test_every_decision_is_a_refusal_or_a_well_formed_allow(authorizer: tuple[Loop, Authorizer], data: Any) -> None:
    loop, authz = authorizer
    examples_run["authorization request"] += 1
    principal, route, path, purpose = data.draw(requests_to_decide(authz))
    match = authz.match(route.method, path, path.encode())
    if match is None:
        event("unmatched")
        return
    body = data.draw(bodies) if route.lift else None
    decision = loop.run(
        authz.authorize(
            principal, match,
            purpose=purpose,
            recipient=data.draw(st.sampled_from(["salesforce", "hubspot", None, "", "evil", "SalesForce", "a b"])),
            consent_ref=data.draw(st.sampled_from([None, None, "", "c-unknown", "../x", "x" * 200])),
            body=body, now=time.time(),
        )
    )  # fmt: skip
    event(f"{'allow' if decision.allowed else 'deny'} {decision.status} {decision.reason}")
    assert decision.status in (200, 400, 403)
    assert decision.policy_hash and decision.route == route.template
    if not decision.allowed:
        assert decision.status in (400, 403) and decision.reasons
        for reason in decision.reasons:
            assert set(reason) >= {"policy", "source", "clause"} and all(isinstance(v, str) for v in reason.values())
        return
    assert decision.status == 200 and decision.reason
    assert decision.resource_tenant == principal.tenant, "an allow across tenants"
    assert decision.action == route.action and decision.resource_type == route.resource_type
    assert decision.purpose in authz.engine.taxonomy.purposes
    assert decision.policy_ids and not {DEFAULT_DENY, FAIL_CLOSED} & set(decision.policy_ids)
    if "recipient" in route.require:
        assert decision.recipient


def test_the_fuzzers_reach_both_outcomes(authorizer_offline: Authorizer, authorizer: tuple[Loop, Authorizer],
                                         idp: DevIdP, tmp_path: Path) -> None:  # fmt: skip
    """Guards the property tests above against passing vacuously: their strategies produce matched
    routes and allowed decisions, not only refusals."""
    loop, authz = authorizer
    route = authz.engine.routes.by_id["contacts.read"]
    path = instantiate(route, [A, "ct-a-001"], [0])
    match = authz.match("GET", path, path.encode())
    assert match is not None
    agent = Principal(kind="user", id="0c9f0a54-2f0e-4e0b-a5d6-3f1c2b7e9a10", tenant=A, roles=("Support.Agent",),
                      scopes=("access_as_user",), groups=(), client_id="c", token_version="2.0",
                      expires_at=time.time() + 60)  # fmt: skip
    decision = loop.run(authz.authorize(agent, match, purpose="essential.service.operations.support",
                                        recipient=None, consent_ref=None, body=None, now=time.time()))  # fmt: skip
    assert decision.allowed
    encoded = instantiate(route, [A, "ct-a-001"], [2**60 - 1])
    assert authorizer_offline.match("GET", urllib.parse.unquote(encoded), encoded.encode()) is not None
