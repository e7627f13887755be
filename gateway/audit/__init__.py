"""The audit trail: every decision durable in SQLite, exported to OpenTelemetry, and queryable.

Design and trade-offs: see README.md in this package. Entry points: ``AuditLog`` (log.py), the
``AuditSink`` (sink.py) the request path depends on, ``gateway audit ...`` (commands.py) for auditors.
"""
