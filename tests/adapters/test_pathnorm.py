from __future__ import annotations

import pytest

from gateway.adapters.pathnorm import PathRejected, normalise_path


@pytest.mark.parametrize(
    ("raw", "segments"),
    [
        ("/", ()),
        ("/tenants", ("tenants",)),
        ("/tenants/abc/contacts", ("tenants", "abc", "contacts")),
        ("/a/%41b", ("a", "Ab")),  # an escaped unreserved character is that character
        ("/a/b.c", ("a", "b.c")),
        ("/a/x@y:z", ("a", "x@y:z")),
        (b"/a/b", ("a", "b")),
    ],
)
def test_accepts_canonical_paths(raw: str | bytes, segments: tuple[str, ...]) -> None:
    assert normalise_path(raw) == segments


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "tenants",
        "/tenants/",  # trailing slash: an empty segment
        "//tenants",
        "/tenants//x",
        "/tenants/./x",
        "/tenants/../x",
        "/tenants/%2e%2e/x",
        "/tenants/%2E/x",
        "/tenants/.%2e/x",
        "/tenants/a%2Fb",
        "/tenants/a%2fb",
        "/tenants/a%5Cb",
        "/tenants/a\\b",
        "/tenants/a;v=1",
        "/tenants/a%3Bv=1",
        "/tenants/a%252Fb",  # double encoding
        "/tenants/a%00",
        "/tenants/a%",
        "/tenants/a%4",
        "/tenants/a%zz",
        "/tenants/a b",
        "/tenants/a\tb",
        "/tenants/\u00e9",
        b"/tenants/\xc3\xa9",
        "/tenants/a?b",
        "/tenants/a#b",
        "/" + "a/" * 40 + "a",
        "/" + "a" * 3000,
    ],
)
def test_rejects_ambiguous_or_malformed_paths(raw: str | bytes) -> None:
    with pytest.raises(PathRejected):
        normalise_path(raw)
