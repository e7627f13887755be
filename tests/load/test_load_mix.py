"""The request mix: weights, tokens, the Lua file wrk loads, and the expectations it states."""

from __future__ import annotations

import base64
import json
from collections import Counter
from pathlib import Path

from load.measure.mix import plain_request, realistic_mix, wire_requests, write_lua_requests
from load.measure.tokens import TokenBook


def claims(token: str) -> dict[str, object]:
    payload = token.split(".")[1]
    result: dict[str, object] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return result


def test_mix_has_tenants_roles_purposes_denials_and_masking() -> None:
    mix = realistic_mix()
    tenants = {e.caller.tenant for e in mix.entries if e.caller}
    roles = {r for e in mix.entries if e.caller for r in e.caller.roles}
    purposes = {e.purpose for e in mix.entries}
    assert len(tenants) == 2 and len(roles) >= 5 and len(purposes) >= 5
    assert {e.expect for e in mix.entries} == {200, 400, 401, 403}
    assert 0.1 < mix.expected_non_2xx_share() < 0.4
    assert mix.expected_masked_share() > 0.2


def test_tokens_are_minted_once_per_caller_and_reused(tmp_path: Path) -> None:
    book = TokenBook(tmp_path / "dev", "http://127.0.0.1:9")
    wire = wire_requests(realistic_mix(), book)
    assert len(wire) == realistic_mix().total_weight
    callers = {e.caller for e in realistic_mix().entries if e.caller and not e.expired}
    assert len(book.tokens) == len(callers)
    tokens = Counter(r.headers.get("Authorization") for r in wire)
    support_token = book.token(realistic_mix().entries[0].caller)  # type: ignore[arg-type]
    assert tokens[f"Bearer {support_token}"] > 5
    expired = [r for r in wire if r.entry.expired]
    assert claims(expired[0].headers["Authorization"].split()[1])["exp"] < claims(support_token)["exp"]  # type: ignore[operator]
    assert claims(support_token)["iss"] == "http://127.0.0.1:9/3f2a6c1e-8d4b-4c7a-9e21-5b8d0f4a7c11/v2.0"


def test_the_order_is_shuffled_but_the_same_every_time(tmp_path: Path) -> None:
    book = TokenBook(tmp_path / "dev", "http://127.0.0.1:9")
    first = [r.entry.title for r in wire_requests(realistic_mix(), book)]
    second = [r.entry.title for r in wire_requests(realistic_mix(), book)]
    assert first == second
    assert first != sorted(first, key=[e.title for e in realistic_mix().entries].index)


def test_lua_file_holds_every_request(tmp_path: Path) -> None:
    book = TokenBook(tmp_path / "dev", "http://127.0.0.1:9")
    wire = wire_requests(plain_request(), book)
    text = write_lua_requests(wire, tmp_path / "r.lua").read_text()
    assert text.startswith("return {")
    assert text.count("method =") == 1
    assert '["X-Purpose"] = "essential.service.operations.support"' in text
    assert '["Authorization"] = "Bearer ey' in text
