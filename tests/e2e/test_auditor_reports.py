"""Auditors' answers on a real store with traffic through the gateway (issue 15): a data subject's
access report lists exactly the decisions that touched that subject (contacts, payments, calls, mail)
and none of another's; no e-mail address is stored in clear; the decision report's numbers are the
queries' and it renders in headless Chromium."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.audit.query import AuditFilter, count_decisions
from gateway.audit.reports import report_numbers
from gateway.cli import main as gateway_main
from gateway.demo.fixtures import build_fixtures
from gateway.demo.tenants import CONTOSO_TENANT as A
from tests.support.idp import DevIdP
from tests.support.poll import wait_until
from tests.support.servers import ThreadedServer
from tests.support.stack import Stack, running_gateway

SUPPORT = "essential.service.operations.support"
X, Y = "ct-a-003", "ct-a-008"  # two contacts, each with a payment and a call
MAILBOX = "0b1c2d3e-0000-4000-8000-00000000a11c"
OTHER_MAILBOX = "0b1c2d3e-0000-4000-8000-000000000b0b"


def cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = gateway_main(list(argv))
        except SystemExit as exc:
            status = int(exc.code or 0)
    return status, out.getvalue(), err.getvalue()


def fixture_records(contact: str) -> tuple[dict[str, object], str, str]:
    tenant = build_fixtures()[A]
    record = next(c for c in tenant.contacts if c["id"] == contact)
    payment = next(p["id"] for p in tenant.payments if p["contact_id"] == contact)
    call = next(c["id"] for c in tenant.calls if c["contact_id"] == contact)
    return record, str(payment), str(call)


def traffic(stack: Stack) -> dict[str, list[str]]:
    """Requests through the gateway; the decision ids that touched X, Y and the mailboxes."""
    agent = stack.mint(A, roles=["Support.Agent"])
    billing = stack.mint(A, roles=["Billing.Admin"])
    manager = stack.mint(A, roles=["Marketing.Manager"])
    owner = stack.mint(A, user=MAILBOX)
    other_owner = stack.mint(A, user=OTHER_MAILBOX)
    touched: dict[str, list[str]] = {"X": [], "Y": [], "mail": [], "other-mail": [], "nobody": []}

    def send(who: list[str], method: str, path: str, token: str, purpose: str, **kw: object) -> None:
        reply = stack.http(method, path, token=token, purpose=purpose, **kw)  # type: ignore[arg-type]
        assert reply.status < 500, (path, reply.status, reply.body)
        for name in who:
            touched[name].append(reply.header("X-Decision-Id") or "")

    for contact, name in ((X, "X"), (Y, "Y")):
        record, payment, call = fixture_records(contact)
        send([name], "GET", f"/tenants/{A}/contacts/{contact}", agent, SUPPORT)
        send([name], "GET", f"/tenants/{A}/payments/{payment}", billing, "essential.service.payment_processing")
        send([name], "GET", f"/tenants/{A}/calls/{call}", agent, SUPPORT)
        send([name], "GET", f"/tenants/{A}/calls/{call}/transcript", agent, SUPPORT)
        send([name], "POST", f"/tenants/{A}/surveys/sv-a-001/invitations", manager, "marketing.communications.email",
             headers={"Content-Type": "application/json"}, body=json.dumps({"email": record["email"]}).encode())
    send(["X", "Y"], "GET", f"/tenants/{A}/contacts", agent, SUPPORT)  # the list names both
    send(["mail"], "GET", "/gmail/v1/users/me/messages", owner, "essential.service")
    send(["other-mail"], "GET", "/gmail/v1/users/me/messages", other_owner, "essential.service")
    send(["nobody"], "GET", f"/tenants/{A}/surveys/sv-a-001/results", stack.mint(A, roles=["Analyst"]),
         "analytics.reporting")
    return touched


@pytest.fixture(scope="module")
def store(idp: DevIdP, reference_upstream: ThreadedServer, tmp_path_factory: pytest.TempPathFactory,
          ) -> Iterator[tuple[Path, dict[str, list[str]]]]:  # fmt: skip
    audit = tmp_path_factory.mktemp("reports") / "audit.sqlite"
    with running_gateway(idp, reference_upstream.url, audit) as stack:
        touched = traffic(stack)
        ids = [i for group in touched.values() for i in group]
        marks = ",".join("?" for _ in ids)

        def all_stored() -> bool:
            with contextlib.closing(sqlite3.connect(f"file:{audit}?mode=ro", uri=True)) as conn:
                query = f"SELECT count(*) FROM decisions WHERE decision_id IN ({marks})"
                return bool(conn.execute(query, ids).fetchone()[0] == len(set(ids)))

        wait_until(all_stored, message=f"the {len(set(ids))} decisions of the traffic in the audit store")
    yield audit, touched


def subject_ids(audit: Path, subject: str) -> set[str]:
    status, out, err = cli("audit", "subject", subject, "--path", str(audit), "--format", "json")
    assert status == 0, err
    return {r["decision_id"] for r in json.loads(out)}


def test_a_contacts_report_lists_exactly_the_decisions_that_touched_them(
    store: tuple[Path, dict[str, list[str]]],
) -> None:
    audit, touched = store
    assert subject_ids(audit, X) == set(touched["X"])
    assert subject_ids(audit, Y) == set(touched["Y"])
    assert not set(touched["nobody"]) & (subject_ids(audit, X) | subject_ids(audit, Y))


def test_an_address_finds_the_same_decisions_through_its_contact(store: tuple[Path, dict[str, list[str]]]) -> None:
    audit, touched = store
    record, _, _ = fixture_records(X)
    address = str(record["email"])
    assert subject_ids(audit, address) == set(touched["X"])
    assert subject_ids(audit, address.upper()) == set(touched["X"])  # one canonical form
    status, _, err = cli("audit", "subject", "not an address@", "--path", str(audit))
    assert status == 2 and "not an e-mail address" in err


def test_a_mailbox_owners_report_lists_their_mail_only(store: tuple[Path, dict[str, list[str]]]) -> None:
    audit, touched = store
    assert subject_ids(audit, MAILBOX) == set(touched["mail"])
    assert subject_ids(audit, OTHER_MAILBOX) == set(touched["other-mail"])


def test_no_email_address_is_stored_in_clear(store: tuple[Path, dict[str, list[str]]]) -> None:
    audit, _ = store
    tenant = build_fixtures()[A]
    addresses = {str(c["email"]) for c in tenant.contacts}
    with sqlite3.connect(f"file:{audit}?mode=ro", uri=True) as conn:
        dump = "\n".join(conn.iterdump())
    found = [a for a in addresses if a in dump or a.lower() in dump.lower()]
    assert not found, found


def test_the_subject_letter_is_html_naming_recipients_and_rules(store: tuple[Path, dict[str, list[str]]]) -> None:
    audit, touched = store
    status, out, _ = cli("audit", "subject", X, "--path", str(audit), "--format", "html")
    assert status == 0 and out.lstrip().startswith("<!DOCTYPE html>")
    assert all(f'data-decision-id="{i}"' in out for i in touched["X"])
    assert "support-agent-reads" in out or "Support agents read" in out
    assert "<script" not in out and "http://" not in out.split("</style>", 1)[1].replace('http://www.w3.org', "")


def test_the_decision_report_numbers_are_the_queries(store: tuple[Path, dict[str, list[str]]], tmp_path: Path) -> None:
    audit, _ = store
    out = tmp_path / "report.html"
    status, printed, err = cli("audit", "report", "--path", str(audit), "--out", str(out))
    assert status == 0, err
    assert printed.startswith(f"wrote {out}")
    html = out.read_text()
    assert "<script" not in html and "<link" not in html and "src=" not in html  # self-contained
    assert html.count("<svg") >= 3
    tables = report_numbers(html)
    with sqlite3.connect(f"file:{audit}?mode=ro", uri=True) as conn:
        flt = AuditFilter(limit=10**9)
        per_day = {}
        for row in count_decisions(conn, flt, "decision", "day"):
            per_day.setdefault(row["day"], {})[row["decision"]] = row["count"]
        refused = {r["purpose"]: r["count"]
                   for r in count_decisions(conn, AuditFilter(decision="deny", limit=10**9), "purpose")}  # fmt: skip
        total = conn.execute("SELECT count(*) FROM decisions").fetchone()[0]
    shown_days = {row[0]: (int(row[1]), int(row[2])) for row in tables["per-day"][1:]}
    assert shown_days == {d: (c.get("allow", 0), c.get("deny", 0)) for d, c in per_day.items()}
    assert {row[0]: int(row[1]) for row in tables["refused-purpose"][1:] if row[0] != "none"} == refused
    assert sum(a + d for a, d in shown_days.values()) == total
    assert tables["sequence"][1][-1] == "yes"


def test_the_report_renders_in_headless_chromium(store: tuple[Path, dict[str, list[str]]], tmp_path: Path) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "Debian's chromium is installed by .ci/run (the project's own files)"
    audit, _ = store
    page = tmp_path / "report.html"
    assert cli("audit", "report", "--path", str(audit), "--out", str(page))[0] == 0
    shot = tmp_path / "shot.png"
    profile = tmp_path / "profile"
    subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={profile}", "--window-size=1200,1600", f"--screenshot={shot}", page.as_uri()],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    import matplotlib.image

    pixels = matplotlib.image.imread(str(shot))
    assert pixels.shape[0] >= 1000 and pixels.shape[1] >= 1000
    assert float(pixels[..., :3].std()) > 0.05  # text and plots, not a blank page
    assert float(pixels[..., :3].mean()) < 0.99


# --- the same answers from ClickHouse (the Collector's otel_traces, in chdb) -----------------------------


@pytest.fixture(scope="module")
def clickhouse(store: tuple[Path, dict[str, list[str]]], tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    from chdb import session as chdb_session

    from gateway.audit.schema import record_from_row
    from tests.audit.test_audit_clickhouse import OTEL_TRACES_DDL, exporter_rows

    audit, _ = store
    with sqlite3.connect(f"file:{audit}?mode=ro", uri=True) as conn:
        conn.row_factory = sqlite3.Row
        records = [record_from_row(row) for row in conn.execute("SELECT * FROM decisions ORDER BY id")]
    rows = exporter_rows(records)
    rows.extend(rows[:5])  # delivered twice: the queries count each span once
    db = chdb_session.Session(str(tmp_path_factory.mktemp("chdb")))
    db.query(OTEL_TRACES_DDL)
    db.query("INSERT INTO otel_traces FORMAT JSONEachRow\n" + "\n".join(json.dumps(r) for r in rows))
    try:
        yield db
    finally:
        db.close()


def chdb_rows(db: object, sql: str) -> list[dict[str, object]]:
    text = str(db.query(sql))  # type: ignore[attr-defined]
    return json.loads(text) if text.strip().startswith("[") else [json.loads(x) for x in text.splitlines() if x]


def test_the_subject_query_gives_the_same_decisions_in_clickhouse(
    store: tuple[Path, dict[str, list[str]]], clickhouse: object
) -> None:
    audit, _ = store
    for subject in (X, Y, MAILBOX):
        status, sql, err = cli("audit", "subject", subject, "--path", str(audit), "--engine", "clickhouse",
                               "--format", "json")
        assert status == 0, err
        status, out, _ = cli("audit", "subject", subject, "--path", str(audit), "--format", "json")
        expected = json.loads(out)
        got = chdb_rows(clickhouse, sql)
        assert [r["decision_id"] for r in got] == [r["decision_id"] for r in expected], subject
        for g, e in zip(got, expected, strict=True):
            assert g == e, {k: (g.get(k), e.get(k)) for k in set(g) | set(e) if g.get(k) != e.get(k)}


def test_the_report_numbers_are_the_same_in_clickhouse(
    store: tuple[Path, dict[str, list[str]]], clickhouse: object
) -> None:
    audit, _ = store
    status, script, err = cli("audit", "report", "--path", str(audit), "--engine", "clickhouse")
    assert status == 0, err
    statements = [s.strip() for s in script.split(";\n\n")]
    per_day = chdb_rows(clickhouse, statements[0].rstrip(";"))
    with sqlite3.connect(f"file:{audit}?mode=ro", uri=True) as conn:
        assert per_day == count_decisions(conn, AuditFilter(limit=10**9), "decision", "day")
        by_purpose = chdb_rows(clickhouse, statements[2].rstrip(";"))
        assert by_purpose == count_decisions(conn, AuditFilter(decision="deny", limit=10**9), "purpose")
    sets = chdb_rows(clickhouse, statements[-1].rstrip(";"))
    assert len(sets) == 1 and sets[0]["decisions"] > 0
