"""``gateway audit query | show | verify | purge``.

The store is found by ``--path``, else ``audit.path`` from ``--config`` / ``GATEWAY_AUDIT_PATH``, else
``var/audit.sqlite``. Queries use a read-only connection, so they are safe while the gateway writes.
Exit status: 0 done; 1 nothing found (show), a loss found (verify), or no store; 2 bad arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway import cliconfig
from gateway.audit.checkpoints import read_entries, store_entries
from gateway.audit.clickhouse import DEFAULT_TABLE, clickhouse_count, clickhouse_query
from gateway.audit.export import OutboxExporter, otlp_span_exporter
from gateway.audit.maintenance import purge, verify
from gateway.audit.output import TABLE_FIELDS, render, render_record
from gateway.audit.query import (
    BUCKETS,
    COUNT_DIMENSIONS,
    DEFAULT_LIMIT,
    QUERY_FIELDS,
    SHADOW_FIELDS,
    AuditFilter,
    QueryError,
    count_decisions,
    parse_age,
    parse_time,
    query_decisions,
    rfc3339,
    show_decision,
)
from gateway.audit.schema import StoreError, connect_maintenance, connect_reader
from gateway.audit.settings import AuditSettings
from gateway.audit.signing import KeyFileError, Signer, load_or_create_key

_DEFAULTS = AuditSettings()


def register(subparsers: Any) -> None:
    audit = subparsers.add_parser(
        "audit", help="query, show, verify and purge the audit trail",
        description="The audit trail: every decision, allowed or denied, in the embedded store.",
    )
    commands = audit.add_subparsers(dest="audit_command", required=True, metavar="SUBCOMMAND")

    query = commands.add_parser(
        "query", help="list matching decisions (newest first) or count them",
        description="List decisions, newest first. Purpose and category match their descendants too. "
        "Times are RFC 3339 or an age before now (15m, 2h, 7d).",
    )
    _store_options(query)
    query.add_argument("--since", metavar="T", help="from this time (inclusive)")
    query.add_argument("--until", metavar="T", help="before this time (exclusive)")
    query.add_argument("--principal", metavar="OID", help="the principal's oid (user) or app id")
    query.add_argument("--tenant", metavar="TID", help="the principal's tenant id")
    query.add_argument("--purpose", metavar="P", help="purpose, or any purpose below it")
    query.add_argument("--category", metavar="C", help="data category, or any category below it")
    query.add_argument("--decision", choices=("allow", "deny"))
    query.add_argument("--policy", metavar="ID", help="a determining policy id")
    query.add_argument("--shadow-diff", action="store_true",
                       help="only the records the shadow policy set (policies.shadow_dir) decided otherwise")
    query.add_argument("--format", choices=("table", "json", "csv"), default="table")
    query.add_argument("--limit", type=int, metavar="N", help=f"at most N records (default {DEFAULT_LIMIT})")
    query.add_argument("--count-by", choices=COUNT_DIMENSIONS, metavar="DIM",
                       help=f"count instead of listing, by one of: {', '.join(COUNT_DIMENSIONS)}")
    query.add_argument("--per", choices=tuple(BUCKETS), help="with --count-by: one count per day or hour (UTC)")
    query.add_argument("--engine", choices=("sqlite", "clickhouse"), default="sqlite",
                       help="clickhouse: print the ClickHouse SQL (OpenTelemetry Collector schema) instead")
    query.add_argument("--table", default=DEFAULT_TABLE,
                       help=f"with --engine clickhouse: the traces table (default {DEFAULT_TABLE})")
    query.set_defaults(func=run_query)

    show = commands.add_parser("show", help="one decision in full", description="Print one decision in full.")
    show.add_argument("decision_id", metavar="DECISION_ID")
    _store_options(show)
    show.add_argument("--format", choices=("text", "json"), default="text")
    show.set_defaults(func=run_show)

    check = commands.add_parser(
        "verify", help="check every gateway's sequence and hash chain (exit 1 naming the first broken record)",
        description="Report sequence gaps and hash-chain breaks per gateway id: how a lost, edited, deleted or "
        "reordered record shows. With --checkpoints, also check the store against signed checkpoints kept "
        "elsewhere: a chain rewritten after they were signed shows.",
    )
    _store_options(check)
    check.add_argument("--format", choices=("text", "json"), default="text")
    check.add_argument("--checkpoints", metavar="FILE",
                       help="signed checkpoints kept earlier (JSON lines of {jws, jwk}: gateway audit checkpoints, "
                       "or the audit.checkpoint events and audit.purge spans the collector received)")
    check.add_argument("--keys", metavar="JWKS",
                       help="with --checkpoints: accept only checkpoints signed by these public keys (a JWK set)")
    check.set_defaults(func=run_verify)

    marks = commands.add_parser(
        "checkpoints", help="print the store's signed checkpoints and purge markers (JSON lines)",
        description="Every signed checkpoint and purge marker of the store with the public key that signed it, "
        "one JSON object a line: what an auditor keeps for gateway audit verify --checkpoints.",
    )
    _store_options(marks)
    marks.set_defaults(func=run_checkpoints)

    remove = commands.add_parser(
        "purge", help="remove records older than an age (retention)",
        description="Remove records older than AGE; verify keeps treating the purged range as expected.",
    )
    _store_options(remove)
    remove.add_argument("--older-than", metavar="AGE",
                        help="e.g. 400d, 12w (default: audit.retention_days from the configuration)")
    remove.add_argument("--include-unexported", action="store_true",
                        help="also remove records the OTLP export has not delivered yet")
    remove.add_argument("--dry-run", action="store_true", help="count only")
    remove.set_defaults(func=run_purge)

    export = commands.add_parser(
        "export", help="send the store's decisions as spans to an OTLP endpoint, from this process",
        description="The OTLP outbox outside the gateway process (e.g. at high rates, with audit.otlp_endpoint "
        "left empty in the gateway): exports from the stored cursor on, until interrupted.",
    )
    _store_options(export)
    export.add_argument("--endpoint", help="OTLP/HTTP endpoint (default: audit.otlp_endpoint)")
    export.add_argument("--once", action="store_true",
                        help="export what is committed now, then exit (1 if the collector did not take it all)")
    export.add_argument("--timeout", type=float, default=60.0, help="with --once: give up after this many seconds")
    export.set_defaults(func=run_export)

    from gateway.audit import reportcommands

    reportcommands.register(commands)  # subject, report


def _store_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--path", metavar="FILE", help=f"the audit store (default: audit.path, {_DEFAULTS.path})")
    parser.add_argument("--config", metavar="FILE", help="read audit.path (and audit.retention_days) from it")


@dataclass(frozen=True)
class _Configured:
    path: str
    retention_days: int
    otlp_endpoint: str
    service_name: str
    signing_key_file: str = ""


def _configured(args: argparse.Namespace) -> _Configured:
    """The ``audit.*`` keys the commands use: --path wins, then ``[audit]`` of the configuration (file +
    environment, as ``gateway serve`` reads it); a refused value is one line and exit 2."""
    audit = cliconfig.section_or_exit(AuditSettings, getattr(args, "config", None))
    return _Configured(
        path=getattr(args, "path", None) or audit.path,
        retention_days=audit.retention_days,
        otlp_endpoint=audit.otlp_endpoint,
        service_name=audit.service_name,
        signing_key_file=audit.signing_key_file,
    )


def _signer(configured_key: str, path: str) -> Signer:
    """The audit key (the gateway's, beside the store unless audit.signing_key_file says otherwise)."""
    return Signer(load_or_create_key(Path(configured_key or f"{path}.signing-key")))


def _fail(command: str, message: str, status: int) -> int:
    print(f"gateway audit {command}: {message}", file=sys.stderr)
    return status


def _filter(args: argparse.Namespace, limit: int) -> AuditFilter:
    now = time.time()
    return AuditFilter(
        since_us=parse_time(args.since, now) if args.since else None,
        until_us=parse_time(args.until, now) if args.until else None,
        principal=args.principal,
        tenant=args.tenant,
        purpose=args.purpose,
        category=args.category,
        decision=args.decision,
        policy=args.policy,
        limit=limit,
        shadow_diff=bool(getattr(args, "shadow_diff", False)),
    )


def run_query(args: argparse.Namespace) -> int:
    if args.per and not args.count_by:
        return _fail("query", "--per needs --count-by", 2)
    counting = args.count_by is not None
    limit = args.limit if args.limit is not None else (10**9 if counting else DEFAULT_LIMIT)
    try:
        flt = _filter(args, limit)
    except QueryError as exc:
        return _fail("query", str(exc), 2)
    if args.engine == "clickhouse":
        try:
            if counting:
                sql = clickhouse_count(flt, args.count_by, args.per, table=args.table, fmt=args.format)
            else:
                sql = clickhouse_query(flt, table=args.table, fmt=args.format)
        except QueryError as exc:
            return _fail("query", str(exc), 2)
        print(sql)
        return 0
    try:
        path = _configured(args).path
        conn = connect_reader(path)
    except (StoreError, OSError, ValueError) as exc:
        return _fail("query", str(exc), 1)
    try:
        if counting:
            rows = count_decisions(conn, flt, args.count_by, args.per)[:limit]
            fields = [args.count_by, *([args.per] if args.per else []), "count"]
        else:
            rows = query_decisions(conn, flt)
            fields = list(TABLE_FIELDS if args.format == "table" else QUERY_FIELDS)
            if flt.shadow_diff:
                fields += list(SHADOW_FIELDS)
    except QueryError as exc:
        return _fail("query", str(exc), 2)
    finally:
        conn.close()
    print(render(rows, args.format, fields))
    return 0


def run_show(args: argparse.Namespace) -> int:
    try:
        path = _configured(args).path
        conn = connect_reader(path)
    except (StoreError, OSError, ValueError) as exc:
        return _fail("show", str(exc), 1)
    try:
        record = show_decision(conn, args.decision_id)
    finally:
        conn.close()
    if record is None:
        return _fail("show", f"no decision {args.decision_id} in {path}", 1)
    print(json.dumps(record, indent=2, ensure_ascii=False) if args.format == "json" else render_record(record))
    return 0


def run_verify(args: argparse.Namespace) -> int:
    try:
        path = _configured(args).path
        entries = pinned = None
        if args.checkpoints:
            with open(args.checkpoints, encoding="utf-8") as handle:
                entries = read_entries(handle.read())
        if args.keys:
            pinned = _read_keys(args.keys)
        conn = connect_reader(path)
    except (StoreError, OSError, ValueError) as exc:
        return _fail("verify", str(exc), 1 if not isinstance(exc, ValueError) else 2)
    try:
        report = verify(conn, entries, pinned)
    finally:
        conn.close()
    if args.format == "json":
        print(json.dumps({"ok": report.ok, "gateways": [g.as_dict() for g in report.gateways]}, indent=2))
        return 0 if report.ok else 1
    if not report.gateways:
        print(f"{path}: no records")
    for gateway in report.gateways:
        status = "OK" if gateway.ok else ("BROKEN" if gateway.breaks else "LOSS")
        purged = f", purged through {gateway.watermark}" if gateway.watermark else ""
        running = ", session open (running, or ended without close)" if gateway.open_session else ""
        if gateway.breaks:
            chain = f", chain BROKEN ({len(gateway.breaks) + gateway.more_breaks} breaks)"
        elif gateway.chained:
            chain = f", chain intact ({gateway.chained} hashed, {gateway.checkpoints} signed checkpoints)"
        else:
            chain = ""
        if gateway.unchained:
            chain += f", {gateway.unchained} written before the hash chain"
        print(f"{status}  {gateway.gateway_id}: sequence {gateway.expected_from}..{gateway.highest}, "
              f"{gateway.stored} stored{purged}{running}{chain}")
        first = gateway.first_break
        if first is not None:
            print(f"      first broken record: {first.decision_id or '(unknown)'} (sequence {first.seq}): "
                  f"{first.kind}: {first.detail}")
            for other in sorted(gateway.breaks, key=lambda b: b.seq)[1:]:
                print(f"      also: {other.decision_id or '(unknown)'} (sequence {other.seq}): {other.kind}")
        for gap in gateway.gaps:
            span = f"{gap.first}" if gap.first == gap.last else f"{gap.first}..{gap.last}"
            if gap.kind == "unclean_end":
                what = (
                    "writer ended without closing (durable: these requests never got a response)"
                    if gap.mode == "durable"
                    else f"writer ended without closing ({gap.mode or 'async'}: queued records lost)"
                )
            else:
                what = "missing"
            print(f"      {span} ({gap.count} record{'s' if gap.count != 1 else ''}): {what}")
    return 0 if report.ok else 1


def _read_keys(path: str) -> dict[str, Any]:
    from gateway.audit.signing import key_from_jwk

    with open(path, encoding="utf-8") as handle:
        document = json.load(handle)
    keys = document.get("keys", [document]) if isinstance(document, dict) else document
    return {str(jwk.get("kid")): key_from_jwk(jwk) for jwk in keys}


def run_checkpoints(args: argparse.Namespace) -> int:
    try:
        conn = connect_reader(_configured(args).path)
    except (StoreError, OSError, ValueError) as exc:
        return _fail("checkpoints", str(exc), 1)
    try:
        entries = store_entries(conn)
    finally:
        conn.close()
    for entry in entries:
        print(json.dumps(entry, sort_keys=True))
    return 0


def run_purge(args: argparse.Namespace) -> int:
    try:
        configured = _configured(args)
        path = configured.path
        age = parse_age(args.older_than) if args.older_than else configured.retention_days * 86400.0
    except (QueryError, OSError, ValueError) as exc:
        return _fail("purge", str(exc), 2)
    if age <= 0:
        return _fail("purge", "the age must be positive (retention_days = 0 means keep everything)", 2)
    cutoff_us = round((time.time() - age) * 1_000_000)
    try:
        conn = connect_maintenance(path)
    except (StoreError, OSError) as exc:
        return _fail("purge", str(exc), 1)
    try:
        signer = None if args.dry_run else _signer(configured.signing_key_file, path)
        result = purge(conn, cutoff_us, include_unexported=args.include_unexported, dry_run=args.dry_run,
                       signer=signer)
    except KeyFileError as exc:
        return _fail("purge", f"cannot sign the purge marker: {exc}", 1)
    finally:
        conn.close()
    verb = "would remove" if args.dry_run else "removed"
    print(f"{verb} {result.removed} decision{'s' if result.removed != 1 else ''} "
          f"older than {rfc3339(cutoff_us)} from {path}")
    if result.kept_unexported:
        print(f"kept {result.kept_unexported} older decisions the OTLP export has not delivered yet "
              "(--include-unexported removes them too)")
    for gateway_id, through in sorted(result.watermarks.items()):
        print(f"  {gateway_id}: purged through sequence {through}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    try:
        configured = _configured(args)
        settings = AuditSettings(
            path=configured.path,
            otlp_endpoint=args.endpoint or configured.otlp_endpoint,
            service_name=configured.service_name,
            otlp_timeout_seconds=min(_DEFAULTS.otlp_timeout_seconds, args.timeout) if args.once else
            _DEFAULTS.otlp_timeout_seconds,
        )
    except (OSError, ValueError) as exc:
        return _fail("export", str(exc), 2)
    if not settings.traces_url:
        return _fail("export", "no endpoint: pass --endpoint or set audit.otlp_endpoint", 2)
    if not os.path.exists(settings.path):
        return _fail("export", f"no audit store at {settings.path}", 1)
    exporter = OutboxExporter(settings, otlp_span_exporter(settings), owner=f"export-{os.getpid()}")
    if args.once:
        outcome = exporter.export_pending(args.timeout)
        exporter.close(0)
        print(f"{outcome}: {exporter.exported} spans exported to {settings.traces_url}; cursor at {exporter.cursor}")
        return 0 if outcome in ("caught_up", "leased_elsewhere") else 1
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    exporter.start()
    print(f"exporting {settings.path} to {settings.traces_url} (Ctrl+C stops)", flush=True)
    while not stop.wait(1.0):
        pass
    exporter.close(5.0)
    print(f"stopped: {exporter.exported} spans exported; cursor at {exporter.cursor}")
    return 0
