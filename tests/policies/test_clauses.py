"""The clause tables of policies/README.md agree with the packs: every pack policy is listed, every id it names exists,
and every case it cites exists and decides as the mark says (✓ allowed, ✗ refused, ✂ allowed with
response fields masked, ⊘ allowed with list items withheld). Each enforced clause cites a refused,
masked or withheld case, and an allowed one unless the row says why none can exist."""

from __future__ import annotations

import re

import pytest

from gateway.authz.decision import DEFAULT_DENY
from gateway.authz.policytest import Report, run_suites
from tests.policies.support import POLICIES, ROUTE_MAPS, shipped_engine

CLAUSES = POLICIES / "README.md"
CITATION = re.compile(r'([✓✗✂⊘]) `([\w./-]+\.toml)`: "([^"]+)"')
POLICY_ID = re.compile(r"`([a-z0-9][a-z0-9-]*[a-z0-9])`")


@pytest.fixture(scope="module")
def report() -> Report:
    return run_suites(POLICIES, ROUTE_MAPS)


def enforced_rows() -> list[str]:
    return [line for line in CLAUSES.read_text(encoding="utf-8").splitlines() if CITATION.search(line)]


def test_every_pack_policy_is_listed_and_every_listed_id_exists() -> None:
    policies = shipped_engine().policies
    # the "enforced by" column: | heading | clause | enforced by | tests |
    named = {m for row in enforced_rows() for m in POLICY_ID.findall(row.split(" | ")[2]) if "-" in m}
    assert named - {*policies.by_id, DEFAULT_DENY} == set()
    pack_ids = {p.id for p in policies.policies if "/packs/" in p.file}
    assert pack_ids - named == set()


def test_every_cited_case_exists_and_decides_as_marked(report: Report) -> None:
    by_name = {}
    for outcome in report.outcomes:
        source = outcome.case.case.source.split(":")[0]
        relative = source.split("/policies/packs/")[-1]
        by_name[(relative, outcome.case.case.name)] = outcome
    rows = enforced_rows()
    assert len(rows) >= 50
    for row in rows:
        for mark, path, name in CITATION.findall(row):
            outcome = by_name.get((path, name))
            assert outcome is not None, f"{path}: no case named {name!r}"
            decision = outcome.decision
            if mark == "✓":
                assert decision.allowed, name
            elif mark == "✗":
                assert not decision.allowed, name
            elif mark == "⊘":
                assert decision.allowed and outcome.withheld, name
            else:
                assert decision.allowed and decision.masks, name


def test_every_enforced_clause_has_a_refusal_and_an_allowed_case() -> None:
    for row in enforced_rows():
        marks = {mark for mark, _, _ in CITATION.findall(row)}
        assert marks & {"✗", "✂", "⊘"}, row
        assert "✓" in marks or "no role" in row or "no allowed" in row, row
