"""Policy change safety on a real store (issue 14): traffic through the gateway, a candidate set that
forbids one thing and permits another; ``gateway policy replay`` names exactly those decisions, and
the same candidate in shadow mode records the same disagreements live while every response stays
what the enforced set decided."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.cli import main as gateway_main
from gateway.demo.tenants import CONTOSO_TENANT as A
from tests.support.idp import DevIdP
from tests.support.poll import wait_until
from tests.support.servers import ThreadedServer
from tests.support.stack import Stack, running_gateway

ROOT = Path(__file__).resolve().parents[2]
SUPPORT = "essential.service.operations.support"
LEGAL = "essential.legal_obligation"

CANDIDATE_POLICIES = """
@id("candidate-no-payments-for-support")
@source("candidate, test")
@clause("Support no longer reads payments.")
forbid (principal in EmployeeRole::"Support.Agent", action in Action::"view", resource is Payment)
when { context.purpose in Purpose::"essential.service.operations.support" };

@id("candidate-auditor-reads-payments")
@source("candidate, test")
@clause("The auditor reads payments for a legal obligation.")
permit (principal in EmployeeRole::"Auditor", action in Action::"view", resource is Payment)
when { context.purpose in Purpose::"essential.legal_obligation" };
"""


@pytest.fixture(scope="module")
def candidate(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("candidate") / "policies"
    shutil.copytree(ROOT / "policies", target)
    (target / "candidate.cedar").write_text(CANDIDATE_POLICIES)
    return target


def cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = gateway_main(list(argv))
        except SystemExit as exc:
            status = int(exc.code or 0)
    return status, out.getvalue(), err.getvalue()


def traffic(stack: Stack) -> dict[str, tuple[str, int]]:
    """name -> (decision id, status) of a small mix: two that the candidate changes, the rest not."""
    agent = stack.mint(A, roles=["Support.Agent"])
    auditor = stack.mint(A, roles=["Auditor"])
    replies = {
        "agent-payment": stack.http("GET", f"/tenants/{A}/payments/pay-a-005", token=agent, purpose=SUPPORT),
        "auditor-payment": stack.http("GET", f"/tenants/{A}/payments/pay-a-005", token=auditor, purpose=LEGAL),
        "agent-contact": stack.http("GET", f"/tenants/{A}/contacts/ct-a-001", token=agent, purpose=SUPPORT),
        "agent-contacts": stack.http("GET", f"/tenants/{A}/contacts", token=agent, purpose=SUPPORT),
        "auditor-call": stack.http("GET", f"/tenants/{A}/calls/call-a-003", token=auditor, purpose=LEGAL),
        "no-token": stack.http("GET", f"/tenants/{A}/payments/pay-a-005", purpose=SUPPORT),
        "no-purpose": stack.http("GET", f"/tenants/{A}/payments/pay-a-005", token=agent),
    }
    return {name: (r.header("X-Decision-Id") or "", r.status) for name, r in replies.items()}


def committed(audit_path: Path, ids: list[str]) -> list[sqlite3.Row]:
    def rows() -> list[sqlite3.Row] | None:
        with contextlib.closing(sqlite3.connect(f"file:{audit_path}?mode=ro", uri=True)) as conn:
            conn.row_factory = sqlite3.Row
            marks = ",".join("?" for _ in ids)
            found = conn.execute(f"SELECT * FROM decisions WHERE decision_id IN ({marks})", ids).fetchall()
        return found if len(found) == len(ids) else None

    return wait_until(rows, message=f"the {len(ids)} decisions in the audit store")


@pytest.fixture(scope="module")
def enforced_store(idp: DevIdP, reference_upstream: ThreadedServer, tmp_path_factory: pytest.TempPathFactory,
                   ) -> Iterator[tuple[Path, dict[str, tuple[str, int]]]]:  # fmt: skip
    audit = tmp_path_factory.mktemp("replay") / "audit.sqlite"
    with running_gateway(idp, reference_upstream.url, audit) as stack:
        sent = traffic(stack)
        rows = committed(audit, [i for i, _ in sent.values()])
        assert len(rows) == len(sent)
    yield audit, sent


def test_replay_names_exactly_the_changed_decisions(
    enforced_store: tuple[Path, dict[str, tuple[str, int]]], candidate: Path
) -> None:
    audit, sent = enforced_store
    assert sent["agent-payment"][1] == 200 and sent["auditor-payment"][1] == 403
    status, out, err = cli("policy", "replay", str(candidate), "--path", str(audit), "--format", "json")
    assert status == 0, err
    *document, apart, last = out.strip().splitlines()
    changes = json.loads("\n".join(document))
    by_id = {c["decision_id"]: c for c in changes}
    assert set(by_id) == {sent["agent-payment"][0], sent["auditor-payment"][0]}
    lost = by_id[sent["agent-payment"][0]]
    assert (lost["old"], lost["new"]) == ("allow", "deny")
    assert lost["old_policies"] == ["support-agent-reads"]
    assert lost["new_policies"] == ["candidate-no-payments-for-support"]
    gained = by_id[sent["auditor-payment"][0]]
    assert (gained["old"], gained["new"]) == ("deny", "allow")
    assert gained["new_policies"] == ["candidate-auditor-reads-payments"]
    assert last == "5 replayed, 2 changed (1 allow->deny, 1 deny->allow, 0 mask changes)"
    assert apart.startswith("2 not replayed")  # the 401 and the 400: refused before a policy decision

    status, out, _ = cli("policy", "replay", str(candidate), "--path", str(audit), "--fail-on-change")
    assert status == 3
    assert sent["agent-payment"][0] in out and "candidate-no-payments-for-support" in out
    status, out, _ = cli("policy", "replay", str(ROOT / "policies"), "--path", str(audit), "--fail-on-change")
    assert status == 0, out
    assert out.strip().splitlines()[-1] == "5 replayed, 0 changed (0 allow->deny, 0 deny->allow, 0 mask changes)"


def test_replay_refuses_a_candidate_that_does_not_validate(
    enforced_store: tuple[Path, dict[str, tuple[str, int]]], tmp_path: Path
) -> None:
    audit, _ = enforced_store
    broken = tmp_path / "policies"
    shutil.copytree(ROOT / "policies", broken)
    (broken / "broken.cedar").write_text('@id("x")\n@source("s")\n@clause("c")\npermit (principal, action, resource)'
                                         ' when { resource.nope };\n')  # fmt: skip
    status, _, err = cli("policy", "replay", str(broken), "--path", str(audit))
    assert status == 1 and "broken.cedar:" in err


def test_shadow_mode_records_the_same_disagreements_and_changes_no_response(
    idp: DevIdP, reference_upstream: ThreadedServer, candidate: Path, tmp_path: Path,
    enforced_store: tuple[Path, dict[str, tuple[str, int]]],
) -> None:  # fmt: skip
    audit = tmp_path / "audit.sqlite"
    _, enforced = enforced_store
    with running_gateway(idp, reference_upstream.url, audit, GATEWAY_POLICIES_SHADOW_DIR=str(candidate)) as stack:
        sent = traffic(stack)
        rows = committed(audit, [i for i, _ in sent.values()])
    assert {name: status for name, (_, status) in sent.items()} == {
        name: status for name, (_, status) in enforced.items()
    }  # every response is what the enforced set decided
    by_id = {row["decision_id"]: row for row in rows}
    lost = by_id[sent["agent-payment"][0]]
    assert (lost["decision"], lost["shadow_decision"]) == ("allow", "deny")
    assert json.loads(lost["shadow_policies"]) == ["candidate-no-payments-for-support"]
    gained = by_id[sent["auditor-payment"][0]]
    assert (gained["decision"], gained["shadow_decision"]) == ("deny", "allow")
    same = by_id[sent["agent-contact"][0]]
    assert same["shadow_decision"] == same["decision"] == "allow"
    assert by_id[sent["no-token"][0]]["shadow_decision"] == ""  # refused before a policy decision

    status, out, err = cli("audit", "query", "--path", str(audit), "--shadow-diff", "--format", "json")
    assert status == 0, err
    listed = json.loads(out)
    assert {r["decision_id"] for r in listed} == {sent["agent-payment"][0], sent["auditor-payment"][0]}
    assert {r["shadow_decision"] for r in listed} == {"allow", "deny"}


def test_inputs_keep_no_token_and_no_address(enforced_store: tuple[Path, dict[str, tuple[str, int]]]) -> None:
    audit, sent = enforced_store
    with sqlite3.connect(f"file:{audit}?mode=ro", uri=True) as conn:
        texts = [row[0] for row in conn.execute("SELECT inputs FROM decisions")]
    replayable = [t for t in texts if t]
    assert len(replayable) == 5
    for text in replayable:
        doc = json.loads(text)
        assert doc["v"] == 1 and "Bearer" not in text and "eyJ" not in text
    status, out, _ = cli("audit", "show", "--path", str(audit), sent["agent-payment"][0], "--format", "json")
    assert status == 0 and json.loads(out)["inputs"]["route"] == "payments.read"


def test_policy_diff_names_the_added_policies(candidate: Path) -> None:
    status, out, _ = cli("policy", "diff", str(ROOT / "policies"), str(candidate))
    assert status == 0
    assert "+ candidate-no-payments-for-support (forbid)" in out
    assert "clause: The auditor reads payments for a legal obligation." in out
    assert out.strip().splitlines()[-1] == "2 added, 0 removed, 0 changed"
