"""The assertion's signature comes from libsodium (PyNaCl) for speed; it must be exactly the Ed25519
signature OpenSSL (``cryptography``) gives for the same key and input, and verify with pyjwt."""

from __future__ import annotations

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.assertion import _compact, _key, sign_ed25519
from gateway.audit.signing import public_jwk


@settings(max_examples=200, deadline=None)
@given(seed=st.binary(min_size=32, max_size=32), message=st.binary(max_size=2048))
def test_libsodium_and_openssl_sign_alike(seed: bytes, message: bytes) -> None:
    private = Ed25519PrivateKey.from_private_bytes(seed)
    key = _key("kid", 0.0, private)
    signature = sign_ed25519(key, message)
    assert signature == private.sign(message)
    private.public_key().verify(signature, message)  # raises if not


def test_the_compact_form_verifies_with_pyjwt_against_the_published_key() -> None:
    private = Ed25519PrivateKey.generate()
    key = _key("kid-1", 0.0, private)
    token = _compact(key, {"aud": "http://upstream", "sub": "someone", "n": 7})
    public = jwt.PyJWK(public_jwk(private)).key
    assert jwt.get_unverified_header(token)["kid"] == "kid-1"
    claims = jwt.decode(token, public, algorithms=["EdDSA"], audience="http://upstream")
    assert claims == {"aud": "http://upstream", "sub": "someone", "n": 7}
    at = token.rindex(".") + 10  # a character inside the signature
    tampered = token[:at] + ("A" if token[at] != "A" else "B") + token[at + 1 :]
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(tampered, public, algorithms=["EdDSA"], audience="http://upstream")
