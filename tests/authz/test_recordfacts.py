"""Reading record facts by the route map's rules: strict forms, and ages in whole days that lose
nothing for a retention counted in days."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.adapters.routemap import FactRule, Pointer
from gateway.authz.recordfacts import DAY_SECONDS, FactError, parse_time, read_facts, record_facts

AGE = FactRule("age_days", Pointer.parse("/created_at"), "age")
OPT_OUT = FactRule("marketing_opt_out", Pointer.parse("/marketing_opt_out"), "bool")
ITEM_AGE = FactRule("age_days", Pointer.parse("/events/*/timestamp"), "age")


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("2016-03-14T09:26:53Z", 1457947613),
        ("2016-03-14T09:26:53z", 1457947613),
        ("2016-03-14T10:26:53+01:00", 1457947613),
        ("2016-03-14 09:26:53.250Z", 1457947613),
        (1457947613, 1457947613),
        (1457947613.9, 1457947613),
        (0, 0),
    ],
)
def test_times_in_rfc3339_or_epoch_seconds(value: object, seconds: int) -> None:
    assert parse_time(value) == seconds


@pytest.mark.parametrize(
    "value",
    ["2016-03-14T09:26:53", "2016-03-14", "yesterday", "", "2016-03-14T09:26:53Z" + " " * 60, True, None,
     math.nan, math.inf, 1e13, [], {}],
)  # fmt: skip
def test_anything_else_is_no_time(value: object) -> None:
    with pytest.raises(FactError):
        parse_time(value)


def test_required_facts_must_be_there_and_optional_ones_may_be_absent() -> None:
    doc = {"created_at": "2026-01-01T00:00:00Z", "marketing_opt_out": True}
    assert read_facts((AGE, OPT_OUT), doc) == (("age_days", "age", 1767225600), ("marketing_opt_out", "bool", True))
    with pytest.raises(FactError, match="no /marketing_opt_out"):
        read_facts((AGE, OPT_OUT), {"created_at": "2026-01-01T00:00:00Z"})
    with pytest.raises(FactError, match="expected true or false"):
        read_facts((OPT_OUT,), {"marketing_opt_out": 1})
    optional = FactRule("marketing_opt_out", Pointer.parse("/marketing_opt_out"), "bool", required=False)
    assert read_facts((optional,), {"marketing_opt_out": None}) == ()
    assert read_facts((optional,), "not an object") == ()


def test_item_facts_skip_the_array_pointer() -> None:
    item = {"timestamp": 86400 * 3}
    assert read_facts((ITEM_AGE,), item, skip=2) == (("age_days", "age", 259200),)


def test_ages_are_whole_days_and_never_negative() -> None:
    raw = (("age_days", "age", 1_000_000), ("marketing_opt_out", "bool", False))
    assert record_facts(raw, 1_000_000 + 3 * DAY_SECONDS - 1) == (("age_days", 2), ("marketing_opt_out", False))
    assert record_facts(raw, 1_000_000 - 5 * DAY_SECONDS) == (("age_days", 0), ("marketing_opt_out", False))


@settings(max_examples=200, deadline=None)
@given(
    created=st.integers(min_value=0, max_value=4_000_000_000),
    elapsed=st.integers(min_value=-10 * DAY_SECONDS, max_value=20_000 * DAY_SECONDS),
    retention=st.integers(min_value=0, max_value=10_000),
)
def test_whole_days_lose_nothing_for_a_retention_in_days(created: int, elapsed: int, retention: int) -> None:
    """``age_days >= R`` exactly when the record is at least ``R`` days (of seconds) old (a record
    from the future is of age 0)."""
    ((_, age),) = record_facts((("age_days", "age", created),), created + elapsed)
    assert isinstance(age, int) and not isinstance(age, bool)
    assert (age >= retention) == (max(elapsed, 0) >= retention * DAY_SECONDS)
