"""Every document a policy cites is named in policies/sources/documents.toml, and nothing cites outside the repo.

A 403's reasons carry ``"source": "<document>, <heading>"``; an auditor reading one must find the document
from the repository (or the installed package) alone.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from typing import Any

from gateway.authz.roles import MISMATCH_SOURCE
from tests.policies.support import POLICIES, ROOT, shipped_engine

SOURCES = POLICIES / "sources"
DOCUMENT_NAME = re.compile(r"[\w.-]+\.(?:txt|md)\b")  # how a citation names a file: 001_1da23f6854b0e9ad.txt


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
    outside = re.compile(r"\.\./shared|/work/|shared/privacy-policies")
    offenders = [
        str(path.relative_to(ROOT))
        for folder in (ROOT / "policies", ROOT / "gateway")
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.suffix in {".py", ".md", ".toml", ".cedar", ".cedarschema", ".html", ".json"}
        and outside.search(path.read_text(encoding="utf-8"))
    ]
    assert offenders == []
