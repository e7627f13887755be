from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.adapters.routemap import RouteMapError, RouteTable, load_route_map
from gateway.demo.tenants import CONTOSO_TENANT, FABRIKAM_TENANT

ROOT = Path(__file__).resolve().parents[2]
MAPS = [ROOT / "gateway" / "adapters" / "reference.toml", ROOT / "gateway" / "adapters" / "gmail.toml"]
TABLE = RouteTable.load(MAPS)
A, B = CONTOSO_TENANT, FABRIKAM_TENANT


def test_shipped_maps_cover_the_reference_services() -> None:
    ids = {r.id for r in TABLE.routes}
    assert {
        "contacts.read",
        "contacts.export",
        "payments.read",
        "calls.recording",
        "calls.transcript",
        "surveys.invite",
        "surveys.results",
        "analytics.events",
        "gmail.messages.read",
        "gmail.messages.send",
        "consents.create",
        "consents.read",
    } <= ids


@pytest.mark.parametrize(
    ("method", "path", "route_id", "params"),
    [
        ("GET", f"/tenants/{A}/contacts", "contacts.list", {"tid": A}),
        ("GET", f"/tenants/{A}/contacts/ct-a-001", "contacts.read", {"tid": A, "id": "ct-a-001"}),
        ("POST", f"/tenants/{A}/contacts/ct-a-001/export", "contacts.export", {"tid": A, "id": "ct-a-001"}),
        ("GET", f"/tenants/{B}/payments/pay-b-002", "payments.read", {"tid": B, "id": "pay-b-002"}),
        (
            "GET",
            "/gmail/v1/users/me/messages/abc123",
            "gmail.messages.read",
            {"userId": "me", "id": "abc123"},
        ),
        ("POST", "/gmail/v1/users/me/messages/send", "gmail.messages.send", {"userId": "me"}),
        ("GET", "/gmail/v1/users/me/messages/send", "gmail.messages.read", {"userId": "me", "id": "send"}),
        ("GET", "/consents/c-1", "consents.read", {"id": "c-1"}),
    ],
)
def test_matches_routes_and_parameters(method: str, path: str, route_id: str, params: dict[str, str]) -> None:
    match = TABLE.match(method, path)
    assert match is not None
    assert match.route.id == route_id
    assert dict(match.params) == params


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("DELETE", f"/tenants/{A}/contacts/ct-a-001"),  # mapped path, unmapped method
        ("GET", f"/tenants/{A}/contacts/ct-a-001/export"),
        ("GET", f"/tenants/{A.upper()}/contacts"),  # a GUID in another case is another string upstream
        ("GET", f"/Tenants/{A}/contacts"),
        ("GET", "/tenants/not-a-guid/contacts"),
        ("GET", f"/tenants/{A}/unknown"),
        ("GET", "/admin"),
        ("GET", "/gmail/v1/users/someone@example.com/messages"),
        ("GET", f"/tenants/{A}/contacts/"),
    ],
)
def test_unmapped_requests_match_nothing(method: str, path: str) -> None:
    assert TABLE.match(method, path) is None


def test_route_map_errors_name_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[map]\nname = "x"\n\n[[route]]\nid = "a.b"\nmethod = "GET"\npath = "/x/{id}"\naction = "read"\n'
        'resource = "Contact"\ntenant = "tid"\ncategories = ["user"]\n'
    )
    with pytest.raises(RouteMapError, match=rf"^{bad}:5: route a.b: tenant = 'tid' is not a parameter"):
        load_route_map(bad)


def test_overlapping_routes_are_refused(tmp_path: Path) -> None:
    text = (
        '[map]\nname = "x"\n'
        '[[route]]\nid = "one"\nmethod = "GET"\npath = "/x/{id}"\naction = "read"\nresource = "Contact"\n'
        'tenant = "principal"\ncategories = ["user"]\n'
        '[[route]]\nid = "two"\nmethod = "GET"\npath = "/x/{other}"\naction = "read"\nresource = "Contact"\n'
        'tenant = "principal"\ncategories = ["user"]\n'
    )
    path = tmp_path / "m.toml"
    path.write_text(text)
    with pytest.raises(RouteMapError, match="overlaps"):
        RouteTable.load([path])


# --- record facts ----------------------------------------------------------------------------------


def test_shipped_maps_read_record_facts() -> None:
    by_id = TABLE.by_id
    read = by_id["contacts.read"]
    assert [(f.name, f.pointer.text, f.kind, f.required) for f in read.response_facts] == [
        ("age_days", "/created_at", "age", True),
        ("marketing_opt_out", "/marketing_opt_out", "bool", True),
    ]
    assert read.facts_items is None and read.facts_from is None and read.tenant_retention == "contacts"
    listing = by_id["contacts.list"]
    assert listing.facts_items is not None and listing.facts_items.tokens == ("contacts",)
    assert by_id["analytics.events"].facts_items is not None
    recording = by_id["calls.recording"]
    assert recording.facts_from == "/tenants/{tid}/calls/{id}" and recording.tenant_retention == "recordings"
    match = TABLE.match("GET", f"/tenants/{A}/calls/call-a-001/recording")
    assert match is not None and match.route.facts_path(match.params) == f"/tenants/{A}/calls/call-a-001"
    export = TABLE.match("POST", f"/tenants/{A}/contacts/a:b@c+d/export")
    assert export is not None and export.route.facts_path(export.params) == f"/tenants/{A}/contacts/a%3Ab%40c%2Bd"
    assert not by_id["payments.list"].response_facts and not by_id["gmail.messages.read"].response_facts


ROUTE_HEAD = (
    '[map]\nname = "x"\n[params]\ntid = "uuid"\n[[route]]\nid = "r"\nmethod = "GET"\n'
    'path = "/t/{tid}/x/{id}"\naction = "read"\nresource = "Contact"\ncategories = ["user"]\ntenant = "tid"\n'
)


def facts_line(*facts: str) -> str:
    return "response_facts = [" + ", ".join("{ " + f + " }" for f in facts) + "]\n"


AGE_A = 'name = "a", pointer = "/a", kind = "age"'


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("response_facts = []\n", "non-empty list"),
        (facts_line('name = "a", pointer = "/a", kind = "time"'), "expected 'age', 'bool' or 'tenant'"),
        (facts_line('name = "a-b", pointer = "/a", kind = "age"'), "not an identifier"),
        (facts_line('name = "a", pointer = "a", kind = "age"'), "must start with '/'"),
        (facts_line(AGE_A + ', required = "yes"'), "must be a boolean"),
        (facts_line(AGE_A + ", max = 1"), "each response fact"),
        (facts_line(AGE_A, 'name = "a", pointer = "/b", kind = "bool"'), "listed twice"),
        (facts_line('name = "a", pointer = "/x/*/a", kind = "age"', 'name = "b", pointer = "/b", kind = "bool"'),
         "not both"),
        (facts_line('name = "a", pointer = "/x/*/a", kind = "age"', 'name = "b", pointer = "/y/*/b", kind = "bool"'),
         "same array"),
        (facts_line('name = "a", pointer = "/x/*/y/*/a", kind = "age"'), "at most one"),
        (facts_line('name = "a", pointer = "/x/*", kind = "age"'), "a member of the items"),
        (facts_line('name = "a", pointer = "/*/a", kind = "age"'), "a member of the items"),
        ('facts_from = "/t/{tid}"\n', "needs response_facts"),
        ('facts_from = "/t/{tid}/{nope}"\n' + facts_line(AGE_A), "not a parameter"),
        ('facts_from = "/t/../{tid}"\n' + facts_line(AGE_A), "facts_from: literal segment '..'"),
        ('facts_from = "t/{tid}"\n' + facts_line(AGE_A), "starting with '/'"),
        ('facts_from = "/t/{tid}"\n' + facts_line('name = "a", pointer = "/x/*/a", kind = "age"'), "no '*'"),
        ('tenant_retention = "Payments"\n', "tenant_retention"),
    ],
)  # fmt: skip
def test_record_fact_declarations_are_checked(tmp_path: Path, extra: str, message: str) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(ROUTE_HEAD + extra)
    with pytest.raises(RouteMapError, match=rf"^{bad}:\d+: route r: .*{re.escape(message)}"):
        load_route_map(bad)
    mine = tmp_path / "principal.toml"
    mine.write_text(ROUTE_HEAD.replace('tenant = "tid"', 'tenant = "principal"') + 'tenant_retention = "payments"\n')
    with pytest.raises(RouteMapError, match="needs a tenant parameter"):
        load_route_map(mine)


# --- path tricks: nothing derived from a tenant-A path reaches tenant B -----------------------------

TEMPLATES = [
    f"/tenants/{A}/contacts",
    f"/tenants/{A}/contacts/ct-a-001",
    f"/tenants/{A}/payments/pay-a-001",
    f"/tenants/{A}/calls/call-a-001/recording",
]
TRICKS = st.sampled_from(
    [
        "/",
        "//",
        "/./",
        "/../",
        "%2F",
        "%2f",
        "%2e",
        "%2E%2E",
        "..",
        ".",
        ";",
        ";x=1",
        "%3B",
        "%5C",
        "\\",
        "%252F",
        "%00",
        "%25",
        "?",
        "#",
        " ",
        "%20",
        f"/../{B}",
        f"/..%2F{B}",
        f"%2F..%2F{B}",
        f"/{B}",
        B,
        B.upper(),
        "%41",
        "é",
        "\u2215",
        "\uff0f",
        "%c0%af",
        "%e2%80%8b",
    ]
)


@st.composite
def tricked_paths(draw: st.DrawFn) -> str:
    path = draw(st.sampled_from(TEMPLATES))
    for _ in range(draw(st.integers(1, 4))):
        position = draw(st.integers(0, len(path)))
        path = path[:position] + draw(TRICKS) + path[position:]
    if draw(st.booleans()):
        # Percent-encode some characters, as a client trying to slip past the matcher would.
        chars = list(path)
        for index in draw(st.lists(st.integers(0, len(chars) - 1), max_size=6)):
            chars[index] = "".join(f"%{b:02X}" for b in chars[index].encode())
        path = "".join(chars)
    return path


@settings(max_examples=300, deadline=None)
@given(tricked_paths(), st.sampled_from(["GET", "POST", "get", "HEAD"]))
def test_no_encoding_trick_reaches_another_tenant(path: str, method: str) -> None:
    match = TABLE.match(method, path)  # never raises
    if match is None:
        return
    # Whatever the trick, a match is tenant A's route (B's id may only appear inside a record id).
    assert match.tenant == A
    assert match.path.startswith(f"/tenants/{A}/")


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80), st.binary(max_size=80))
def test_matching_arbitrary_input_never_raises(text: str, raw: bytes) -> None:
    TABLE.match("GET", text)
    TABLE.match("GET", raw)
    TABLE.match("GET", "/tenants/" + text)
