"""One route-map pointer means one value to every part that reads it: the masking plan, the record's
facts, the lifted request body and the data subjects. They used to walk pointers each their own way
and disagree on what names an array item (``/items/01`` lifted and named the subject ``items[1]``,
that masking left alone and the facts did not see; ``/items/²`` raised in all of them)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.adapters.routemap import FactRule, LiftRule, Pointer
from gateway.adapters.subjects import parse_subjects
from gateway.authz.decide import lift_body
from gateway.authz.decision import MaskRule
from gateway.authz.masking import apply_masks
from gateway.authz.recordfacts import read_facts

VALUE = "2024-01-31T10:00:00Z"  # a string each of them can read: a time, a lifted string, a subject key


def seen_by(pointer: str, document: Any) -> dict[str, bool]:
    """For each part, whether it found a value at ``pointer`` in ``document``."""
    body = json.dumps(document).encode()
    masked = apply_masks(body, [MaskRule(Pointer.parse(pointer), "user.x", "redact", ("p",))])[1]
    facts = read_facts([FactRule("age_days", Pointer.parse(pointer), "age", required=False)], document)
    lifted = lift_body((LiftRule("name", Pointer.parse(pointer), "string", required=False),), body)
    subjects = parse_subjects([{"kind": "contact", "pointer": pointer}], set(), set()).answer_groups(document)
    return {"masking": bool(masked), "facts": bool(facts), "lift": bool(lifted), "subjects": bool(subjects)}


@pytest.mark.parametrize(
    ("token", "found"),
    [
        ("1", True),
        ("01", False),  # a leading zero: not an index in RFC 6901
        ("\u0661", False),  # ARABIC-INDIC DIGIT ONE
        ("\u00b2", False),  # SUPERSCRIPT TWO: str.isdigit(), but int() raises
        ("-", False),
        ("1e0", False),
    ],
)
def test_an_array_token_means_the_same_to_every_part(token: str, found: bool) -> None:
    document = {"items": [{"x": 1}, VALUE, VALUE]}
    assert seen_by(f"/items/{token}", document) == dict.fromkeys(("masking", "facts", "lift", "subjects"), found)


@pytest.mark.parametrize("token", ["01", "\u0661", "-", "*x"])
def test_on_an_object_every_token_is_a_member_name(token: str) -> None:
    document = {"items": {token: VALUE}}
    assert seen_by(f"/items/{token}", document) == dict.fromkeys(("masking", "facts", "lift", "subjects"), True)


def test_a_pointer_with_a_bad_escape_is_refused_for_subjects_too() -> None:
    with pytest.raises(ValueError, match="'~' must be followed by '0' or '1'"):
        parse_subjects([{"kind": "contact", "pointer": "/contact~2id"}], set(), set())
