"""Auditors' documents: a data subject's access report (HTML letter) and the decision report.

Both are rendered with Jinja2 templates (``templates/``, autoescaped), never by string concatenation.
The decision report is one self-contained HTML file: its plots are matplotlib SVG inline (text as
paths, no fonts, scripts, styles or images fetched when it is opened), each followed by the table of
its numbers, so a reader (or a test) can check every plot against the store.

What the decision report shows, for a window: decisions per day by outcome; refusals by data category
and by purpose; the principals given the most sensitive categories; masked fields per day; the policy
sets in force over time (by hash); and the sequence-gap check (``maintenance.verify``). Every number
comes from the same queries as ``gateway audit query --count-by`` (``query.count_decisions``) or from
one documented SQL aggregate. matplotlib is an optional dependency (the ``report`` extra): without it
the report says so in one line instead of failing with a traceback.
"""

from __future__ import annotations

import io
import json
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape

from gateway.audit.maintenance import verify
from gateway.audit.query import BUCKETS, AuditFilter, bucket_label, count_decisions, rfc3339, window_clauses
from gateway.audit.subjects import SubjectReport

TEMPLATES = Path(__file__).resolve().parent / "templates"
#: Data categories whose readers the report lists (and their descendants).
SENSITIVE = (
    "user.financial", "user.content", "user.biometric", "user.health_and_medical", "user.government_id",
    "user.childrens",
)  # fmt: skip
TOP = 10


class ReportUnavailable(Exception):
    """A dependency of the report is missing (matplotlib): the message says what to install."""


def _environment() -> Environment:
    return Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]))


def render_subject_html(report: SubjectReport, since: str | None, until: str | None) -> str:
    template = _environment().get_template("subject.html")
    allowed = sum(1 for r in report.records if r["decision"] == "allow")
    purposes = sorted({r["purpose"] for r in report.records if r["purpose"]})
    return template.render(
        report=report, allowed=allowed, denied=len(report.records) - allowed, purposes=purposes,
        since=since, until=until, generated=rfc3339(int(time.time() * 1_000_000)),
    )  # fmt: skip


# --- the decision report ----------------------------------------------------------------------------


@dataclass
class Section:
    id: str
    title: str
    note: str
    columns: list[str]
    rows: list[dict[str, Any]]
    svg: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def _window(flt: AuditFilter) -> tuple[str, dict[str, Any]]:
    clauses, params = window_clauses(flt.since_us, flt.until_us)
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


def decisions_per_day(conn: sqlite3.Connection, flt: AuditFilter) -> list[dict[str, Any]]:
    rows = count_decisions(conn, flt, "decision", "day")
    by_day: dict[str, dict[str, Any]] = {}
    for row in rows:
        entry = by_day.setdefault(row["day"], {"day": row["day"], "allow": 0, "deny": 0})
        entry[row["decision"]] = entry.get(row["decision"], 0) + row["count"]
    return [by_day[d] for d in sorted(by_day)]


def refusals_by(conn: sqlite3.Connection, flt: AuditFilter, by: str) -> list[dict[str, Any]]:
    denied = AuditFilter(since_us=flt.since_us, until_us=flt.until_us, decision="deny", limit=flt.limit)
    rows = count_decisions(conn, denied, by)
    return sorted(rows, key=lambda r: (-r["count"], str(r[by])))


def sensitive_readers(conn: sqlite3.Connection, flt: AuditFilter) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for category in SENSITIVE:
        allowed = AuditFilter(since_us=flt.since_us, until_us=flt.until_us, decision="allow", category=category,
                              limit=flt.limit)  # fmt: skip
        rows = sorted(count_decisions(conn, allowed, "principal"), key=lambda r: (-r["count"], r["principal"]))
        out.extend({"category": category, "principal": r["principal"], "count": r["count"]} for r in rows[:TOP])
    return out


def masked_per_day(conn: sqlite3.Connection, flt: AuditFilter) -> list[dict[str, Any]]:
    where, params = _window(flt)
    where = (where + " AND " if where else " WHERE ") + "masked_fields != '[]'"
    day = BUCKETS["day"]
    sql = (f"SELECT time_us / {day} AS bucket, SUM(json_array_length(masked_fields)), COUNT(*) "
           f"FROM decisions{where} GROUP BY bucket ORDER BY bucket")  # fmt: skip
    return [
        {"day": bucket_label(int(bucket), "day"), "masked fields": int(fields), "decisions": int(count)}
        for bucket, fields, count in conn.execute(sql, params)
    ]


def policy_sets(conn: sqlite3.Connection, flt: AuditFilter) -> list[dict[str, Any]]:
    where, params = _window(flt)
    where = (where + " AND " if where else " WHERE ") + "policy_hash != ''"
    sql = (f"SELECT policy_hash, MIN(time_us), MAX(time_us), COUNT(*) FROM decisions{where} "
           "GROUP BY policy_hash ORDER BY MIN(time_us)")  # fmt: skip
    return [
        {"policy set": h, "first": rfc3339(first), "last": rfc3339(last), "decisions": int(n)}
        for h, first, last, n in conn.execute(sql, params)
    ]


def _svg(figure: Any) -> str:
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight")
    text = buffer.getvalue()
    start = text.find("<svg")
    return text[start:] if start >= 0 else text


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ReportUnavailable(
            "the decision report draws its plots with matplotlib: pip install 'privacy-gateway[report]'"
        ) from None
    plt.rcParams["svg.fonttype"] = "path"  # glyphs as paths: the file needs no font
    return plt


def _bars(plt: Any, labels: Sequence[str], series: dict[str, Sequence[float]], title: str, horizontal: bool) -> str:
    height = max(2.5, 0.28 * len(labels) + 1.2) if horizontal else 3.2
    figure, axes = plt.subplots(figsize=(9, height))
    positions = list(range(len(labels)))
    base = [0.0] * len(labels)
    colours = {"allow": "#3a7d44", "deny": "#b23a3a"}
    for name, values in series.items():
        colour = colours.get(name, "#4a6fa5")
        if horizontal:
            axes.barh(positions, values, left=base, label=name, color=colour)
        else:
            axes.bar(positions, values, bottom=base, label=name, color=colour)
        base = [b + v for b, v in zip(base, values, strict=True)]
    if horizontal:
        axes.set_yticks(positions, labels)
        axes.invert_yaxis()
    else:
        step = max(1, len(labels) // 12)
        axes.set_xticks(positions[::step], [labels[i] for i in positions[::step]], rotation=30, ha="right")
    axes.set_title(title)
    if len(series) > 1:
        axes.legend()
    svg = _svg(figure)
    plt.close(figure)
    return svg


def decision_report(conn: sqlite3.Connection, flt: AuditFilter, store: str) -> str:
    """The whole HTML report of the window ``flt`` selects."""
    plt = _pyplot()
    per_day = decisions_per_day(conn, flt)
    by_category = refusals_by(conn, flt, "category")
    by_purpose = refusals_by(conn, flt, "purpose")
    readers = sensitive_readers(conn, flt)
    masked = masked_per_day(conn, flt)
    sets = policy_sets(conn, flt)
    days = [r["day"] for r in per_day]
    sections = [
        Section("per-day", "Decisions per day, by outcome",
                "Every request gets one decision: allowed (the upstream answered) or refused (400, 401, 403, 5xx).",
                ["day", "allow", "deny"], per_day,
                _bars(plt, days, {"allow": [r["allow"] for r in per_day], "deny": [r["deny"] for r in per_day]},
                      "decisions per day", False) if per_day else ""),
        Section("refused-category", "Refusals by data category",
                "A refusal counts once under each data category its route touches.",
                ["category", "count"], by_category,
                _bars(plt, [r["category"] for r in by_category[:25]], {"deny": [r["count"] for r in by_category[:25]]},
                      "refusals by data category", True) if by_category else ""),
        Section("refused-purpose", "Refusals by declared purpose", "The purpose the caller declared (X-Purpose).",
                ["purpose", "count"], by_purpose,
                _bars(plt, [r["purpose"] for r in by_purpose[:25]], {"deny": [r["count"] for r in by_purpose[:25]]},
                      "refusals by purpose", True) if by_purpose else ""),
        Section("sensitive-readers", "Who was given the most sensitive categories",
                f"Allowed decisions touching {', '.join(SENSITIVE)} (or a category below one), the top {TOP} "
                "principals of each.",
                ["category", "principal", "count"], readers,
                _bars(plt, [f"{r['category']}: {r['principal'][:18]}" for r in readers],
                      {"allow": [r["count"] for r in readers]}, "allowed decisions on sensitive categories", True)
                if readers else ""),
        Section("masked", "Masked fields per day",
                "Fields hidden from the caller (X-Redacted-Fields), and the decisions that hid any.",
                ["day", "masked fields", "decisions"], masked,
                _bars(plt, [r["day"] for r in masked], {"masked fields": [r["masked fields"] for r in masked]},
                      "masked fields per day", False) if masked else ""),
        Section("policy-sets", "Policy sets in force",
                "Each policy set (schema, policies, taxonomy, manifests and route maps) by its hash, with the "
                "first and last decision it made.",
                ["policy set", "first", "last", "decisions"], sets),
    ]  # fmt: skip
    checked = verify(conn)
    allowed = sum(r["allow"] for r in per_day)
    denied = sum(r["deny"] for r in per_day)
    since = rfc3339(flt.since_us) if flt.since_us is not None else "the first record"
    until = rfc3339(flt.until_us) if flt.until_us is not None else "now"
    return _environment().get_template("report.html").render(
        window=f"{since} to {until}", total=allowed + denied, allowed=allowed, denied=denied, store=store,
        generated=rfc3339(int(time.time() * 1_000_000)), sections=sections,
        verify_ok=checked.ok, gateways=[g.as_dict() for g in checked.gateways],
    )  # fmt: skip


def report_numbers(html: str) -> dict[str, list[list[str]]]:
    """The tables of a rendered report by section id (for checking plots against the queries)."""
    from html.parser import HTMLParser

    tables: dict[str, list[list[str]]] = {}

    class Parser(HTMLParser):
        section: str | None = None
        row: list[str] | None = None
        cell: list[str] | None = None

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            if tag == "table":
                self.section = dict(attrs).get("data-section")
                if self.section:
                    tables[self.section] = []
            elif tag == "tr" and self.section:
                self.row = []
            elif tag in ("td", "th") and self.row is not None:
                self.cell = []

        def handle_endtag(self, tag: str) -> None:
            if tag in ("td", "th") and self.cell is not None and self.row is not None:
                self.row.append("".join(self.cell).strip())
                self.cell = None
            elif tag == "tr" and self.row is not None and self.section:
                tables[self.section].append(self.row)
                self.row = None
            elif tag == "table":
                self.section = None

        def handle_data(self, data: str) -> None:
            if self.cell is not None:
                self.cell.append(data)

    Parser().feed(html)
    return tables


def as_json(report: SubjectReport) -> str:
    return json.dumps(report.records, indent=2, ensure_ascii=False)
