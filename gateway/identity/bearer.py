"""The ``Authorization: Bearer`` header in (RFC 6750 section 2.1) and ``WWW-Authenticate`` out (section 3)."""

from __future__ import annotations

import re

from gateway.identity.errors import AuthenticationError

# A compact JWS: three base64url segments (the signature may be empty, so an unsecured "alg":"none"
# token gets its precise reason). Anything else is refused before a byte of it is decoded.
_COMPACT_JWS = re.compile(rb"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
# RFC 6750 error_description: %x20-21 / %x23-5B / %x5D-7E, i.e. printable ASCII without '"' and '\'.
_UNSAFE_DESCRIPTION_CHARS = re.compile(r"[^\x20\x21\x23-\x5b\x5d-\x7e]")
_MAX_DESCRIPTION_CHARS = 300
# Room for the scheme, the separating space and stray surrounding whitespace.
_SCHEME_ALLOWANCE = 32


def bearer_token(authorization: bytes | None, max_token_bytes: int) -> bytes:
    """The token of a ``Bearer`` header, as bytes, or ``AuthenticationError``.

    The size is checked before anything else, so an oversized header costs one ``len``. The token's
    shape is left to ``require_compact_jws``, which need not run for a token found in the cache.
    """
    if authorization is None or not authorization.strip():
        raise AuthenticationError("missing_token", "The request carries no access token.")
    if len(authorization) > max_token_bytes + _SCHEME_ALLOWANCE:
        raise AuthenticationError(
            "token_too_large", f"The Authorization header exceeds {max_token_bytes} bytes."
        )
    parts = authorization.split()
    if parts[0].lower() != b"bearer":
        raise AuthenticationError(
            "unsupported_scheme", "The Authorization header must use the Bearer scheme."
        )
    if len(parts) != 2:
        raise AuthenticationError(
            "malformed_header", "The Authorization header must hold exactly one Bearer token."
        )
    token = parts[1]
    if len(token) > max_token_bytes:
        raise AuthenticationError("token_too_large", f"The access token exceeds {max_token_bytes} bytes.")
    return token


def require_compact_jws(token: bytes) -> None:
    """Three base64url segments, or ``AuthenticationError`` saying what is wrong with the shape."""
    if _COMPACT_JWS.fullmatch(token) is None:
        segments = token.count(b".") + 1
        if segments != 3:
            detail = f"has {segments} segment{'s' if segments != 1 else ''}; a JWT has 3"
        else:
            detail = "has an empty segment or characters outside base64url"
        raise AuthenticationError("malformed_token", f"The access token is not a compact JWS: it {detail}.")


def www_authenticate(error: AuthenticationError) -> bytes:
    """The ``WWW-Authenticate`` value for a 401: bare ``Bearer`` when no token was sent, else
    ``Bearer error="invalid_token", error_description="..."`` with the description made safe to quote."""
    if error.missing:
        return b"Bearer"
    description = _UNSAFE_DESCRIPTION_CHARS.sub(
        lambda m: "'" if m.group() == '"' else " " if m.group() in "\t\r\n" else "?",
        error.description,
    )
    if len(description) > _MAX_DESCRIPTION_CHARS:
        description = description[: _MAX_DESCRIPTION_CHARS - 3] + "..."
    return f'Bearer error="invalid_token", error_description="{description}"'.encode("ascii")
