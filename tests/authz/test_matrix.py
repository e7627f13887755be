"""``gateway policy matrix``: the allow table of the shipped policies, as a reviewer reads and diffs it."""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from gateway.authz import matrix
from gateway.authz.engine import PolicyEngine
from gateway.authz.taxonomy import Tree
from gateway.cli import main
from tests.authz.support import ROUTE_MAPS, SHIPPED_POLICIES

MAP_ARGS = [arg for path in ROUTE_MAPS for arg in ("--route-map", str(path))]
SUMMARY = re.compile(r"^(\d+) decisions, (\d+) allows over (\d+) \(kind, role, route\) rows$")
ENGINE = PolicyEngine.load(SHIPPED_POLICIES, ROUTE_MAPS)
EMPLOYEE, SERVICE = ENGINE.roles.employee, ENGINE.roles.service
ROUTES = len(ENGINE.routes.routes)

RowKey = tuple[str, str, str, str]  # kind, role, route, variant


def run(argv: Sequence[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(["policy", "matrix", *argv])
    return status, out.getvalue(), err.getvalue()


def parse_table(text: str) -> dict[RowKey, list[tuple[list[str], list[str], list[str]]]]:
    """(kind, role, route, variant) -> [(purposes, permits, masked pointers)] of each printed row."""
    lines = text.rstrip("\n").split("\n")
    assert lines[0].split()[:4] == ["kind", "role", "route", "variant"]
    rows: dict[RowKey, list[tuple[list[str], list[str], list[str]]]] = {}
    for line in lines[1:-1]:
        kind, role, route, variant, rest = line.split(None, 4)
        purposes, permits, masked = rest.split(" | ")
        rows.setdefault((kind, role, route, variant), []).append(
            (purposes.split(), permits.split(), [] if masked == "-" else masked.split())
        )
    return rows


def summary(text: str) -> tuple[int, int, int]:
    found = SUMMARY.match(text.rstrip("\n").split("\n")[-1])
    assert found, text[-300:]
    decisions, allows, rows = (int(g) for g in found.groups())
    return decisions, allows, rows


@pytest.fixture(scope="module")
def table() -> str:
    status, out, err = run([str(SHIPPED_POLICIES), *MAP_ARGS])
    assert status == 0, err
    return out


def test_a_support_agent_reads_payments_for_support_with_the_card_number_masked(table: str) -> None:
    rows = parse_table(table)
    (row,) = rows[("user", "Support.Agent", "payments.read", "-")]
    purposes, permits, masked = row
    assert "essential.service.operations.support" in purposes
    assert permits == ["support-agent-reads"]
    assert "/card_number" in masked and "/expiry" in masked
    # and nothing of it as an application holding the same role
    assert not any(key[0] == "app" and key[1] == "Support.Agent" for key in rows)


def test_no_application_row_for_an_employee_role_and_no_person_row_for_a_service_role(table: str) -> None:
    rows = parse_table(table)
    assert rows, "the shipped policies allow something"
    assert not [key for key in rows if key[0] == "app" and key[1] in EMPLOYEE]
    assert not [key for key in rows if key[0] == "user" and key[1] in SERVICE]
    # an application holding no role is allowed nothing
    assert not [key for key in rows if key[0] == "app" and key[1] == matrix.NO_ROLE]


def test_the_payment_service_reads_payments_unmasked_a_billing_admin_masked(table: str) -> None:
    rows = parse_table(table)
    (service,) = rows[("app", "Service.Payments", "payments.read", "-")]
    assert service[0] == ["essential.service.payment_processing"] and service[1] == ["service-payments"]
    assert service[2] == []
    (billing,) = rows[("user", "Billing.Admin", "payments.read", "-")]
    assert "essential.service.payment_processing" in billing[0] and "/card_number" in billing[2]


def test_mailboxes_own_and_other(table: str) -> None:
    rows = parse_table(table)
    # an end user reads their own mailbox for the service (and every purpose below it), not another's
    (own,) = rows[("user", matrix.NO_ROLE, "gmail.messages.read", "owner=own")]
    assert own[0] == ["essential.service*"] and own[1] == ["end-user-own-mailbox"]
    assert ("user", matrix.NO_ROLE, "gmail.messages.read", "owner=other") not in rows
    # the legal officer reads another person's mail for a legal obligation; the mail backend for the service
    assert any(
        "essential.legal_obligation" in r[0] and r[1] == ["legal-officer-reads"]
        for r in rows[("user", "Legal.Officer", "gmail.messages.read", "owner=other")]
    )
    assert any(r[1] == ["service-mail"] for r in rows[("app", "Service.Mail", "gmail.messages.read", "owner=other")])


def test_exports_are_asked_per_listed_recipient(table: str) -> None:
    rows = parse_table(table)
    exports = {key[3] for key in rows if key[:3] == ("user", "Sales.Rep", "contacts.export")}
    assert "recipient=salesforce" in exports
    assert all(label.startswith("recipient=") for label in exports)
    unlisted = {f"recipient={name}" for name in ("dropbox", "wetransfer")}
    assert not exports & unlisted


def test_summary_counts_every_role_alone_and_no_role_for_both_kinds(table: str) -> None:
    decisions, allows, combinations = summary(table)
    assert combinations == 2 * (len(EMPLOYEE) + len(SERVICE) + 1) * ROUTES
    purposes = len(ENGINE.taxonomy.purposes.parents)
    assert decisions >= combinations * purposes  # variants ask some routes more than once
    printed = sum(len(parse_table(table)[key]) for key in parse_table(table))
    assert 0 < printed <= allows


def test_rows_are_sorted_and_the_output_is_the_same_every_time() -> None:
    argv = [str(SHIPPED_POLICIES), *MAP_ARGS, "--kind", "user", "--role", "Sales.Rep", "--role", "none"]
    first, second = run(argv), run(argv)
    assert first == second and first[0] == 0
    lines = first[1].rstrip("\n").split("\n")[1:-1]
    keys = [line.split(None, 4)[:4] for line in lines]
    assert keys == sorted(keys, key=lambda k: (k[1] != matrix.NO_ROLE, k[1], k[2], k[3]))
    _, _, combinations = summary(first[1])
    assert combinations == 2 * ROUTES


def test_json_format_parses(capsys: pytest.CaptureFixture[str]) -> None:
    argv = [str(SHIPPED_POLICIES), *MAP_ARGS, "--format", "json", "--kind", "user", "--role", "Support.Agent"]
    assert matrix.main(argv) == 0
    out = capsys.readouterr().out.rstrip("\n")
    document, last = out.rsplit("\n", 1)
    rows: list[dict[str, Any]] = json.loads(document)
    assert SUMMARY.match(last)
    assert {r["kind"] for r in rows} == {"user"} and {r["role"] for r in rows} == {"Support.Agent"}
    (payments,) = [r for r in rows if r["route"] == "payments.read"]
    assert payments["variant"] is None
    assert "essential.service.operations.support" in payments["purposes_expanded"]
    assert payments["policies"] == ["support-agent-reads"]
    assert "/card_number" in payments["masked"]
    own = [r for r in rows if r["route"] == "gmail.messages.read" and r["variant"] == "owner=own"]
    assert own and all(set(r["purposes"]) <= {"essential.service*"} for r in own)
    assert set(own[0]["purposes_expanded"]) == ENGINE.taxonomy.purposes.descendants["essential.service"]


NEW_GRANT = """
@id("matrix-test-new-grant")
@source("tests, a grant under review")
@clause("The analytics service reads aggregated survey results for reporting.")
permit (principal in ServiceRole::"Service.Analytics", action == Action::"read", resource is SurveyResult)
when { context.purpose in Purpose::"analytics.reporting" };
"""


def test_a_policy_added_to_a_copy_shows_as_a_new_allow_row(tmp_path: Path) -> None:
    target = tmp_path / "policies"
    shutil.copytree(SHIPPED_POLICIES, target)
    argv = [*MAP_ARGS, "--kind", "app", "--role", "Service.Analytics"]
    status, before, _ = run([str(target), *argv])
    assert status == 0
    (target / "review").mkdir()
    (target / "review" / "new-grant.cedar").write_text(NEW_GRANT)
    status, after, err = run([str(target), *argv])
    assert status == 0, err
    old, new = (set(text.rstrip("\n").split("\n")[:-1]) for text in (before, after))
    added, removed = new - old, old - new
    assert not removed
    (line,) = added
    assert parse_table("\n".join(["kind role route variant x", line, "summary"])) == {
        ("app", "Service.Analytics", "surveys.results", "-"): [
            (["analytics.reporting*"], ["matrix-test-new-grant"], [])
        ]
    }
    assert summary(after)[1] > summary(before)[1] and summary(after)[0] == summary(before)[0]


def test_a_broken_set_exits_1_with_file_and_line(tmp_path: Path) -> None:
    target = tmp_path / "policies"
    shutil.copytree(SHIPPED_POLICIES, target)
    broken = target / "broken.cedar"
    broken.write_text(
        '\n\n@id("b") @source("s") @clause("c")\nforbid (principal, action, resource) when { resource.nope };\n'
    )
    status, out, err = run([str(target), *MAP_ARGS])
    assert status == 1 and out == ""
    assert f"{broken}:3: " in err


def test_an_unknown_role_is_refused(tmp_path: Path) -> None:
    status, out, err = run([str(SHIPPED_POLICIES), *MAP_ARGS, "--role", "Support.Agnet"])
    assert status == 2 and out == ""
    assert "Support.Agnet" in err and "Support.Agent" in err


def test_purposes_are_compressed_over_the_tree() -> None:
    tree = Tree.build(
        [("a", None, ""), ("a.b", "a", ""), ("a.b.x", "a.b", ""), ("a.c", "a", ""), ("d", None, "")], "purpose", "t"
    )
    assert matrix.compress(tree, ["a", "a.b", "a.b.x", "a.c"]) == ("a*",)
    assert matrix.compress(tree, ["a.b", "a.b.x", "a.c", "d"]) == ("a.b*", "a.c", "d")
    assert matrix.compress(tree, ["a", "a.b"]) == ("a", "a.b")  # a.b.x and a.c missing: no star
    assert matrix.compress(tree, ["a.b.x"]) == ("a.b.x",)  # a leaf is never starred
    assert matrix.compress(tree, []) == ()


def test_every_purpose_in_each_store_changes_no_decision() -> None:
    """``policy matrix`` loads its engine with ``every_purpose`` (one entity store for all purposes of
    a combination): every decision, policy and mask equals the traffic engine's."""
    packed = PolicyEngine.load(SHIPPED_POLICIES, ROUTE_MAPS, every_purpose=True)
    setting = matrix.load_setting(SHIPPED_POLICIES)
    roles = [None, "Support.Agent", "Billing.Admin", "Security.Investigator", "Gmail.Assistant", "Mail.Reader"]
    known = [r for r in roles if r is None or r in ENGINE.roles.employee | ENGINE.roles.service]
    assert len(known) >= 4
    parsed_before = ENGINE.entity_handles.misses
    plain = matrix.build_matrix(ENGINE, setting, roles=known)
    parsed_plain = ENGINE.entity_handles.misses - parsed_before
    same = matrix.build_matrix(packed, setting, roles=known)
    assert plain.allows and plain == same
    # and the stores really are shared: a tenth of the parses, or fewer
    assert packed.entity_handles.misses * 10 < parsed_plain, (packed.entity_handles.misses, parsed_plain)
