"""Header parsing, WWW-Authenticate values and settings validation: the parts with no network."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.demo.tenants import CONTOSO_TENANT
from gateway.identity import AuthenticationError, IdentitySettings, www_authenticate
from gateway.identity.bearer import bearer_token, require_compact_jws

TOKEN = b"eyJhbGciOiJSUzI1NiJ9.eyJ0aWQiOiJ4In0.c2ln"


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (None, "missing_token"),
        (b"", "missing_token"),
        (b" \t ", "missing_token"),
        (b"Bearer", "malformed_header"),
        (b"Bearer a b", "malformed_header"),
        (b"Basic dXNlcjpwYXNz", "unsupported_scheme"),
        (b"Bearerx " + TOKEN, "unsupported_scheme"),
        (b"Bearer " + TOKEN[:-5], "malformed_token"),
        (b"Bearer a.b", "malformed_token"),
        (b"Bearer a..c", "malformed_token"),
        (b"Bearer a.b.c=", "malformed_token"),
        (b"Bearer a.b.c\xff", "malformed_token"),
        (b"Bearer " + b"a" * 8193, "token_too_large"),
        (b"Bearer " + b"a" * 100_000, "token_too_large"),
    ],
)
def test_malformed_headers(header: bytes | None, reason: str) -> None:
    with pytest.raises(AuthenticationError) as caught:
        require_compact_jws(bearer_token(header, 8192))
    assert caught.value.reason == reason


def test_token_at_the_limit_is_accepted_structurally() -> None:
    token = b"a" * 4000 + b"." + b"b" * 4000 + b"." + b"c" * 190
    assert len(token) == 8192
    assert bearer_token(b"Bearer " + token, 8192) == token
    require_compact_jws(token)
    assert bearer_token(b"bEaReR\t" + TOKEN + b"  ", 8192) == TOKEN


def test_www_authenticate_for_a_missing_token_has_no_error_code() -> None:
    assert www_authenticate(AuthenticationError("missing_token", "no token")) == b"Bearer"


def test_www_authenticate_names_the_failure() -> None:
    value = www_authenticate(AuthenticationError("expired", "The token has expired."))
    assert value == b'Bearer error="invalid_token", error_description="The token has expired."'


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_www_authenticate_is_always_one_safe_quoted_header_value(description: str) -> None:
    value = www_authenticate(AuthenticationError("x", description))
    prefix, suffix = b'Bearer error="invalid_token", error_description="', b'"'
    assert value.startswith(prefix) and value.endswith(suffix)
    inner = value[len(prefix) : -len(suffix)]
    # RFC 6750 error_description: %x20-21 / %x23-5B / %x5D-7E.
    assert all(0x20 <= b <= 0x7E and b not in b'"\\' for b in inner)
    assert len(inner) <= 300


def test_settings_are_normalised_and_checked() -> None:
    s = IdentitySettings("http://idp.example/", (CONTOSO_TENANT.upper(), CONTOSO_TENANT), ("aud",))
    assert s.authority == "http://idp.example" and s.tenants == (CONTOSO_TENANT,)
    for bad in (
        {"authority": "idp.example"},
        {"tenants": ("contoso.onmicrosoft.com",)},
        {"tenants": ()},
        {"audiences": ()},
        {"http_timeout_seconds": 0},
        {"max_token_bytes": 0},
    ):
        values = {
            "authority": "https://login.microsoftonline.com",
            "tenants": (CONTOSO_TENANT,),
            "audiences": ("a",),
        }
        with pytest.raises(ValueError):
            IdentitySettings(**{**values, **bad})  # type: ignore[arg-type]
