"""Errors of the audit trail."""

from __future__ import annotations


class AuditUnavailable(Exception):
    """The record could not be made durable (or accepted) and ``fail_closed`` is on: answer 503."""
