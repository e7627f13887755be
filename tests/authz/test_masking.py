from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.adapters.routemap import MaskStyle, Pointer
from gateway.authz.decision import MaskRule
from gateway.authz.masking import REDACTED, apply_masks, mask_last4


def rule(pointer: str, style: MaskStyle = "redact") -> MaskRule:
    return MaskRule(Pointer.parse(pointer), "user.x", style, ("p",))


def test_card_number_keeps_only_the_last_four_digits() -> None:
    assert mask_last4("4111111111111111") == "************1111"
    assert mask_last4("4111 1111 1111 1111") == "************1111"
    assert mask_last4(5555555555554444) == "************4444"
    assert mask_last4("12345678") == "********"  # too short to be a card number: nothing kept
    assert mask_last4(None) is None


def test_masks_fields_and_reports_concrete_pointers() -> None:
    body = json.dumps(
        {
            "id": "pay-a-001",
            "card_number": "4242424242424242",
            "expiry": "04/28",
            "billing_address": {"city": "Seattle"},
            "amount": 10.5,
        }
    ).encode()
    masked, pointers = apply_masks(body, [rule("/card_number", "last4"), rule("/billing_address"), rule("/amount")])
    doc = json.loads(masked)
    assert doc["card_number"] == "************4242"
    assert doc["billing_address"] is None and doc["amount"] is None
    assert doc["expiry"] == "04/28" and doc["id"] == "pay-a-001"
    assert pointers == ("/card_number", "/billing_address", "/amount")


def test_wildcards_cover_every_array_item() -> None:
    body = json.dumps({"contacts": [{"email": "a@x"}, {"email": "b@x", "id": 2}, {"id": 3}]}).encode()
    masked, pointers = apply_masks(body, [rule("/contacts/*/email")])
    assert json.loads(masked) == {"contacts": [{"email": REDACTED}, {"email": REDACTED, "id": 2}, {"id": 3}]}
    assert pointers == ("/contacts/0/email", "/contacts/1/email")


def test_pointer_escapes() -> None:
    body = json.dumps({"a/b": {"c~d": "secret"}}).encode()
    masked, pointers = apply_masks(body, [rule("/a~1b/c~0d")])
    assert json.loads(masked) == {"a/b": {"c~d": REDACTED}}
    assert pointers == ("/a~1b/c~0d",)


def test_absent_fields_leave_the_body_untouched() -> None:
    body = b'{"id": 1}'
    assert apply_masks(body, [rule("/card_number")]) == (body, ())
    assert apply_masks(body, []) == (body, ())


def test_a_body_that_is_not_json_is_refused() -> None:
    with pytest.raises(ValueError):
        apply_masks(b"\x00not json", [rule("/x")])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(alphabet="0123456789 -", min_size=0, max_size=30), max_size=5))
def test_no_masked_card_number_shows_more_than_four_digits(numbers: list[str]) -> None:
    body = json.dumps({"items": [{"card_number": n} for n in numbers]}).encode()
    masked, _ = apply_masks(body, [rule("/items/*/card_number", "last4")])
    for item in json.loads(masked)["items"]:
        value = item["card_number"]
        assert sum(c.isdigit() for c in value) <= 4


def test_a_masked_answer_keeps_every_other_value_exactly() -> None:
    # integers past 64 bits, floats with many digits, non-ASCII text: written back as they came in
    body = (
        '{"id":123456789012345678901234567890,"ratio":0.1000000000000000055511151231257827,'
        '"name":"Zoë 東京","card_number":"4242424242424242","n":-9223372036854775809}'
    ).encode()
    masked, pointers = apply_masks(body, [rule("/card_number", "last4")])
    assert pointers == ("/card_number",)
    doc = json.loads(masked)
    assert doc["id"] == 123456789012345678901234567890 and doc["n"] == -9223372036854775809
    assert doc["ratio"] == json.loads(body)["ratio"] and doc["name"] == "Zoë 東京"
    assert b"123456789012345678901234567890" in masked
