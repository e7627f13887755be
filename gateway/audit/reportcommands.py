"""``gateway audit subject SUBJECT`` and ``gateway audit report --out FILE.html`` (see subjects.py and
reports.py). Both read the store through a read-only connection; ``--path`` wins over the
configuration's ``audit.path`` (``--config`` as for ``gateway serve``)."""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from gateway.audit.output import render
from gateway.audit.query import AuditFilter, QueryError, parse_time
from gateway.audit.schema import StoreError, connect_reader
from gateway.audit.subjects import SUBJECT_FIELDS, subject_report


def register(commands: Any) -> None:
    subject = commands.add_parser(
        "subject", help="every decision that touched one data subject's data (an access request's answer)",
        description="SUBJECT is a contact id, an e-mail address or a mailbox user id (oid); the records are "
        "found through the subject keys the route maps name, linked across records (an address finds its "
        "contact, the contact its calls). Addresses are looked up by their keyed pseudonym.",
    )
    subject.add_argument("subject", metavar="SUBJECT")
    _window_options(subject)
    subject.add_argument("--format", choices=("table", "json", "csv", "html"), default="table")
    subject.set_defaults(func=run_subject)

    report = commands.add_parser(
        "report", help="one self-contained HTML report with plots of the decisions in a window",
        description="Decisions per day, refusals by category and purpose, readers of sensitive categories, "
        "masked fields, policy sets in force and the sequence check, as one HTML file with inline SVG.",
    )
    _window_options(report)
    report.add_argument("--out", metavar="FILE.html", help="where to write the report (required with sqlite)")
    report.set_defaults(func=run_report)


def _window_options(parser: argparse.ArgumentParser) -> None:
    from gateway.audit.clickhouse import DEFAULT_TABLE

    parser.add_argument("--engine", choices=("sqlite", "clickhouse"), default="sqlite",
                        help="clickhouse: print the same query as ClickHouse SQL over the Collector's traces table")
    parser.add_argument("--table", default=DEFAULT_TABLE, help=f"with --engine clickhouse (default {DEFAULT_TABLE})")
    parser.add_argument("--since", metavar="T", help="from this time (RFC 3339 or an age: 30d)")
    parser.add_argument("--until", metavar="T", help="before this time")
    parser.add_argument("--path", metavar="FILE", help="the audit store (default: audit.path)")
    parser.add_argument("--config", metavar="FILE", help="the configuration (audit.path, audit.pseudonym_key_file)")


def _fail(command: str, message: str, status: int = 1) -> int:
    print(f"gateway audit {command}: {message}", file=sys.stderr)
    return status


@contextmanager
def progress(what: str) -> Iterator[None]:
    """On a terminal, after a second: a line saying the command is still at work."""
    done = threading.Event()

    def show() -> None:
        started = time.monotonic()
        while not done.wait(1.0):
            print(f"\r{what}... {time.monotonic() - started:.0f} s", end="", file=sys.stderr, flush=True)

    thread = threading.Thread(target=show, daemon=True) if sys.stderr.isatty() else None
    if thread is not None:
        thread.start()
    try:
        yield
    finally:
        done.set()
        if thread is not None:
            thread.join(timeout=2)
            print("\r" + " " * 40 + "\r", end="", file=sys.stderr, flush=True)


def _settings(args: argparse.Namespace) -> tuple[str, Callable[[str], str] | None, AuditFilter]:
    """(store path, the pseudonym function or None without a key file, the window)."""
    from gateway import cliconfig
    from gateway.audit.pseudonyms import PseudonymKeyError, key_path, load_or_create_key, pseudonymiser
    from gateway.audit.settings import AuditSettings

    audit = cliconfig.section_or_exit(AuditSettings, args.config)  # a refused value: one line, exit 2
    path = args.path or audit.path
    now = time.time()
    try:
        flt = AuditFilter(since_us=parse_time(args.since, now) if args.since else None,
                          until_us=parse_time(args.until, now) if args.until else None, limit=10**9)  # fmt: skip
    except QueryError as exc:
        raise ValueError(str(exc)) from None
    pseudonym = None
    key_file = key_path(path, audit.pseudonym_key_file)
    if key_file.exists():  # never created by a reader: no key, no address lookups
        try:
            pseudonym = pseudonymiser(load_or_create_key(key_file))
        except PseudonymKeyError as exc:
            raise ValueError(str(exc)) from None
    return path, pseudonym, flt


def _open(args: argparse.Namespace, command: str) -> tuple[Any, Any, Callable[[str], str] | None, AuditFilter]:
    path, pseudonym, flt = _settings(args)
    return connect_reader(path), path, pseudonym, flt


def run_subject(args: argparse.Namespace) -> int:
    from gateway.audit.reports import render_subject_html

    if args.engine == "clickhouse":
        from gateway.audit.clickhouse import clickhouse_subject
        from gateway.audit.subjects import initial_keys

        if args.format == "html":
            return _fail("subject", "--format html needs the SQLite engine (ClickHouse prints SQL)", 2)
        try:
            _, pseudonym, flt = _settings(args)
            print(clickhouse_subject(initial_keys(args.subject, pseudonym), flt, table=args.table,
                                     fmt=args.format))  # fmt: skip
        except (ValueError, QueryError) as exc:
            return _fail("subject", str(exc), 2)
        return 0
    try:
        conn, _, pseudonym, flt = _open(args, "subject")
    except (StoreError, OSError, ValueError) as exc:
        return _fail("subject", str(exc))
    try:
        with progress("looking up the subject's decisions"):
            report = subject_report(conn, args.subject, pseudonym, flt.since_us, flt.until_us)
    except ValueError as exc:
        return _fail("subject", str(exc), 2)
    finally:
        conn.close()
    if args.format == "html":
        print(render_subject_html(report, args.since, args.until))
    else:
        print(render(report.records, args.format, list(SUBJECT_FIELDS)))
    return 0


def run_report(args: argparse.Namespace) -> int:
    from gateway.audit.reports import SENSITIVE, ReportUnavailable, decision_report

    if args.engine == "clickhouse":
        from gateway.audit.clickhouse import clickhouse_report

        try:
            _, _, flt = _settings(args)
            print(clickhouse_report(flt, SENSITIVE, table=args.table))
        except (ValueError, QueryError) as exc:
            return _fail("report", str(exc), 2)
        return 0
    if not args.out:
        return _fail("report", "--out FILE.html is required", 2)
    try:
        conn, path, _, flt = _open(args, "report")
    except (StoreError, OSError, ValueError) as exc:
        return _fail("report", str(exc))
    try:
        with progress("building the report"):
            html = decision_report(conn, flt, str(path))
    except ReportUnavailable as exc:
        return _fail("report", str(exc))
    finally:
        conn.close()
    out = Path(args.out)
    try:
        out.write_text(html, encoding="utf-8")
    except OSError as exc:
        return _fail("report", f"cannot write {out}: {exc.strerror}")
    print(f"wrote {out} ({len(html.encode()) // 1024} KiB)")
    return 0
