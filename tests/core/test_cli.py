"""``gateway`` itself: a sub-command module that cannot be imported is an error, never a missing command."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from gateway import cli


def test_a_missing_command_module_is_a_one_line_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli, "COMMAND_MODULES", (*cli.COMMAND_MODULES, "gateway.no_such_commands"))
    assert cli.main(["policy", "validate", "--help"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1
    assert "gateway.no_such_commands" in err


def test_a_missing_dependency_of_a_command_module_is_a_one_line_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "commands_needing_more.py").write_text("import no_such_dependency_of_the_gateway\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(cli, "COMMAND_MODULES", (*cli.COMMAND_MODULES, "commands_needing_more"))
    assert cli.main(["policy", "validate", "--help"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "commands_needing_more" in err and "no_such_dependency_of_the_gateway" in err


def test_every_command_module_loads() -> None:
    (commands,) = (a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    choices = commands.choices
    assert {"serve", "demo", "dev-idp", "demo-upstream", "token", "policy", "audit", "envoy-config"} <= set(choices)
