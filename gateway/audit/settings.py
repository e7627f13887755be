"""Audit settings as one immutable value; the lead maps the ``audit.*`` configuration keys onto it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

AuditMode = Literal["async", "durable"]


@dataclass(frozen=True)
class AuditSettings:
    #: The embedded store, the record of truth (SQLite, WAL). Its directory is created if missing.
    path: str = "var/audit.sqlite"
    #: ``durable``: ``record()`` returns after the record's group commit (synchronous=FULL).
    #: ``async``: ``record()`` returns once queued; committed within milliseconds (synchronous=NORMAL).
    mode: str = "async"
    #: Records queued and not yet committed. When full, ``record()`` waits; it never drops while the
    #: store is writable.
    queue_size: int = 10000
    #: Most records in one group commit.
    batch_size: int = 512
    #: async mode: how long the writer waits for more records before a group commit (less once
    #: ``batch_size`` records are queued), so one commit carries many records under load and the
    #: writer wakes, and takes the GIL, per batch (durable mode never waits: its callers are blocked
    #: meanwhile). The contract's "queryable within 1 s" bounds it.
    linger_seconds: float = 0.05
    #: Store unwritable: True = ``record()`` raises ``AuditUnavailable`` (the gateway answers 503);
    #: False = requests go on, the failure is logged, counted and shown by ``healthy``/``last_error``.
    fail_closed: bool = True
    #: How long a write waits for a lock held by another process before it counts as a failure.
    busy_timeout_seconds: float = 5.0
    #: OTLP/HTTP endpoint for ``authz.decision`` spans (base URL or full ``.../v1/traces``); "" = no export.
    otlp_endpoint: str = ""
    otlp_timeout_seconds: float = 10.0
    #: Longest delay between a commit and the next export attempt.
    export_interval_seconds: float = 1.0
    export_batch_size: int = 512
    #: Upper bound of the back-off between failed export attempts (attempts never stop).
    export_max_backoff_seconds: float = 30.0
    #: Default age for ``gateway audit purge`` when ``--older-than`` is not given.
    retention_days: int = 400
    #: ``service.name`` of the exported spans.
    service_name: str = "privacy-gateway"
    #: Names this writer in the store; each concurrent writer of one store needs its own.
    #: "" = ``{hostname}-{pid}``. A stable id continues its sequence across restarts.
    gateway_id: str = ""
    #: ``close()`` gives up on an unwritable store after this long (what remains is counted as lost).
    close_timeout_seconds: float = 10.0
    #: The audit key (Ed25519, PEM, mode 0600) that signs checkpoints and purge markers; created if
    #: missing. "" = ``<path>.signing-key``.
    signing_key_file: str = ""
    #: Longest time between two signed checkpoints of the chain head while records are written
    #: (0 = one per group commit); the last batch of a session always carries one.
    checkpoint_interval_seconds: float = 60.0

    def __post_init__(self) -> None:
        if self.mode not in ("async", "durable"):
            raise ValueError(f"audit.mode: expected 'async' or 'durable', got {self.mode!r}")
        if self.queue_size < 1 or self.batch_size < 1 or self.export_batch_size < 1:
            raise ValueError("audit.queue_size, audit.batch_size and audit.export_batch_size must be positive")
        if not self.path:
            raise ValueError("audit.path must not be empty")
        if self.retention_days < 0:
            raise ValueError("audit.retention_days must not be negative")
        if self.checkpoint_interval_seconds < 0:
            raise ValueError("audit.checkpoint_interval_seconds must not be negative")

    @property
    def signing_key_path(self) -> str:
        return self.signing_key_file or f"{self.path}.signing-key"

    @property
    def durable(self) -> bool:
        return self.mode == "durable"

    @property
    def traces_url(self) -> str:
        """The OTLP/HTTP traces URL for ``otlp_endpoint`` ("" when export is off)."""
        endpoint = self.otlp_endpoint.strip()
        if not endpoint:
            return ""
        if endpoint.rstrip("/").endswith("/v1/traces"):
            return endpoint
        return endpoint.rstrip("/") + "/v1/traces"
