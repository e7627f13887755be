"""Times for fixtures, relative to now: a test that works today works next year."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


def rfc3339_in(days: float) -> str:
    """An RFC 3339 UTC timestamp ``days`` from now (negative: in the past), to the second."""
    return (datetime.now(UTC) + timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ")
