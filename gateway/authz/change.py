"""Policy change safety: ``gateway policy replay`` and ``gateway policy diff``.

``gateway policy replay CANDIDATE_DIR [--since T] [--until T] [--path AUDIT] [--config FILE]
[--route-map FILE] [--format table|json] [--fail-on-change]`` decides every recorded request of the
audit store again under a candidate policy set (loaded and validated against its own schema first)
and prints each decision whose outcome would change: allowed <-> refused, or the same answer with
other fields masked or other list items withheld. A change of determining policy alone (another
permit allows it) is not a change of outcome. The last line is ``N replayed, M changed (A
allow->deny, D deny->allow, K mask changes)``; the line before it counts what was not replayed:
requests refused before the policies decided (401, 400, 413, unmapped routes, facts that could not be
had) and records written before the store kept decisions' inputs. Exit 0, or 3 with
``--fail-on-change`` when anything changed; 1 when the candidate or the store cannot be read.

It reads the store through a read-only connection (WAL: the gateway keeps writing meanwhile), in id
order, a batch at a time; decisions are cached by the candidate engine as live, so a million records
of ordinary traffic replay in seconds to minutes (``load/README.md``). On a terminal it shows its
progress on stderr.

``gateway policy diff OLD_DIR NEW_DIR`` lists the policies added, removed and changed between two
sets, by ``@id``, with their ``@source`` and ``@clause`` and, for a changed one, the difference of its
text: what a reviewer reads in a pull request, next to the replay's evidence.
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.authz.cedarsource import schema_shape, split_statements
from gateway.authz.engine import SCHEMA_FILE, PolicyEngine
from gateway.authz.errors import PolicyError
from gateway.authz.policyset import LoadedPolicies, Policy, load_policies
from gateway.authz.replay import Change, compare, decode, replay

EXIT_CHANGED = 3
BATCH = 2000


# --- replay --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class ReplayReport:
    replayed: int = 0
    not_replayable: int = 0  # refused before the policies decided, or written without inputs
    unreadable: int = 0  # inputs of an unknown format
    partial: int = 0  # the candidate reads record facts the enforced set never read for the request
    allow_to_deny: int = 0
    deny_to_allow: int = 0
    mask_changes: int = 0
    changes: list[dict[str, Any]] = field(default_factory=list)

    @property
    def changed(self) -> int:
        return self.allow_to_deny + self.deny_to_allow + self.mask_changes

    def summary(self) -> str:
        return (
            f"{self.replayed} replayed, {self.changed} changed ({self.allow_to_deny} allow->deny, "
            f"{self.deny_to_allow} deny->allow, {self.mask_changes} mask changes)"
        )

    def apart(self) -> str:
        parts = [f"{self.not_replayable} not replayed (refused before a policy decision, or recorded without inputs)"]
        if self.unreadable:
            parts.append(f"{self.unreadable} with inputs of an unknown format")
        if self.partial:
            parts.append(
                f"{self.partial} replayed without record facts the candidate reads and the enforced set did not"
            )
        return "; ".join(parts)


def _rows(conn: Any, since_us: int | None, until_us: int | None) -> Iterator[Any]:
    from gateway.audit.query import has_column, window_clauses

    clauses, params = window_clauses(since_us, until_us)
    where = (" AND " + " AND ".join(clauses)) if clauses else ""
    inputs = "inputs" if has_column(conn, "inputs") else "'' AS inputs"
    last = 0
    while True:
        batch = conn.execute(
            f"SELECT id, decision_id, time_us, principal_id, route, purpose, {inputs} FROM decisions "
            f"WHERE id > :last{where} ORDER BY id LIMIT {BATCH}",
            {"last": last, **params},
        ).fetchall()
        if not batch:
            return
        yield from batch
        last = batch[-1]["id"]


def change_row(row: Any, change: Change) -> dict[str, Any]:
    from gateway.audit.query import rfc3339

    old, new = change.old, change.new
    return {
        "decision_id": row["decision_id"],
        "time": rfc3339(row["time_us"]),
        "principal": row["principal_id"],
        "route": row["route"],
        "purpose": row["purpose"],
        "change": change.kind,
        "old": "allow" if old.allowed else "deny",
        "new": "allow" if new.allowed else "deny",
        "old_policies": list(old.policies),
        "new_policies": list(new.policies),
        "masks_appearing": list(change.masks_appearing),
        "masks_disappearing": list(change.masks_disappearing),
    }


def replay_store(
    engine: PolicyEngine, conn: Any, since_us: int | None = None, until_us: int | None = None,
    progress: Any = None,
) -> ReplayReport:  # fmt: skip
    """Replay every record of ``conn`` in the window under ``engine``."""
    report = ReplayReport()
    last_shown = time.monotonic()
    for count, row in enumerate(_rows(conn, since_us, until_us), 1):
        text = row["inputs"]
        if not text:
            report.not_replayable += 1
            continue
        try:
            recorded = decode(text)
        except (ValueError, KeyError, TypeError):
            report.unreadable += 1
            continue
        again = replay(engine, recorded)
        report.replayed += 1
        report.partial += again.partial
        change = compare(recorded.outcome, again.outcome)
        if change is not None:
            if change.kind == "allow->deny":
                report.allow_to_deny += 1
            elif change.kind == "deny->allow":
                report.deny_to_allow += 1
            else:
                report.mask_changes += 1
            report.changes.append(change_row(row, change))
        if progress is not None and time.monotonic() - last_shown >= 1.0:
            last_shown = time.monotonic()
            progress(count, report)
    return report


def _table(changes: Sequence[dict[str, Any]]) -> str:
    lines = []
    for c in changes:
        what = f"{c['old']} -> {c['new']}"
        if c["change"] == "masks":
            shown = ", ".join(c["masks_appearing"]) or "-"
            hidden = ", ".join(c["masks_disappearing"]) or "-"
            what += f"  shown now: {shown}  hidden now: {hidden}"
        lines.append(
            f"{c['decision_id']}  {c['time']}  {c['principal']}  {c['route']}  {c['purpose']}  {what}\n"
            f"    old: {', '.join(c['old_policies']) or '-'}\n    new: {', '.join(c['new_policies']) or '-'}"
        )
    return "\n".join(lines)


def run_replay(args: argparse.Namespace) -> int:
    from gateway import cliconfig
    from gateway.audit.query import QueryError, parse_time
    from gateway.audit.schema import StoreError, connect_reader

    config = cliconfig.load_or_exit(args.config)  # a refused value: one line, exit 2
    route_maps = tuple(args.route_maps or config.policies.route_maps)
    try:
        candidate = PolicyEngine.load(args.candidate, route_maps)
    except PolicyError as exc:
        for line in exc.diagnostics:
            print(line, file=sys.stderr)
        print(f"gateway policy replay: the candidate set {args.candidate} does not load", file=sys.stderr)
        return 1
    now = time.time()
    try:
        since = parse_time(args.since, now) if args.since else None
        until = parse_time(args.until, now) if args.until else None
    except QueryError as exc:
        print(f"gateway policy replay: {exc}", file=sys.stderr)
        return 1
    path = args.path or config.audit.path
    try:
        conn = connect_reader(path)
    except (StoreError, OSError) as exc:
        print(f"gateway policy replay: {exc}", file=sys.stderr)
        return 1

    def progress(count: int, report: ReplayReport) -> None:
        print(f"\r{count} records read, {report.changed} changed", end="", file=sys.stderr, flush=True)

    try:
        report = replay_store(candidate, conn, since, until, progress if sys.stderr.isatty() else None)
    finally:
        conn.close()
    if sys.stderr.isatty():
        print("\r" + " " * 60 + "\r", end="", file=sys.stderr)
    if args.format == "json":
        print(json.dumps(report.changes, indent=2))
    elif report.changes:
        print(_table(report.changes))
    print(report.apart())
    print(report.summary())
    return EXIT_CHANGED if args.fail_on_change and report.changed else 0


# --- diff ----------------------------------------------------------------------------------------------


def _load(directory: str) -> LoadedPolicies:
    import cedarpy

    path = Path(directory) / SCHEMA_FILE
    try:
        text = path.read_text(encoding="utf-8")
        schema = cedarpy.Schema.from_str(text)
    except (OSError, ValueError) as exc:
        raise PolicyError(f"{path}:1: {exc}") from None
    return load_policies(Path(directory), schema, schema_shape(text))


def policy_text(policy: Policy) -> str:
    """The statement of ``policy`` as written in its file (annotations included)."""
    text = Path(policy.file).read_text(encoding="utf-8")
    for chunk in split_statements(text):
        if chunk.line == policy.line:
            return chunk.text.strip()
    return ""


def _same(a: Policy, b: Policy) -> bool:
    return a.est == b.est and dict(a.annotations) == dict(b.annotations)


def diff_sets(old: LoadedPolicies, new: LoadedPolicies) -> str:
    lines: list[str] = []

    def head(mark: str, policy: Policy) -> None:
        lines.append(f"{mark} {policy.id} ({policy.effect})  {policy.file}:{policy.line}")
        lines.append(f"    source: {policy.source}")
        lines.append(f"    clause: {policy.clause}")

    added = sorted(set(new.by_id) - set(old.by_id))
    removed = sorted(set(old.by_id) - set(new.by_id))
    changed = sorted(i for i in set(old.by_id) & set(new.by_id) if not _same(old.by_id[i], new.by_id[i]))
    for policy_id in added:
        head("+", new.by_id[policy_id])
    for policy_id in removed:
        head("-", old.by_id[policy_id])
    for policy_id in changed:
        before, after = old.by_id[policy_id], new.by_id[policy_id]
        head("~", after)
        text = difflib.unified_diff(
            policy_text(before).splitlines(), policy_text(after).splitlines(),
            f"{before.file}:{before.line}", f"{after.file}:{after.line}", lineterm="", n=2,
        )  # fmt: skip
        lines.extend("    " + line for line in text)
    lines.append(f"{len(added)} added, {len(removed)} removed, {len(changed)} changed")
    return "\n".join(lines)


def run_diff(args: argparse.Namespace) -> int:
    try:
        old, new = _load(args.old), _load(args.new)
    except PolicyError as exc:
        for line in exc.diagnostics:
            print(line, file=sys.stderr)
        return 1
    print(diff_sets(old, new))
    return 0


# --- command line ----------------------------------------------------------------------------------------


def register(policy_subparsers: Any) -> None:
    """Adds ``replay`` and ``diff`` to ``gateway policy`` (called by ``gateway.authz.commands``)."""
    replay_parser = policy_subparsers.add_parser(
        "replay", help="decide the recorded requests again under a candidate policy set; print what changes"
    )
    replay_parser.add_argument("candidate", metavar="CANDIDATE_DIR", help="the candidate policies directory")
    replay_parser.add_argument("--since", metavar="T", help="records from this time (RFC 3339 or an age: 7d)")
    replay_parser.add_argument("--until", metavar="T", help="records before this time")
    replay_parser.add_argument("--path", metavar="AUDIT", help="the audit store (default: audit.path)")
    replay_parser.add_argument("--config", metavar="FILE", help="the configuration (as gateway serve)")
    replay_parser.add_argument("--route-map", action="append", dest="route_maps", metavar="FILE",
                               help="route maps (default: policies.route_maps of the configuration)")
    replay_parser.add_argument("--format", choices=("table", "json"), default="table")
    replay_parser.add_argument("--fail-on-change", action="store_true",
                               help=f"exit {EXIT_CHANGED} when anything changed")
    replay_parser.set_defaults(func=run_replay)

    diff_parser = policy_subparsers.add_parser(
        "diff", help="the policies added, removed and changed between two sets, by @id"
    )
    diff_parser.add_argument("old", metavar="OLD_DIR")
    diff_parser.add_argument("new", metavar="NEW_DIR")
    diff_parser.set_defaults(func=run_diff)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gateway policy")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))
