"""``gateway policy validate`` and ``gateway policy explain`` as a user runs them."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from gateway.cli import main
from tests.authz.support import POLICIES, SHIPPED_POLICIES, A, B

EXAMPLE = SHIPPED_POLICIES / "examples" / "support-payment.toml"


def test_validate_ok(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "validate", str(POLICIES)]) == 0
    assert capsys.readouterr().out.startswith("ok: ")


def test_the_shipped_examples_run_against_the_shipped_policies(capsys: pytest.CaptureFixture[str]) -> None:
    for example in sorted((SHIPPED_POLICIES / "examples").glob("*.toml")):
        assert main(["policy", "explain", str(example)]) == 0, capsys.readouterr().out


def test_validate_reports_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "policies"
    shutil.copytree(POLICIES, target)
    (target / "broken.cedar").write_text(
        '\n\n@id("b") @source("s") @clause("c")\nforbid (principal, action, resource) when { resource.owner.nope };\n'
    )
    assert main(["policy", "validate", str(target)]) == 1
    err = capsys.readouterr().err
    assert f"{target / 'broken.cedar'}:3: " in err


def test_explain_prints_decision_policies_and_clauses(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "explain", "--dir", str(POLICIES), str(EXAMPLE)]) == 0
    out = capsys.readouterr().out
    assert "ALLOW" in out and "DENY" in out
    assert "support-agent-reads" in out and "tenant-isolation" in out
    assert "clause: A principal only reaches records of its own tenant." in out
    assert "/card_number (user.financial.credit_card, last4) by mask-card-numbers-for-people" in out


def test_explain_json_and_the_direct_cedar_form(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    case = {
        "principal": {"kind": "user", "id": "u-1", "tenant": A, "roles": ["Billing.Admin"]},
        "action": "read",
        "resource": {"type": "Payment", "id": "p-9", "tenant": B, "categories": ["user.financial"]},
        "purpose": "essential.service.payment_processing",
        "expect": {"decision": "deny", "policies": ["tenant-isolation"]},
    }
    path = tmp_path / "case.json"
    path.write_text(json.dumps(case))
    assert main(["policy", "explain", "--dir", str(POLICIES), "--json", str(path)]) == 0
    (document,) = json.loads(capsys.readouterr().out)
    assert document["decision"] == "deny" and document["policies"] == ["tenant-isolation"]
    assert document["reasons"][0]["source"].startswith("CONTRACT.md")
    assert document["expectation_failures"] == []


def test_explain_exit_status_when_an_expectation_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "case.toml"
    path.write_text(
        f'principal = {{ id = "u-1", tenant = "{A}" }}\n'
        f'request = {{ method = "GET", path = "/tenants/{A}/contacts" }}\n'
        'purpose = "essential.service"\nexpect = { decision = "allow" }\n'
    )
    assert main(["policy", "explain", "--dir", str(POLICIES), str(path)]) == 1
    out = capsys.readouterr().out
    assert "EXPECTATION FAILED: decision: expected allow, got deny" in out and "default-deny" in out


def test_explain_rejects_a_malformed_case(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "case.toml"
    path.write_text('[[case]]\nname = "no principal"\n')
    assert main(["policy", "explain", "--dir", str(POLICIES), str(path)]) == 2
    assert "principal" in capsys.readouterr().err


# --- one exit status for a broken policy set, whichever command reads it --------------------------


def _broken(kind: str, target: Path) -> Path:
    """A copy of the test policies broken one way; returns the directory the commands are given."""
    if kind == "missing directory":
        return target / "nowhere"
    shutil.copytree(POLICIES, target)
    if kind == "not a directory":
        (target / "file").write_text("")
        return target / "file"
    if kind == "cedar syntax":
        (target / "broken.cedar").write_text('@id("b") @source("s") @clause("c")\npermit (principal, action,\n')
    elif kind == "schema validation":
        (target / "broken.cedar").write_text(
            '@id("b") @source("s") @clause("c")\nforbid (principal, action, resource) when { resource.owner.nope };\n'
        )
    elif kind == "undecodable policy file":
        (target / "broken.cedar").write_bytes(b"\xff\xfe permit")
    elif kind == "undecodable manifest":
        (target / "manifests" / "broken.toml").write_bytes(b"\xff\xfe")
    elif kind == "undecodable schema":
        (target / "schema.cedarschema").write_bytes(b"\xff\xfe")
    elif kind == "undecodable role model":
        (target / "taxonomy" / "roles.toml").write_bytes(b"\xff\xfe")
    elif kind == "undecodable taxonomy extension":
        (target / "taxonomy" / "project.toml").write_bytes(b"\xff\xfe")
    elif kind == "unreadable taxonomy entry":
        (target / "taxonomy" / "project.toml").unlink()
        (target / "taxonomy" / "project.toml").mkdir()
    else:
        raise AssertionError(kind)
    return target


BROKEN = (
    "cedar syntax",
    "schema validation",
    "missing directory",
    "not a directory",
    "undecodable policy file",
    "undecodable manifest",
    "undecodable schema",
    "undecodable role model",
    "undecodable taxonomy extension",
    "unreadable taxonomy entry",
)


@pytest.mark.parametrize("kind", BROKEN)
@pytest.mark.parametrize("command", ["validate", "explain", "test"])
def test_a_broken_policy_set_exits_1_from_every_policy_command(
    kind: str, command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = str(_broken(kind, tmp_path / "policies"))
    argv = {
        "validate": ["policy", "validate", directory],
        "explain": ["policy", "explain", "--dir", directory, str(EXAMPLE)],
        "test": ["policy", "test", directory],
    }[command]
    assert main(argv) == 1
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    # file:line diagnostics, then the count; never a traceback
    assert lines[-1].endswith(" error(s)"), err
    assert lines[:-1] and all(re.match(r"[^:]+:\d+: ", line) for line in lines[:-1]), err
    assert str(tmp_path / "policies") in err


@pytest.mark.parametrize("command", ["validate", "explain", "test"])
def test_every_policy_command_documents_its_exit_status(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["policy", command, "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "exit status: 0 " in help_text
    assert "1 the policies are broken" in help_text
    assert "2 " in help_text


@pytest.mark.parametrize(
    ("kind", "says"), [("missing directory", "does not exist"), ("not a directory", "is not a directory")]
)
def test_a_policy_directory_that_is_not_there_is_named_as_such(
    kind: str, says: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = _broken(kind, tmp_path / "policies")
    assert main(["policy", "validate", str(directory)]) == 1
    assert capsys.readouterr().err.splitlines()[0] == f"{directory}:1: the policy directory {says}"
