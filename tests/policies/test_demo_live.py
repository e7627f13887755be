"""Every pack's demo calls, sent through the real stack: the dev IdP's tokens, the gateway built as
`gateway serve` builds it with the shipped policies, and the reference services upstream (their
tenant settings and opt-out lists fetched by the real resolvers). What `gateway demo` prints is what
the gateway does, and what the policy test runner predicts for the demo is what it does live."""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.demo.upstream import create_upstream_app
from tests.policies.support import POLICIES
from tests.support.idp import DevIdP, running_dev_idp
from tests.support.servers import serve
from tests.support.stack import Stack, running_gateway

FIXTURES = tomllib.loads((POLICIES / "packs" / "fixtures.toml").read_text(encoding="utf-8"))
TENANT_IDS = {alias: spec["id"] for alias, spec in FIXTURES["tenants"].items()}


def demo_calls() -> list[tuple[str, dict[str, Any]]]:
    calls = []
    for path in sorted(POLICIES.glob("packs/*/demo.toml")):
        for call in tomllib.loads(path.read_text(encoding="utf-8"))["call"]:
            calls.append((f"{path.parent.name}: {call['title'][:60]}", call))
    return calls


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with (
        running_dev_idp(tmp_path_factory.mktemp("dev")) as idp,
        serve(create_upstream_app()) as upstream,
        running_gateway(idp, upstream.url, tmp_path_factory.mktemp("audit") / "audit.sqlite") as running,
    ):
        yield running


def mint(idp: DevIdP, token: dict[str, Any]) -> str:
    options = {k: v for k, v in token.items() if k in ("user", "app", "roles", "scopes", "version")}
    return idp.mint(TENANT_IDS[token["tenant"]], **options)


@pytest.mark.parametrize(("label", "call"), demo_calls(), ids=[label for label, _ in demo_calls()])
def test_demo_call_through_the_gateway(stack: Stack, label: str, call: dict[str, Any]) -> None:
    path = call["path"]
    for alias, tenant in TENANT_IDS.items():
        path = path.replace("{" + alias + "}", tenant)
    body = call.get("body")
    headers = dict(call.get("headers", {}))
    if body is not None:
        headers["Content-Type"] = "application/json"
    reply = stack.http(
        call["method"], path, token=mint(stack.idp, call["token"]), purpose=call["purpose"],
        headers=headers, body=body.encode() if body is not None else None,
    )  # fmt: skip
    if call["expect"] == "allow":
        assert 200 <= reply.status < 300, (reply.status, reply.body[:300])
        if "/payments/" in path:
            assert "/card_number" in (reply.header("X-Redacted-Fields") or "")
            assert json.loads(reply.body)["card_number"].startswith("************")
    else:
        assert reply.status == 403, (reply.status, reply.body[:300])
        problem = reply.json()
        assert problem["decision_id"] == reply.header("X-Decision-Id")
        if "policies" in call:
            assert sorted(r["policy"] for r in problem["reasons"]) == sorted(call["policies"])
        assert all(r["source"] and r["clause"] for r in problem["reasons"])


def test_the_demo_files_exist_for_every_privacy_policy() -> None:
    packs = {Path(label.split(":")[0]).name for label, _ in demo_calls()}
    assert packs == {"heedify", "aircall", "helloleads", "hellocustomer", "halocrm"}
