"""Fixture facts the policies and the other test areas rely on, and their determinism."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.authz.recordfacts import parse_time, record_facts
from gateway.demo import fixtures
from gateway.demo.fixtures import (
    FIXTURE_EPOCH,
    OPTOUT_EMAIL,
    TEST_CARD_NUMBERS,
    TenantFixtures,
    build_fixtures,
    build_tenant,
    load_fixtures,
    luhn_valid,
    mailbox,
    parse_rfc3339,
    wav_bytes,
)
from gateway.demo.tenants import CONTOSO_TENANT, FABRIKAM_TENANT, TENANTS
from gateway.demo.upstream import ConsentStore

ROOT = Path(__file__).resolve().parents[2]
RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")
#: Any instant will do: the fixtures are ages before it. This one only makes digests comparable.
REFERENCE = datetime(2031, 5, 17, 8, 30, tzinfo=UTC)
#: Fixture clocks of the tests: now, a year ahead, ten years ahead.
CLOCKS = (FIXTURE_EPOCH, FIXTURE_EPOCH + timedelta(days=366), FIXTURE_EPOCH + timedelta(days=3653))


def as_json(value: object) -> str:
    return json.dumps(value, sort_keys=True, default=lambda b: base64.b64encode(b).decode())


def fixture_digest() -> str:
    state = {tenant: dataclasses.asdict(build_tenant(tenant, REFERENCE)) for tenant in TENANTS}
    state["mail"] = {tenant: list(mailbox(tenant, "me-" + tenant, REFERENCE)) for tenant in TENANTS}
    return hashlib.sha256(as_json(state).encode()).hexdigest()


def test_two_builds_are_identical() -> None:
    for tenant in TENANTS:
        first, second = build_tenant(tenant), build_tenant(tenant)
        assert first is not second and first == second
        assert build_tenant(tenant, REFERENCE) == build_tenant(tenant, REFERENCE)
    assert mailbox(CONTOSO_TENANT, "u1") == mailbox(CONTOSO_TENANT, "u1")


def test_the_clock_must_be_timezone_aware() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        build_fixtures(datetime(2030, 1, 1))


def test_fixtures_do_not_depend_on_hash_seed_or_process() -> None:
    script = "from tests.demo.test_fixtures import fixture_digest; print(fixture_digest())"
    digests = {fixture_digest()}
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        result = subprocess.run(
            [sys.executable, "-c", script],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        digests.add(result.stdout.strip())
    assert len(digests) == 1


def test_tenants_differ() -> None:
    a, b = load_fixtures()[CONTOSO_TENANT], load_fixtures()[FABRIKAM_TENANT]
    assert {c["email"] for c in a.contacts} & {c["email"] for c in b.contacts} == {OPTOUT_EMAIL}
    assert {p["id"] for p in a.payments}.isdisjoint(p["id"] for p in b.payments)
    assert a.settings["call_recording_enabled"] and not b.settings["call_recording_enabled"]
    assert b.recordings == {} and b.transcripts == {}


def test_luhn() -> None:
    assert all(luhn_valid(n) and len(n) == 16 for n in TEST_CARD_NUMBERS)
    assert not luhn_valid("4111111111111112")
    assert not luhn_valid("4111-1111-1111-1111")


def all_timestamps(data: dict[str, TenantFixtures]) -> Iterator[str]:
    for tenant in data.values():
        yield from (c["created_at"] for c in tenant.contacts)
        yield from (p["created_at"] for p in tenant.payments)
        yield from (c["started_at"] for c in tenant.calls)
        yield from (s["created_at"] for s in tenant.surveys)
        yield from (e["timestamp"] for e in tenant.events)
        for responses in tenant.responses.values():
            yield from (r["submitted_at"] for r in responses)


def test_timestamps_are_rfc3339_instants_before_the_fixture_clock() -> None:
    for now in CLOCKS:
        stamps = list(all_timestamps(build_fixtures(now)))
        assert stamps and all(RFC3339.fullmatch(s) for s in stamps)
        assert all(parse_rfc3339(s) <= now - timedelta(minutes=30) for s in stamps)
    assert datetime.now(UTC) >= FIXTURE_EPOCH and build_fixtures() == load_fixtures(FIXTURE_EPOCH)


def test_builds_at_different_instants_differ_only_in_their_timestamps() -> None:
    """Ids and contents do not depend on the clock; every timestamp moves with it, ages stay."""
    shift = timedelta(days=365 * 7 + 11, hours=5, seconds=17)
    first, second = build_fixtures(REFERENCE), build_fixtures(REFERENCE + shift)
    time_keys = {"created_at", "started_at", "submitted_at", "timestamp", "expiry"}

    def without_time(value: object) -> object:
        if isinstance(value, dict):
            return {k: without_time(v) for k, v in value.items() if k not in time_keys}
        if isinstance(value, list | tuple):
            return [without_time(v) for v in value]
        return value

    for tenant in TENANTS:
        a, b = dataclasses.asdict(first[tenant]), dataclasses.asdict(second[tenant])
        assert without_time(a) == without_time(b)
        moved = zip(all_timestamps({tenant: first[tenant]}), all_timestamps({tenant: second[tenant]}), strict=True)
        assert all(parse_rfc3339(y) - parse_rfc3339(x) == shift for x, y in moved)
        one, other = mailbox(tenant, "u1", REFERENCE), mailbox(tenant, "u1", REFERENCE + shift)
        assert [m["id"] for m in one] == [m["id"] for m in other]
        assert [m["payload"]["body"] for m in one] == [m["payload"]["body"] for m in other]
        assert all(int(y["internalDate"]) - int(x["internalDate"]) == shift.total_seconds() * 1000
                   for x, y in zip(one, other, strict=True))  # fmt: skip


# --- retention classes ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Stamped:
    kind: str  # the tenant settings' retention_days key of the record
    id: str
    time: str | int  # RFC 3339, or epoch seconds (Gmail's internalDate)


def stamped_records(data: dict[str, TenantFixtures], now: datetime) -> Iterator[tuple[str, Stamped]]:
    """Every record that carries a time, with the time its route map reads its age from."""
    for tenant_id, tenant in data.items():
        yield from ((tenant_id, Stamped("contacts", c["id"], c["created_at"])) for c in tenant.contacts)
        yield from ((tenant_id, Stamped("payments", p["id"], p["created_at"])) for p in tenant.payments)
        for call in tenant.calls:
            yield tenant_id, Stamped("calls", call["id"], call["created_at"])
            if call["has_recording"]:  # a recording's and a transcript's age is their call's
                yield tenant_id, Stamped("recordings", call["id"], call["created_at"])
                yield tenant_id, Stamped("transcripts", call["id"], call["created_at"])
        for responses in tenant.responses.values():
            for response in responses:
                yield tenant_id, Stamped("survey_responses", response["id"], response["submitted_at"])
        yield from ((tenant_id, Stamped("analytics_events", e["id"], e["timestamp"])) for e in tenant.events)
        for user in ("me-1", "0b1c2d3e-0000-4000-8000-00000000a11c"):
            for message in mailbox(tenant_id, user, now):
                yield tenant_id, Stamped("messages", message["id"], int(message["internalDate"]) // 1000)


def age_days(record: Stamped, at: datetime) -> int:
    """The record's age in whole days at ``at``, as the gateway computes it for ``context.record``."""
    ((_, days),) = record_facts((("age_days", "age", parse_time(record.time)),), at.timestamp())
    assert isinstance(days, int)
    return days


def shipped_limits() -> set[int]:
    """Every retention limit in days: the policies' ``age_days >= N``, the manifests' ``retention_days``,
    and what the fixture tenants configured."""
    limits = set()
    for cedar in (ROOT / "policies").rglob("*.cedar"):
        limits |= {int(n) for n in re.findall(r"age_days\s*>=\s*(\d+)", cedar.read_text())}
    for manifest in (ROOT / "policies" / "manifests").glob("*.toml"):
        limits |= {int(n) for n in re.findall(r"^\s*retention_days\s*=\s*(\d+)", manifest.read_text(), re.M)}
    for tenant in load_fixtures().values():
        limits |= set(tenant.settings["retention_days"].values())
    return limits


def test_the_fixtures_know_every_retention_limit() -> None:
    limits = shipped_limits()
    assert {183, 365, 1826} <= limits  # the packs' own: Heedify's 6 months and 365 days, Aircall's 5 years
    assert limits - {0} <= set(fixtures.RETENTION_LIMITS_DAYS), "add the new limit to RETENTION_LIMITS_DAYS"


def retention_class(tenant: TenantFixtures, record: Stamped, at: datetime) -> tuple[bool, ...]:
    """Past (True) or within each limit: every shipped one and the tenant's own for the record."""
    age = age_days(record, at)
    limits = (*fixtures.RETENTION_LIMITS_DAYS, tenant.settings["retention_days"][record.kind])
    return tuple(age >= limit for limit in limits)


def classes(now: datetime, uptime: timedelta = timedelta(0)) -> dict[tuple[str, Stamped], tuple[bool, ...]]:
    data = build_fixtures(now)
    out = {}
    for tenant_id, record in stamped_records(data, now):
        key = (tenant_id, Stamped(record.kind, record.id, ""))
        out[key] = retention_class(data[tenant_id], record, now + uptime)
    return out


@pytest.mark.parametrize("ahead", [timedelta(days=366), timedelta(days=3653)], ids=["1 year", "10 years"])
def test_every_record_keeps_its_retention_class_years_ahead(ahead: timedelta) -> None:
    today = classes(fixtures.system_clock())
    assert len(today) > 200 and any(any(c) for c in today.values()) and any(not any(c) for c in today.values())
    later = fixtures.system_clock() + ahead
    assert classes(later) == today
    # and for the uptime the margins promise: a gateway deciding weeks after the services started
    assert classes(later, timedelta(days=fixtures.AGE_MARGIN_BELOW_DAYS - 1)) == today


def test_no_age_lies_near_a_limit() -> None:
    now = fixtures.system_clock()
    below, above = fixtures.AGE_MARGIN_BELOW_DAYS, fixtures.AGE_MARGIN_ABOVE_DAYS
    for _, record in stamped_records(build_fixtures(now), now):
        age = age_days(record, now)
        assert all(not limit - below <= age < limit + above for limit in fixtures.RETENTION_LIMITS_DAYS), record


def test_the_intended_records_are_past_retention_and_the_others_are_not() -> None:
    """Past or within, per record, against the limits the policies apply to it (policies/packs)."""
    now = fixtures.system_clock()
    data = build_fixtures(now)
    for tenant_id, tenant in data.items():
        days = tenant.settings["retention_days"]
        key = fixtures.PROFILES[tenant_id].key
        ages = {(r.kind, r.id): age_days(r, now) for t, r in stamped_records(data, now) if t == tenant_id}
        payments = {i: a for (kind, i), a in ages.items() if kind == "payments"}
        assert all(payments[f"pay-{key}-00{n}"] >= days["payments"] for n in (1, 2, 3))  # customer's 7 years
        assert 1826 <= payments[f"pay-{key}-004"] < days["payments"]  # past Aircall's 5 years only
        assert all(age < 365 for i, age in payments.items() if int(i[-3:]) > 4)
        calls = {i: a for (kind, i), a in ages.items() if kind == "calls"}
        assert calls[f"call-{key}-001"] >= days["calls"]
        assert days["recordings"] <= calls[f"call-{key}-002"] < days["calls"]  # metadata kept, recording not
        assert all(age < 365 - fixtures.AGE_MARGIN_BELOW_DAYS for i, age in calls.items() if int(i[-3:]) > 2)
        responses = [(i, a) for (kind, i), a in ages.items() if kind == "survey_responses"]
        assert all((a >= days["survey_responses"]) == i.startswith(f"resp-{key}-003-") for i, a in responses)
        assert all(a < 365 for i, a in responses if not i.startswith(f"resp-{key}-003-"))
        events = [age for (kind, _), age in ages.items() if kind == "analytics_events"]
        old, mid = len(fixtures.OLD_EVENT_AGES), fixtures.MID_EVENT_COUNT
        assert events == sorted(events, reverse=True)  # listed oldest first
        assert all(age >= days["analytics_events"] for age in events[:old])
        assert all(183 <= age < 365 for age in events[old : old + mid])  # past the 6 months of statistics
        assert all(age < 183 - fixtures.AGE_MARGIN_BELOW_DAYS for age in events[old + mid :])
        assert len(events[old + mid :]) >= 20
        assert all(a < min(days["contacts"], 3650) for (kind, _), a in ages.items() if kind == "contacts")
        assert all(a < 183 for (kind, _), a in ages.items() if kind == "messages")
    contoso = data[CONTOSO_TENANT]
    recorded = [c["id"] for c in contoso.calls if c["has_recording"]]
    assert recorded and data[FABRIKAM_TENANT].settings["retention_days"]["recordings"] == 0


def test_opt_out_facts() -> None:
    for tenant in load_fixtures().values():
        assert OPTOUT_EMAIL in tenant.optouts
        assert [c["email"] for c in tenant.contacts if c["marketing_opt_out"]] == [OPTOUT_EMAIL]


def test_survey_results_are_the_aggregate_of_the_responses() -> None:
    for tenant in load_fixtures().values():
        for survey in tenant.surveys:
            responses = tenant.responses[survey["id"]]
            results = tenant.results[survey["id"]]
            ratings = [a["value"] for r in responses for a in r["answers"] if a["question_id"] == "q1"]
            rating = results["questions"][0]
            assert rating["count"] == len(ratings)
            assert rating["mean"] == round(sum(ratings) / len(ratings), 2)
            assert rating["distribution"] == {str(s): ratings.count(s) for s in range(1, 6)}


def test_wav_is_a_valid_pcm_file_and_depends_on_its_seed() -> None:
    data = wav_bytes("x")
    with wave.open(io.BytesIO(data)) as audio:
        assert (audio.getframerate(), audio.getnchannels(), audio.getsampwidth()) == (8000, 1, 2)
        assert audio.getnframes() == fixtures.RECORDING_SAMPLES
        frames = audio.readframes(audio.getnframes())
    assert len(set(frames)) > 2  # not silence
    assert wav_bytes("x") == data != wav_bytes("y")


@settings(max_examples=200, deadline=None)
@given(user=st.text(min_size=1, max_size=64), tenant=st.sampled_from(TENANTS))
def test_any_user_gets_a_well_formed_deterministic_mailbox(user: str, tenant: str) -> None:
    messages = mailbox(tenant, user)
    assert messages == mailbox(tenant, user)
    ids = [m["id"] for m in messages]
    assert len(set(ids)) == len(ids) == fixtures.MESSAGES_PER_MAILBOX
    assert all(re.fullmatch(r"[0-9a-f]{16}", i) for i in ids)
    assert all(m["threadId"] in ids for m in messages)
    dates = [int(m["internalDate"]) for m in messages]
    assert dates == sorted(dates, reverse=True)
    for message in messages:
        text = base64.urlsafe_b64decode(message["payload"]["body"]["data"])
        assert message["payload"]["body"]["size"] == len(text)
    other = "x" + user
    assert {m["id"] for m in mailbox(tenant, other)}.isdisjoint(ids)


def test_consent_store_is_bounded_and_drops_only_expired_records() -> None:
    now = datetime.now(UTC)
    store = ConsentStore(max_records=2)
    assert store.add({"id": "old"}, now - timedelta(days=1))
    assert store.add({"id": "live"}, now + timedelta(days=1))
    assert store.add({"id": "new"}, now + timedelta(days=1))  # makes room by dropping "old"
    assert store.body("old") is None and store.body("live") is not None
    assert not store.add({"id": "refused"}, now + timedelta(days=1))
    assert len(store) == 2 and store.body("refused") is None
