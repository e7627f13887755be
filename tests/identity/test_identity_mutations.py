"""For all mutations of a valid token, byte-level or claim-level: never authenticated."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from gateway.identity import AuthenticationError, Authenticator
from gateway.identity.devkeys import b64url, load_key_ring
from gateway.identity.devtokens import sign_rs256
from tests.support.idp import DevIdP

EXAMPLES = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
BASE64URL = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


class Harness:
    """An authenticator on its own event loop, driven synchronously from hypothesis examples."""

    def __init__(self, idp: DevIdP) -> None:
        self.idp = idp
        self.loop = asyncio.new_event_loop()
        self.auth = Authenticator(idp.settings())
        self.loop.run_until_complete(self.auth.start())
        assert self.loop.run_until_complete(self.auth.wait_ready(15))
        self.token = idp.mint(roles=["Support.Agent"]).encode()
        # The valid token is cached first, so a mutation that hit its cache entry would show.
        assert self.authenticates(self.token)

    def authenticates(self, token: bytes) -> bool:
        try:
            self.loop.run_until_complete(self.auth.authenticate(b"Bearer " + token))
        except AuthenticationError:
            return False
        return True

    def close(self) -> None:
        self.loop.run_until_complete(self.auth.close())
        self.loop.close()


@pytest.fixture(scope="module")
def harness(shared_idp: DevIdP) -> Iterator[Harness]:
    h = Harness(shared_idp)
    yield h
    h.close()


def decode(segment: bytes) -> Any:
    return json.loads(base64.urlsafe_b64decode(segment + b"=" * (-len(segment) % 4)))


def encode(value: Any) -> bytes:
    return b64url(json.dumps(value, separators=(",", ":")).encode()).encode()


byte_mutation = st.one_of(
    st.tuples(st.just("replace"), st.integers(0, 10_000), st.sampled_from(list(BASE64URL + b"."))),
    st.tuples(st.just("replace_any"), st.integers(0, 10_000), st.integers(0, 255)),
    st.tuples(st.just("delete"), st.integers(0, 10_000), st.integers(1, 64)),
    st.tuples(st.just("insert"), st.integers(0, 10_000), st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("truncate"), st.integers(0, 10_000), st.just(0)),
    st.tuples(st.just("swap_segments"), st.integers(0, 2), st.integers(0, 2)),
)


def apply_bytes(token: bytes, mutation: tuple[str, int, Any]) -> bytes:
    name, position, argument = mutation
    if name == "swap_segments":
        parts = token.split(b".")
        if max(position, argument) < len(parts):
            parts[position], parts[argument] = parts[argument], parts[position]
        return b".".join(parts)
    at = position % (len(token) + 1)
    if name in ("replace", "replace_any"):
        return token[:at] + bytes([argument]) + token[at + 1 :]
    if name == "delete":
        return token[:at] + token[at + argument :]
    if name == "insert":
        return token[:at] + bytes(argument) + token[at:]
    return token[:at]


@EXAMPLES
@given(mutations=st.lists(byte_mutation, min_size=1, max_size=4))
def test_byte_level_mutations_never_authenticate(harness: Harness, mutations: list[Any]) -> None:
    token = harness.token
    for mutation in mutations:
        token = apply_bytes(token, mutation)
    # Surrounding whitespace is the header's, not the token's: such a "mutation" is the same token.
    assume(token.split() != [harness.token])
    assert not harness.authenticates(token)


json_value = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=6,
)
CLAIMS = [
    "aud",
    "iss",
    "tid",
    "oid",
    "scp",
    "roles",
    "exp",
    "nbf",
    "iat",
    "ver",
    "azp",
    "idtyp",
    "sub",
    "groups",
]
claim_edit = st.one_of(
    st.tuples(st.just("set"), st.sampled_from(CLAIMS) | st.text(min_size=1, max_size=8), json_value),
    st.tuples(st.just("delete"), st.sampled_from(CLAIMS), st.none()),
)
header_edit = st.one_of(
    st.tuples(
        st.just("set"), st.sampled_from(["alg", "kid", "typ", "crit", "jku", "x5u", "b64"]), json_value
    ),
    st.tuples(st.just("set"), st.just("alg"), st.sampled_from(["none", "HS256", "RS512", "PS256", "ES256"])),
    st.tuples(st.just("delete"), st.sampled_from(["alg", "kid", "typ"]), st.none()),
)


def edit(document: dict[str, Any], edits: list[tuple[str, str, Any]]) -> dict[str, Any]:
    document = dict(document)
    for action, name, value in edits:
        if action == "delete":
            document.pop(name, None)
        else:
            document[name] = value
    return document


@EXAMPLES
@given(
    claim_edits=st.lists(claim_edit, max_size=3),
    header_edits=st.lists(header_edit, max_size=2),
    resign=st.booleans(),
)
def test_claim_level_mutations_never_authenticate(
    harness: Harness,
    attacker_key: rsa.RSAPrivateKey,
    claim_edits: list[Any],
    header_edits: list[Any],
    resign: bool,
) -> None:
    header_segment, payload_segment, signature = harness.token.split(b".")
    header = edit(decode(header_segment), header_edits)
    claims = edit(decode(payload_segment), claim_edits)
    if resign:
        # The attacker signs whatever claims it likes, naming the IdP's real kid unless an edit changed it.
        token = sign_rs256(header, claims, attacker_key).encode()
    else:
        new_header, new_payload = encode(header), encode(claims)
        assume((new_header, new_payload) != (header_segment, payload_segment))
        token = b".".join((new_header, new_payload, signature))
    assert not harness.authenticates(token)


def test_the_harness_token_is_really_valid_and_the_attacker_key_really_differs(
    harness: Harness, attacker_key: rsa.RSAPrivateKey
) -> None:
    """Guards the two tests above against passing vacuously."""
    assert harness.authenticates(harness.token)
    signing_key = load_key_ring(harness.idp.dev_dir).signing_key.private_key
    header_segment, payload_segment, _ = harness.token.split(b".")
    resigned = sign_rs256(decode(header_segment), decode(payload_segment), signing_key).encode()
    assert harness.authenticates(resigned)
    assert not harness.authenticates(
        sign_rs256(decode(header_segment), decode(payload_segment), attacker_key).encode()
    )
