"""How long ``gateway policy replay`` takes on a large store: ``python -m load.measure.replay_scale``.

Builds a store of N records (default 1,000,000) whose inputs are those of real decisions of the
shipped packs (every policy case of ``policies/packs/*/tests`` with a route, decided, captured and
encoded as the audit writer does), cycled with increasing times, then runs ``gateway policy replay``
on it as a separate process against a candidate that adds one forbid (support agents no longer read
payments), and prints the wall time, the rate, and the command's last lines. Temporary files only.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gateway.audit.ids import uuid7
from gateway.audit.pseudonyms import pseudonymiser
from gateway.audit.record import DecisionRecord
from gateway.audit.schema import INSERT_DECISION, connect_writer, record_row
from gateway.authz.cases import evaluate_case_review
from gateway.authz.engine import PolicyEngine
from gateway.authz.policytest import discover, load_fixtures, load_suite
from gateway.authz.replay import capture, encode

ROOT = Path(__file__).resolve().parents[2]
POLICIES = ROOT / "policies"
ROUTE_MAPS = (ROOT / "gateway" / "adapters" / "reference.toml", ROOT / "gateway" / "adapters" / "gmail.toml")
CANDIDATE_POLICY = """
@id("candidate-no-payments-for-support")
@source("candidate, replay benchmark")
@clause("Support no longer reads payments.")
forbid (principal in EmployeeRole::"Support.Agent", action in Action::"view", resource is Payment)
when { context.purpose in Purpose::"essential.service.operations.support" };
"""


def templates(engine: PolicyEngine) -> list[tuple[DecisionRecord, str]]:
    """(record fields, inputs) of every shipped case that the policies decided on a mapped route."""
    fixture_files, suites = discover(POLICIES)
    fixtures = load_fixtures(fixture_files)
    pseudonym = pseudonymiser(b"replay benchmark key, 32 bytes..")
    out = []
    for path in suites:
        for suite_case in load_suite(path, engine, fixtures):
            decision, reviewed = evaluate_case_review(engine, suite_case.case)
            item = capture(decision, reviewed)
            if item is None or engine.routes.by_id.get(item.facts.route.id) != item.facts.route:
                continue
            final = reviewed.refusal if reviewed is not None and reviewed.refusal is not None else decision
            principal = item.facts.principal
            record = DecisionRecord(
                decision_id="", time=0.0, method="GET", path="/", route=final.route,
                tenant=principal.tenant, principal_kind=principal.kind, principal_id=principal.id,
                roles=principal.roles, action=final.action, resource_type=final.resource_type,
                resource_id=final.resource_id, categories=final.categories, purpose=final.purpose,
                decision="allow" if final.allowed else "deny", reason=final.reason, policies=final.policy_ids,
                status=200 if final.allowed else final.status, gateway_id="replay-bench",
            )  # fmt: skip
            out.append((record, encode(item, pseudonym)))
    return out


def build_store(path: Path, count: int, shapes: list[tuple[DecisionRecord, str]]) -> float:
    started = time.perf_counter()
    conn = connect_writer(str(path), durable=False, busy_timeout=5.0)
    try:
        conn.execute("PRAGMA synchronous = OFF")
        t0 = time.time() - count * 0.001
        batch: list[tuple[object, ...]] = []
        conn.execute("BEGIN")
        for i in range(count):
            base, inputs = shapes[i % len(shapes)]
            base.decision_id, base.time, base.sequence, base.inputs = uuid7(), t0 + i * 0.001, i + 1, inputs
            batch.append((i + 1, *record_row(base)))
            if len(batch) >= 20000:
                conn.executemany(INSERT_DECISION, batch)
                batch.clear()
        if batch:
            conn.executemany(INSERT_DECISION, batch)
        conn.execute("COMMIT")
    finally:
        conn.close()
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    engine = PolicyEngine.load(POLICIES, ROUTE_MAPS)
    shapes = templates(engine)
    work = Path(tempfile.mkdtemp(prefix="replay-scale-"))
    try:
        store = work / "audit.sqlite"
        built = build_store(store, args.records, shapes)
        print(f"store: {args.records} records from {len(shapes)} distinct decisions, built in {built:.1f} s "
              f"({store.stat().st_size / 1e6:.0f} MB)")  # fmt: skip
        candidate = work / "candidate"
        shutil.copytree(POLICIES, candidate)
        (candidate / "candidate.cedar").write_text(CANDIDATE_POLICY)
        command = [sys.executable, "-m", "gateway.cli", "policy", "replay", str(candidate), "--path", str(store)]
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, timeout=1800, check=False)
        wall = time.perf_counter() - started
        tail = done.stdout.strip().splitlines()[-2:]
        print(f"replay: {wall:.1f} s wall, {args.records / wall:,.0f} records/s, exit {done.returncode}")
        print("\n".join(tail))
        return 0 if done.returncode == 0 else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
