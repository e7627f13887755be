"""Errors of the authorization component."""

from __future__ import annotations


class PolicyError(Exception):
    """Policies, schema, taxonomy, manifests or route maps that cannot be loaded.

    ``diagnostics`` holds one ``file:line: message`` line per problem found.
    """

    def __init__(self, *diagnostics: str) -> None:
        super().__init__("\n".join(diagnostics))
        self.diagnostics: tuple[str, ...] = diagnostics


class ResolverError(Exception):
    """A fact the decision needs could not be fetched; the request is denied (fail closed)."""
