"""The shipped policy packs pass their own suites, and the runner reports what it must."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from gateway.authz.policytest import Report, SuiteError, main, run_suites
from tests.policies.support import POLICIES, ROUTE_MAPS, shipped_engine

PACKS = ("heedify", "aircall", "helloleads", "hellocustomer", "halocrm")


@pytest.fixture(scope="module")
def report() -> Report:
    return run_suites(POLICIES, ROUTE_MAPS)


def test_every_shipped_case_passes(report: Report) -> None:
    failures = [f"{o.case.case.source}: {o.case.case.name}: {o.problems}" for o in report.failures]
    assert failures == []
    assert len(report.outcomes) >= 100


def test_coverage_is_at_least_95_percent(report: Report) -> None:
    assert report.percent >= 95.0, [(c.group, c.missing) for c in report.coverage if c.missing]
    groups = {c.group for c in report.coverage}
    assert {"base", "packs/shared", *(f"packs/{p}" for p in PACKS)} <= groups


def test_each_privacy_policy_demo_shows_an_allowed_and_a_refused_request(report: Report) -> None:
    for pack in PACKS:
        demo = [o for o in report.outcomes if o.case.kind == "demo" and f"/packs/{pack}/" in o.case.case.source]
        assert {o.decision.allowed for o in demo} == {True, False}, pack
        # The refusal names a policy (not only a request check), so the demo shows a rule.
        refused = [o for o in demo if not o.decision.allowed]
        assert all(o.decision.status == 403 and o.decision.policy_ids for o in refused), pack


def test_every_pack_policy_carries_its_privacy_policy_source() -> None:
    texts = {"000_4e1d647efcb9a7fb.txt", "001_1da23f6854b0e9ad.txt", "002_c8f752e081250360.txt",
             "003_dacf7e2ddc38ff24.txt", "004_9ddedf33740420fc.txt"}  # fmt: skip
    pack_policies = [p for p in shipped_engine().policies.policies if "/packs/" in p.file]
    assert len(pack_policies) >= 30
    for policy in pack_policies:
        assert any(name in policy.source for name in texts), policy.id
        assert policy.clause.strip(), policy.id


# --- the runner on a small policy directory --------------------------------------------------------


def policy_dir(tmp_path: Path, suite: str, *, pack_policies: str = "") -> Path:
    """The shipped schema, taxonomy, manifests, base policies and fixtures, plus one pack."""
    target = tmp_path / "policies"
    target.mkdir()
    shutil.copy(POLICIES / "schema.cedarschema", target)
    for folder in ("taxonomy", "manifests", "base"):
        shutil.copytree(POLICIES / folder, target / folder)
    (target / "packs" / "demo" / "tests").mkdir(parents=True)
    shutil.copy(POLICIES / "packs" / "fixtures.toml", target / "packs")
    if pack_policies:
        (target / "packs" / "demo" / "demo.cedar").write_text(pack_policies)
    (target / "packs" / "demo" / "tests" / "cases.toml").write_text(suite)
    return target


def run(directory: Path, *extra: str) -> int:
    args = [str(directory), *(a for m in ROUTE_MAPS for a in ("--route-map", str(m))), *extra]
    return main(args)


WRONG = """
[[case]]
name = "an agent of fabrikam reads a contoso payment"
principal = { kind = "user", tenant = "fabrikam", roles = ["Support.Agent"] }
route = "payments.read"
params = { tid = "contoso", id = "pay-a-005" }
purpose = "essential.service.operations.support"
expect = { decision = "allow", policies = ["support-agent-reads"] }
"""


def test_a_failing_case_shows_expected_and_actual_decisions_and_reasons(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = policy_dir(tmp_path, WRONG)
    assert run(directory) == 1
    out = capsys.readouterr().out
    assert f"FAIL {directory}/packs/demo/tests/cases.toml:2  an agent of fabrikam reads a contoso payment" in out
    assert "expected: allow by [support-agent-reads]" in out
    assert "actual:   deny by [tenant-isolation]" in out
    assert "- tenant-isolation: A principal only reaches records of its own tenant." in out
    assert "decision: expected allow, got deny" in out
    assert "1 passed" not in out and "0 passed, 1 failed" in out


def test_coverage_under_the_threshold_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    right = WRONG.replace('decision = "allow", policies = ["support-agent-reads"]',
                          'decision = "deny", policies = ["tenant-isolation"]')  # fmt: skip
    directory = policy_dir(tmp_path, right)
    assert run(directory, "--coverage") == 0
    out = capsys.readouterr().out
    assert "1 passed, 0 failed" in out
    assert "never determined:" in out and "support-agent-reads" in out.split("never determined:")[1]
    assert run(directory, "--threshold", "95") == 1
    assert "under the threshold 95%" in capsys.readouterr().err
    assert run(directory, "--threshold", "1") == 0


def test_a_pack_policy_nobody_tests_shows_as_uncovered(tmp_path: Path) -> None:
    pack = """
@id("demo-no-sms-marketing")
@source("demo.txt, Marketing")
@clause("We never market by text message.")
forbid (principal, action in Action::"access", resource)
when { context.purpose in Purpose::"marketing.communications.sms" };
"""
    directory = policy_dir(tmp_path, WRONG.replace('"allow"', '"deny"').replace("support-agent-reads",
                                                                             "tenant-isolation"),
                           pack_policies=pack)  # fmt: skip
    report = run_suites(directory, ROUTE_MAPS)
    demo = next(c for c in report.coverage if c.group == "packs/demo")
    assert demo.policies == ["demo-no-sms-marketing"] and demo.missing == ["demo-no-sms-marketing"]


def test_a_case_whose_path_matches_another_route_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    suite = """
[[case]]
name = "an id with a slash reaches the recording route, not the call"
principal = { kind = "user", tenant = "contoso", roles = ["Support.Agent"] }
route = "calls.read"
params = { tid = "contoso", id = "call-a-003/recording" }
purpose = "essential.service.operations.support"
expect = { decision = "allow" }
"""
    assert run(policy_dir(tmp_path, suite)) == 1
    assert "route: expected calls.read, the request matched calls.recording" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("suite", "message"),
    [
        ('[[case]]\nname = "x"\nprincipal = { kind = "user", tenant = "contoso" }\nroute = "no.such"\n'
         'purpose = "essential.service"\n', "cases.toml:1: no route 'no.such'"),
        ('[[case]]\nname = "x"\nprincipal = { kind = "user", tenant = "contoso" }\nroute = "contacts.read"\n'
         'params = { tid = "contoso" }\npurpose = "essential.service"\n', "needs the parameter 'id'"),
        ('[[case]\nname = "x"\n', "cases.toml:1: TOML syntax"),
        ('[[case]]\nname = "x"\nprincipal = { kind = "user", tenant = "contoso" }\nroute = "contacts.list"\n'
         'params = { tid = "contoso" }\npurpose = "essential.service"\n', "a case needs expect"),
        ('[[case]]\nname = "x"\nprincipal = { kind = "user", tenant = "contoso" }\nrequest = { path = "/x" }\n'
         'purpose = "essential.service"\nsurprise = 1\nexpect = "deny"\n', "unknown keys surprise"),
    ],
)  # fmt: skip
def test_a_malformed_suite_is_an_error_with_its_location(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], suite: str, message: str
) -> None:
    assert run(policy_dir(tmp_path, suite)) == 2
    assert message in capsys.readouterr().err
    with pytest.raises(SuiteError):
        run_suites(tmp_path / "policies", ROUTE_MAPS)


def test_a_broken_policy_stops_the_run_with_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = '@id("x")\n@source("a, b")\n@clause("c")\npermit (principal, action, resource) when { resource.nope };\n'
    assert run(policy_dir(tmp_path, WRONG, pack_policies=broken)) == 1  # as policy validate and explain
    assert "packs/demo/demo.cedar:1:" in capsys.readouterr().err
