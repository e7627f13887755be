"""Authentication failures: a machine-readable reason and a human description, never the token."""

from __future__ import annotations


class AuthenticationError(Exception):
    """A request could not be authenticated.

    ``reason`` is a short stable code (``missing_token``, ``malformed``, ``expired``, ``bad_signature``,
    ``unknown_kid``, ...) recorded in the audit trail; ``description`` goes to the client in
    ``error_description`` and the problem+json ``detail``. Neither may contain the token itself.
    """

    def __init__(self, reason: str, description: str) -> None:
        super().__init__(description)
        self.reason = reason
        self.description = description

    @property
    def missing(self) -> bool:
        """No credentials at all: RFC 6750 section 3.1 says answer without an error code."""
        return self.reason == "missing_token"
