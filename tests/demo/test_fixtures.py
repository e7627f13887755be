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
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.demo import fixtures
from gateway.demo.fixtures import (
    FIXTURE_EPOCH,
    OPTOUT_EMAIL,
    TEST_CARD_NUMBERS,
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


def as_json(value: object) -> str:
    return json.dumps(value, sort_keys=True, default=lambda b: base64.b64encode(b).decode())


def fixture_digest() -> str:
    state = {tenant: dataclasses.asdict(build_tenant(tenant)) for tenant in TENANTS}
    state["mail"] = {tenant: list(mailbox(tenant, "me-" + tenant)) for tenant in TENANTS}
    return hashlib.sha256(as_json(state).encode()).hexdigest()


def test_two_builds_are_identical() -> None:
    for tenant in TENANTS:
        first, second = build_tenant(tenant), build_tenant(tenant)
        assert first is not second and first == second
    assert mailbox(CONTOSO_TENANT, "u1") == mailbox(CONTOSO_TENANT, "u1")


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


def all_timestamps() -> Iterator[str]:
    for tenant in load_fixtures().values():
        yield from (c["created_at"] for c in tenant.contacts)
        yield from (p["created_at"] for p in tenant.payments)
        yield from (c["started_at"] for c in tenant.calls)
        yield from (s["created_at"] for s in tenant.surveys)
        yield from (e["timestamp"] for e in tenant.events)
        for responses in tenant.responses.values():
            yield from (r["submitted_at"] for r in responses)


def test_timestamps_are_fixed_rfc3339_instants_in_the_past() -> None:
    stamps = list(all_timestamps())
    assert stamps and all(RFC3339.fullmatch(s) for s in stamps)
    assert all(parse_rfc3339(s) <= FIXTURE_EPOCH + timedelta(days=21) for s in stamps)
    assert datetime.now(UTC) >= FIXTURE_EPOCH


def past_retention(created_at: str, days: int) -> bool:
    return parse_rfc3339(created_at) + timedelta(days=days) < datetime.now(UTC)


def test_some_records_are_past_retention_and_most_are_not() -> None:
    # Relative to the real clock, as a retention rule would see it.
    for tenant in load_fixtures().values():
        retention = tenant.settings["retention_days"]
        expired = [p["id"] for p in tenant.payments if past_retention(p["created_at"], retention["payments"])]
        assert len(expired) >= 3 and len(expired) < len(tenant.payments) // 2
        assert any(past_retention(c["created_at"], retention["calls"]) for c in tenant.calls)
        assert any(past_retention(e["timestamp"], retention["analytics_events"]) for e in tenant.events)
        assert any(past_retention(s["created_at"], retention["survey_responses"]) for s in tenant.surveys)
    contoso = load_fixtures()[CONTOSO_TENANT]
    days = contoso.settings["retention_days"]
    kept_call_old_recording = [
        c["id"]
        for c in contoso.calls
        if c["has_recording"]
        and not past_retention(c["created_at"], days["calls"])
        and past_retention(c["created_at"], days["recordings"])
    ]
    assert kept_call_old_recording == ["call-a-002"]


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
