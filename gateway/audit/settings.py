"""``[audit]``: the audit trail's settings as one immutable, checked value (``gateway serve`` and the
``gateway audit`` commands read the same section)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from gateway.settings import ConfigError, check_fields, check_http_url, setting

AuditMode = Literal["async", "durable"]


@dataclass(frozen=True)
class AuditSettings:
    SECTION: ClassVar[str] = "audit"

    #: The embedded store, the record of truth (SQLite, WAL). Its directory is created if missing.
    path: str = "var/audit.sqlite"
    #: ``durable``: ``record()`` returns after the record's group commit (synchronous=FULL).
    #: ``async``: ``record()`` returns once queued; committed within milliseconds (synchronous=NORMAL).
    mode: str = setting("async", choices=("async", "durable"))
    #: Records queued and not yet committed. When full, ``record()`` waits; it never drops while the
    #: store is writable.
    queue_size: int = setting(10000, minimum=1)
    #: Most records in one group commit.
    batch_size: int = setting(512, minimum=1)
    #: async mode: how long the writer waits for more records before a group commit (less once
    #: ``batch_size`` records are queued), so one commit carries many records under load and the
    #: writer wakes, and takes the GIL, per batch (durable mode never waits: its callers are blocked
    #: meanwhile). The contract's "queryable within 1 s" bounds it.
    linger_seconds: float = setting(0.05, minimum=0, internal=True)
    #: Store unwritable: True = ``record()`` raises ``AuditUnavailable`` (the gateway answers 503);
    #: False = requests go on, the failure is logged, counted and shown by ``healthy``/``last_error``.
    fail_closed: bool = True
    #: How long a write waits for a lock held by another process before it counts as a failure.
    busy_timeout_seconds: float = setting(5.0, minimum=0)
    #: OTLP/HTTP endpoint for ``authz.decision`` spans (base URL or full ``.../v1/traces``); "" = no export.
    otlp_endpoint: str = ""
    otlp_timeout_seconds: float = setting(10.0, above=0)
    #: Longest delay between a commit and the next export attempt.
    export_interval_seconds: float = setting(1.0, above=0)
    export_batch_size: int = setting(512, minimum=1)
    #: Upper bound of the back-off between failed export attempts (attempts never stop).
    export_max_backoff_seconds: float = setting(30.0, above=0)
    #: Default age for ``gateway audit purge`` when ``--older-than`` is not given.
    retention_days: int = setting(400, minimum=0)  # 0 = keep everything (purge refuses)
    #: ``service.name`` of the exported spans.
    service_name: str = "privacy-gateway"
    #: Names this writer in the store; each concurrent writer of one store needs its own.
    #: "" = ``{hostname}-{pid}``. A stable id continues its sequence across restarts.
    gateway_id: str = ""
    #: ``close()`` gives up on an unwritable store after this long (what remains is counted as lost).
    close_timeout_seconds: float = setting(10.0, above=0, internal=True)
    #: The audit key (Ed25519, PEM, mode 0600) that signs checkpoints and purge markers; created if
    #: missing. "" = ``<path>.signing-key``.
    signing_key_file: str = ""
    #: Longest time between two signed checkpoints of the chain head while records are written
    #: (0 = one per group commit); the last batch of a session always carries one.
    checkpoint_interval_seconds: float = setting(60.0, minimum=0)

    #: The key of the store's pseudonyms (e-mail addresses are kept only as HMAC-SHA256 under it);
    #: 0600, created if missing. "" = ``<path>.pseudonym-key``.
    pseudonym_key_file: str = ""

    def __post_init__(self) -> None:
        check_fields(self)
        if not self.path:
            raise ConfigError("audit.path", "must not be empty")
        check_http_url("audit.otlp_endpoint", self.otlp_endpoint.strip(), empty_ok=True)

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
