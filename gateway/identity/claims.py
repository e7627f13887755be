"""Claim checks on a token whose signature is already verified, and the ``Principal`` they yield.

The order is fixed so a token that is wrong in several ways always gets the same reason: issuer,
key binding, audience, lifetime, then token kind.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

from gateway.identity.errors import AuthenticationError
from gateway.identity.keyset import TENANT_TEMPLATE, SigningKey, TenantKeys
from gateway.identity.principal import Principal

_VERSIONS: dict[str, Literal["1.0", "2.0"]] = {"1.0": "1.0", "2.0": "2.0"}


def _number(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    try:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ValueError(name)
        return float(value)
    except (ValueError, OverflowError):
        raise AuthenticationError("malformed_claims", f"The '{name}' claim is not a finite number.") from None


def _required_number(claims: Mapping[str, Any], name: str) -> float:
    value = _number(claims, name)
    if value is None:
        raise AuthenticationError("missing_claim", f"The token has no '{name}' claim.")
    return value


def _string(claims: Mapping[str, Any], name: str) -> str | None:
    value = claims.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise AuthenticationError("malformed_claims", f"The '{name}' claim is not a string.")
    return value


def _strings(claims: Mapping[str, Any], name: str) -> tuple[str, ...] | None:
    value = claims.get(name)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise AuthenticationError("malformed_claims", f"The '{name}' claim is not a list of strings.")
    return tuple(value)


def check_issuer(claims: Mapping[str, Any], keys: TenantKeys, key: SigningKey, tid: str) -> str:
    """The token version, once ``iss`` and the key's own issuer binding are checked."""
    version = _VERSIONS.get(_string(claims, "ver") or "")
    if version is None:
        raise AuthenticationError("unsupported_version", "The token's 'ver' claim is not 1.0 or 2.0.")
    expected = keys.expected_issuer(version, tid)
    if _string(claims, "iss") != expected:
        raise AuthenticationError(
            "invalid_issuer",
            f"The token's issuer is not the v{version} issuer of its tenant ({expected}).",
        )
    # Microsoft.IdentityModel's AadSigningKeyIssuerValidator: a v1 token's issuer never matches a
    # key's (v2-style) issuer, so the tenant's v2 issuer is accepted for the key as well.
    accepted = {expected, keys.expected_issuer("2.0", tid)}
    for template in key.issuer_templates:
        if template.replace(TENANT_TEMPLATE, tid) not in accepted:
            raise AuthenticationError(
                "key_issuer_mismatch", "The signing key is bound to another issuer than the token's tenant."
            )
    return version


def check_audience(claims: Mapping[str, Any], audiences: frozenset[str]) -> None:
    aud = claims.get("aud")
    values = aud if isinstance(aud, list) else [aud]
    if not any(isinstance(value, str) and value in audiences for value in values):
        raise AuthenticationError("invalid_audience", "The token's audience is not accepted here.")


def check_lifetime(claims: Mapping[str, Any], now: float, leeway: float) -> float:
    """``exp`` (required), ``iat`` (required) and ``nbf`` (optional) against ``now``; returns ``exp``."""
    exp = _required_number(claims, "exp")
    iat = _required_number(claims, "iat")
    nbf = _number(claims, "nbf")
    if now - leeway >= exp:
        raise AuthenticationError("expired", "The token has expired.")
    if nbf is not None and now + leeway < nbf:
        raise AuthenticationError("not_yet_valid", "The token is not valid yet (nbf is in the future).")
    if now + leeway < iat:
        raise AuthenticationError("not_yet_valid", "The token was issued in the future (iat).")
    return exp


def _is_service_principal(claims: Mapping[str, Any]) -> bool:
    oid = _string(claims, "oid")
    return bool(oid) and oid == _string(claims, "sub")


def principal_from_claims(claims: Mapping[str, Any], tid: str, version: str, exp: float) -> Principal:
    scp = _string(claims, "scp")
    scopes = tuple(scp.split()) if scp else ()
    roles = _strings(claims, "roles") or ()
    idtyp = _string(claims, "idtyp")
    client_id = _string(claims, "azp" if version == "2.0" else "appid")
    token_version = _VERSIONS[version]
    groups = _strings(claims, "groups")
    overage = claims.get("_claim_names")
    if groups is None and isinstance(overage, dict) and "groups" in overage:
        group_set: tuple[str, ...] | None = None
    else:
        group_set = groups or ()
    if scopes:
        if idtyp == "app":
            raise AuthenticationError("inconsistent_token", "The token has scopes but says it is app-only.")
        oid = _string(claims, "oid")
        if not oid:
            raise AuthenticationError("missing_claim", "The delegated token has no 'oid' claim.")
        kind: Literal["user", "app"] = "user"
        principal_id = oid
    elif roles:
        # idtyp is an optional claim at Entra; without it, Microsoft's documented sign of an app-only
        # token is oid == sub (the service principal is both). Roles alone could be a user's.
        app_only = idtyp == "app" if idtyp is not None else _is_service_principal(claims)
        if not app_only:
            raise AuthenticationError(
                "inconsistent_token", "The token has roles but no scopes and is not an app-only token."
            )
        kind = "app"
        principal_id = client_id or ""
    else:
        raise AuthenticationError(
            "not_an_access_token",
            "The token has neither 'scp' nor 'roles': it is not an access token for this API.",
        )
    if not client_id:
        claim = "azp" if version == "2.0" else "appid"
        raise AuthenticationError("missing_claim", f"The v{version} token has no '{claim}' claim.")
    return Principal(
        kind=kind,
        id=principal_id,
        tenant=tid,
        roles=roles,
        scopes=scopes,
        groups=group_set,
        client_id=client_id,
        token_version=token_version,
        expires_at=exp,
    )
