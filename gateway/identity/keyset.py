"""One tenant's trust material, parsed from its discovery documents and key sets.

Parsing is strict and all-or-nothing per refresh: a document that does not parse, names a key set on
another origin, or yields no usable RS256 key makes the whole refresh fail, so the caller keeps the
last good ``TenantKeys`` instead of adopting a half-read one.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from jwt import PyJWK
from jwt.exceptions import PyJWKError

from gateway.identity.fetch import FetchError, origin

log = logging.getLogger(__name__)

TENANT_TEMPLATE = "{tenantid}"
MIN_RSA_BITS = 2048


@dataclass(frozen=True, slots=True)
class SigningKey:
    kid: str
    jwk: PyJWK
    #: The key's own ``issuer`` fields (``{tenantid}`` templates allowed); empty = not bound to an issuer.
    issuer_templates: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Metadata:
    """The parts of one OpenID discovery document the validator uses."""

    issuer_template: str
    jwks_uri: str


@dataclass(frozen=True, slots=True)
class TenantKeys:
    tenant: str
    #: Issuer templates from the v1 and v2 discovery documents, by token version ("1.0", "2.0").
    issuer_templates: Mapping[str, str]
    keys: Mapping[str, SigningKey]

    def expected_issuer(self, version: str, tid: str) -> str | None:
        template = self.issuer_templates.get(version)
        return None if template is None else template.replace(TENANT_TEMPLATE, tid)


def parse_metadata(document: Mapping[str, Any], *, url: str, tenant: str, authority: str) -> Metadata:
    issuer = document.get("issuer")
    jwks_uri = document.get("jwks_uri")
    if not isinstance(issuer, str) or not issuer.startswith(("https://", "http://")):
        raise FetchError(f"{url} has no usable issuer")
    if tenant not in issuer.replace(TENANT_TEMPLATE, tenant):
        raise FetchError(f"{url} names an issuer that is not templated on, nor specific to, the tenant")
    if not isinstance(jwks_uri, str):
        raise FetchError(f"{url} has no jwks_uri")
    # Keys only ever come from the authority itself, whatever the document says.
    if origin(jwks_uri) != origin(authority):
        raise FetchError(f"{url} points jwks_uri to another origin than the authority")
    return Metadata(issuer_template=issuer, jwks_uri=jwks_uri)


def _parse_key(entry: Any) -> tuple[SigningKey, tuple[str, str]] | None:
    """One JWK as a verification key, or None when it is not an RSA signature key we may use."""
    if not isinstance(entry, dict):
        return None
    kid, n, e = entry.get("kid"), entry.get("n"), entry.get("e")
    if not (isinstance(kid, str) and kid and isinstance(n, str) and isinstance(e, str)):
        return None
    if entry.get("kty") != "RSA" or entry.get("use", "sig") != "sig" or entry.get("alg", "RS256") != "RS256":
        return None
    issuer = entry.get("issuer")
    if issuer is not None and not isinstance(issuer, str):
        return None
    try:
        # Only the public components: a stray private member ("d") must not turn this into a private key.
        jwk = PyJWK({"kty": "RSA", "n": n, "e": e}, algorithm="RS256")
    except (PyJWKError, ValueError, TypeError):
        return None
    if not isinstance(jwk.key, RSAPublicKey) or jwk.key.key_size < MIN_RSA_BITS:
        return None
    return SigningKey(kid, jwk, (issuer,) if issuer else ()), (n, e)


def parse_key_sets(documents: list[tuple[str, Mapping[str, Any]]]) -> dict[str, SigningKey]:
    """Merge the v1 and v2 key sets by ``kid``.

    The same ``kid`` in both sets must carry the same key; every ``issuer`` binding any copy declares
    is kept, so a copy without one cannot lift the binding of another. A ``kid`` that names two
    different keys is dropped.
    """
    merged: dict[str, SigningKey] = {}
    material: dict[str, tuple[str, str]] = {}
    conflicting: set[str] = set()
    for url, document in documents:
        entries = document.get("keys")
        if not isinstance(entries, list):
            raise FetchError(f"{url} has no 'keys' array")
        for entry in entries:
            parsed = _parse_key(entry)
            if parsed is None:
                continue
            key, components = parsed
            known = merged.get(key.kid)
            if known is None:
                merged[key.kid], material[key.kid] = key, components
            elif material[key.kid] != components:
                conflicting.add(key.kid)
            else:
                templates = tuple(dict.fromkeys(known.issuer_templates + key.issuer_templates))
                merged[key.kid] = SigningKey(key.kid, known.jwk, templates)
    for kid in conflicting:
        log.warning("key id %s names two different keys at the authority; ignoring it", kid)
        del merged[kid]
    if not merged:
        raise FetchError("the authority published no usable RS256 signing key")
    return merged
