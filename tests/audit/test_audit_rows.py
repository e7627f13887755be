"""The writer's row encoder (``rows.RowEncoder``, with its memos) gives exactly the reference rows and
terms of ``schema.record_row`` and ``schema.record_terms``, record after record."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.audit.record import DecisionRecord
from gateway.audit.rows import RowEncoder
from gateway.audit.schema import record_row, record_terms

_TEXT = st.text(max_size=12)
_TUPLE = st.lists(st.sampled_from(["a", "b", "user.contact", "Ünïcode", 'q"uote', ""]), max_size=3).map(tuple)

records = st.builds(
    DecisionRecord,
    decision_id=_TEXT, time=st.floats(0, 2e9), method=st.sampled_from(["GET", "POST"]), path=_TEXT,
    roles=_TUPLE, categories=_TUPLE, policies=_TUPLE, clauses=_TUPLE, masked_fields=_TUPLE,
    shadow_policies=_TUPLE, purpose=st.sampled_from(["", "essential.service", "analytics.reporting"]),
    extra=st.dictionaries(st.sampled_from(["subjects", "mode", "upstream_status"]), _TEXT, max_size=2),
    subjects=st.lists(_TUPLE, max_size=2).map(tuple),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(records, min_size=1, max_size=8))
def test_rows_and_terms_are_the_reference_ones(batch: list[DecisionRecord]) -> None:
    encoder = RowEncoder(max_entries=4)  # small: the memos are cleared on the way too
    for rec in batch * 2:  # every record twice: the second time from the memos
        assert encoder.row(rec) == record_row(rec)
        assert encoder.terms(rec) == record_terms(rec)


def test_lists_instead_of_tuples_are_encoded_as_they_are() -> None:
    rec = DecisionRecord(decision_id="d", time=1.0, method="GET", path="/")
    rec.roles = ["Support.Agent"]  # type: ignore[assignment]  # a caller's bug, stored all the same
    rec.categories = ["user.name"]  # type: ignore[assignment]
    encoder = RowEncoder()
    assert encoder.row(rec) == record_row(rec)
    assert encoder.terms(rec) == record_terms(rec)
