from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.routemap import RouteMapError, RouteTable, load_route_map
from gateway.demo.tenants import CONTOSO_TENANT, FABRIKAM_TENANT

ROOT = Path(__file__).resolve().parents[2]
MAPS = [ROOT / "adapters" / "reference.toml", ROOT / "adapters" / "gmail.toml"]
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
