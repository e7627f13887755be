"""Every document a policy cites is named in policies/sources/documents.toml, and nothing cites outside the repo.

A 403's reasons carry ``"source": "<document>, <heading>"``; an auditor reading one must find the document
from the repository (or the installed package) alone. The same holds for the commands' help text.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.authz.roles import MISMATCH_SOURCE
from gateway.cli import build_parser
from tests.policies.support import POLICIES, ROOT, shipped_engine

SOURCES = POLICIES / "sources"
DOCUMENT_NAME = re.compile(r"[\w.-]+\.(?:txt|md)\b")  # how a citation names a file: 001_1da23f6854b0e9ad.txt
DOCUMENT_PATH = re.compile(r"[\w./-]*[\w-]\.(?:txt|md)\b")  # ... or a path to one: policies/sources/CONTRACT.md
OUTSIDE = re.compile(r"\.\./shared|/work/|shared/privacy-policies")
WEB_ADDRESS = re.compile(r"\w+://[^\s)\]]+")
# the addresses help text may show: the local services' (examples and defaults), never a document's
LOCAL_ADDRESS = re.compile(r"\w+://(?:127\.0\.0\.1|localhost|HOST)(?::\w+)?(?:/[^\s]*)?")


def documents() -> dict[str, dict[str, Any]]:
    with (SOURCES / "documents.toml").open("rb") as handle:
        listed: dict[str, dict[str, Any]] = tomllib.load(handle)["documents"]
    return listed


def citations() -> dict[str, str]:
    """Citation -> where it is made: every policy's @source, every manifest's source, the gateway's own."""
    cited = {policy.source: f"{policy.file} @id({policy.id})" for policy in shipped_engine().policies.policies}
    for manifest in sorted((POLICIES / "manifests").glob("*.toml")):
        with manifest.open("rb") as handle:
            cited[tomllib.load(handle)["manifest"]["source"]] = str(manifest)
    cited[MISMATCH_SOURCE] = "gateway/authz/roles.py MISMATCH_SOURCE"
    return cited


def test_every_citation_begins_with_a_listed_document_and_names_no_other() -> None:
    listed = documents()
    for citation, where in citations().items():
        assert any(citation.startswith(name) for name in listed), (where, citation)
        assert set(DOCUMENT_NAME.findall(citation)) <= set(listed), (where, citation)
        assert not WEB_ADDRESS.search(citation), (where, citation)


def test_every_listed_document_is_cited_and_identified() -> None:
    cited = " ".join(citations())
    for name, entry in documents().items():
        assert name in cited, f"{name} is listed in documents.toml but no policy cites it"
        assert entry["title"] and entry["publisher"] and entry["version"], name
        assert re.fullmatch(r"[0-9a-f]{64}", entry["sha256"]), name


def test_a_document_kept_in_the_repository_is_the_text_listed() -> None:
    kept = {name: entry for name, entry in documents().items() if "path" in entry}
    assert "CONTRACT.md" in kept
    for name, entry in kept.items():
        text = (SOURCES / entry["path"]).read_bytes()
        assert hashlib.sha256(text).hexdigest() == entry["sha256"], f"{name}: the copy differs from the one listed"


def test_nothing_shipped_points_outside_the_repository() -> None:
    outside = OUTSIDE
    offenders = [
        str(path.relative_to(ROOT))
        for folder in (ROOT / "policies", ROOT / "gateway")
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.suffix in {".py", ".md", ".toml", ".cedar", ".cedarschema", ".html", ".json"}
        and outside.search(path.read_text(encoding="utf-8"))
    ]
    assert offenders == []


def command_helps() -> Iterator[tuple[str, str]]:
    """``gateway ...`` -> its ``--help`` text, for the command and every sub-command under it."""

    def walk(parser: argparse.ArgumentParser, name: str) -> Iterator[tuple[str, str]]:
        yield name, parser.format_help()
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub_name, sub in action.choices.items():
                    yield from walk(sub, f"{name} {sub_name}")

    yield from walk(build_parser(), "gateway")


def citation_problems(text: str, listed: dict[str, dict[str, Any]]) -> list[str]:
    """What in ``text`` an auditor could not find from the repository alone."""
    text = text.replace(str(ROOT), "<checkout>")  # defaults such as the shipped policies directory
    problems = [f"points outside the repository: {m.group()}" for m in OUTSIDE.finditer(text)]
    for reference in DOCUMENT_PATH.findall(text):
        if Path(reference).name in listed and "/" not in reference:
            continue
        if not (ROOT / reference).is_file():
            problems.append(f"{reference} is neither listed in documents.toml nor a file of the repository")
    for address in WEB_ADDRESS.findall(text):
        if not LOCAL_ADDRESS.fullmatch(address):
            problems.append(f"cites a web address, not a listed document: {address}")
    return problems


def test_no_command_help_cites_a_document_outside_the_repository(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "2000")  # one line per paragraph: no path or address broken at a hyphen
    helps = dict(command_helps())
    assert {"gateway demo-upstream", "gateway policy validate", "gateway policy test", "gateway audit query"} <= set(
        helps
    )
    assert "policies/sources/CONTRACT.md" in helps["gateway demo-upstream"]  # a citation that resolves
    listed = documents()
    problems = [
        f"{command}: {problem}" for command, text in helps.items() for problem in citation_problems(text, listed)
    ]
    assert problems == []


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("(section 6, ../shared/CONTRACT.md)", "points outside the repository: ../shared"),
        ("see shared/privacy-policies/001_1da23f6854b0e9ad.txt", "points outside the repository"),
        ("see privacy/001_1da23f6854b0e9ad.txt", "privacy/001_1da23f6854b0e9ad.txt is neither listed"),
        ("see 999_unknown.txt", "999_unknown.txt is neither listed"),
        ("see https://aircall.io/privacy", "cites a web address"),
    ],
)
def test_the_help_check_refuses_citations_outside_the_repository(text: str, problem: str) -> None:
    found = citation_problems(text, documents())
    assert found and problem in found[0]
    assert citation_problems("(section 6 of policies/sources/CONTRACT.md; 001_1da23f6854b0e9ad.txt)", documents()) == []
