"""Errors of the authorization component."""

from __future__ import annotations

import sys
from pathlib import Path

#: The exit status of every ``gateway policy`` command given a policy set that does not load.
BROKEN_POLICY_EXIT = 1


class PolicyError(Exception):
    """Policies, schema, taxonomy, manifests or route maps that cannot be loaded.

    ``diagnostics`` holds one ``file:line: message`` line per problem found.
    """

    def __init__(self, *diagnostics: str) -> None:
        super().__init__("\n".join(diagnostics))
        self.diagnostics: tuple[str, ...] = diagnostics


def read_bundle_text(path: Path, what: str) -> str:
    """One UTF-8 file of a policy bundle; ``PolicyError`` naming it when it cannot be read or decoded."""
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(f"{path}:1: cannot read {what}: {exc}") from None


def report_broken(exc: PolicyError) -> int:
    """Print the diagnostics and their count on stderr; the exit status of a broken policy set."""
    for line in exc.diagnostics:
        print(line, file=sys.stderr)
    print(f"{len(exc.diagnostics)} error(s)", file=sys.stderr)
    return BROKEN_POLICY_EXIT


class ResolverError(Exception):
    """A fact the decision needs could not be fetched; the request is denied (fail closed)."""
