"""The shipped base policies, evaluated by real cedarpy: one test per mechanism, allow and deny."""

from __future__ import annotations

from gateway.authz.engine import PolicyEngine
from gateway.authz.facts import ConsentFacts
from tests.authz.support import NOW, USER_1, USER_2, A, B, app, facts, user

SUPPORT = "essential.service.operations.support"


def decide(engine: PolicyEngine, f: object) -> tuple[bool, tuple[str, ...]]:
    verdict, _ = engine.decide(f)  # type: ignore[arg-type]
    return verdict.allowed, verdict.policy_ids


def test_role_based_access(engine: PolicyEngine) -> None:
    assert decide(engine, facts(engine, user("Support.Agent"), "contacts.read", "ct-a-001", purpose=SUPPORT)) == (
        True,
        ("support-agent-reads",),
    )
    # A role without a grant on the resource type: nothing permits it.
    assert decide(engine, facts(engine, user("Analyst"), "calls.read", "call-a-001", purpose="essential.service")) == (
        False,
        ("default-deny",),
    )
    # No role at all: an end user reads no contacts.
    assert decide(engine, facts(engine, user(), "contacts.list", purpose="essential.service"))[0] is False


def test_purpose_limitation_by_category(engine: PolicyEngine) -> None:
    # Survey responses (per-respondent content) are not allowed for analytics.reporting by the manifest.
    allowed, policies = decide(
        engine, facts(engine, user("Analyst"), "surveys.responses", "sv-a-001", purpose="analytics.reporting")
    )
    assert (allowed, policies) == (False, ("purpose-limitation",))
    # The same role permit, with a purpose the data's manifest allows: the forbid stays silent.
    assert decide(
        engine, facts(engine, user("Analyst"), "surveys.results", "sv-a-001", purpose="analytics.reporting")
    ) == (True, ("analyst-aggregates",))
    # A child of an allowed purpose is allowed (essential.service.operations.support under essential.service).
    assert decide(engine, facts(engine, user("Support.Agent"), "calls.read", "call-a-001", purpose=SUPPORT))[0]


def test_tenant_isolation(engine: PolicyEngine) -> None:
    allowed, policies = decide(
        engine, facts(engine, user("Support.Agent"), "payments.read", "pay-b-001", tenant=B, purpose=SUPPORT)
    )
    assert not allowed and "tenant-isolation" in policies
    allowed, policies = decide(
        engine,
        facts(
            engine,
            user("Security.Investigator", tenant=B),
            "contacts.list",
            tenant=A,
            purpose="essential.service.security",
        ),
    )
    assert (allowed, policies) == (False, ("tenant-isolation",))


def test_card_numbers_masked_for_people_not_for_the_payment_service(engine: PolicyEngine) -> None:
    for role, purpose in (
        ("Support.Agent", SUPPORT),
        ("Billing.Admin", "essential.service.payment_processing"),
    ):
        verdict, _ = engine.decide(facts(engine, user(role), "payments.read", "pay-a-001", purpose=purpose))
        assert verdict.allowed
        masks = {m.pointer.text: (m.style, m.policies) for m in verdict.masks}
        assert masks["/card_number"] == ("last4", ("mask-card-numbers-for-people",))
    verdict, _ = engine.decide(
        facts(
            engine,
            app("Service.Payments"),
            "payments.read",
            "pay-a-001",
            purpose="essential.service.payment_processing",
        )
    )
    assert verdict.allowed and verdict.masks == ()


def test_fields_masked_when_their_category_does_not_allow_the_purpose(engine: PolicyEngine) -> None:
    verdict, _ = engine.decide(facts(engine, user("Analyst"), "analytics.events", purpose="analytics.reporting"))
    assert verdict.allowed
    assert {m.pointer.text for m in verdict.masks} == {"/events/*/ip", "/events/*/user_agent"}
    assert all(m.policies == ("default-deny",) for m in verdict.masks)


def test_human_versus_automated(engine: PolicyEngine) -> None:
    purpose = "essential.service.payment_processing"
    assert decide(engine, facts(engine, app("Service.Payments"), "payments.read", "pay-a-001", purpose=purpose))[0]
    # A person whose token carries a service role gets nothing from it, and an application holding an
    # employee role is refused too: the role model, before any policy.
    assert decide(engine, facts(engine, user("Service.Payments"), "payments.read", "pay-a-001", purpose=purpose)) == (
        False,
        ("role-kind-mismatch",),
    )
    assert decide(engine, facts(engine, app("Billing.Admin"), "payments.read", "pay-a-001", purpose=purpose)) == (
        False,
        ("role-kind-mismatch",),
    )
    assert decide(engine, facts(engine, user("Billing.Admin"), "payments.read", "pay-a-001", purpose=purpose))[0]
    # The web mail backend reads any mailbox of its tenant; a person reads only their own.
    assert decide(engine, facts(engine, app("Service.Mail"), "gmail.messages.read", "m1", owner=USER_2))[0]
    assert decide(engine, facts(engine, user(), "gmail.messages.read", "m1", owner=USER_2)) == (
        False,
        ("default-deny",),
    )
    assert decide(engine, facts(engine, user(), "gmail.messages.read", "m1", owner=USER_1)) == (
        True,
        ("end-user-own-mailbox",),
    )


def test_recipients_on_export(engine: PolicyEngine) -> None:
    rep = user("Sales.Rep")
    assert decide(
        engine, facts(engine, rep, "contacts.export", "ct-a-001", purpose="sales", recipient="salesforce")
    ) == (True, ("sales-rep-contacts",))
    assert decide(engine, facts(engine, rep, "contacts.export", "ct-a-001", purpose="sales", recipient="zendesk"))[0]
    assert decide(engine, facts(engine, rep, "contacts.export", "ct-a-001", purpose="sales", recipient="pardot")) == (
        False,
        ("export-to-listed-recipients",),
    )
    assert decide(engine, facts(engine, rep, "contacts.export", "ct-a-001", purpose="sales")) == (
        False,
        ("export-to-listed-recipients",),
    )


def consent(**changes: object) -> ConsentFacts:
    fields: dict[str, object] = {
        "id": "consent-1",
        "subject": USER_2,
        "tenant": A,
        "grantee": USER_1,
        "resources": frozenset({"m1"}),
        "purpose": "essential.service",
        "expires_at": NOW + 3600,
    }
    fields.update(changes)
    return ConsentFacts(**fields)  # type: ignore[arg-type]


def test_consent_by_reference(engine: PolicyEngine) -> None:
    reader = user()

    def read(c: ConsentFacts | None, message: str = "m1", purpose: str = SUPPORT, who: object = reader) -> bool:
        return decide(
            engine,
            facts(
                engine,
                who,
                "gmail.messages.read",
                message,
                owner=USER_2,  # type: ignore[arg-type]
                purpose=purpose,
                consent=c,
            ),
        )[0]

    assert read(consent())
    assert read(consent(grantee="Support.Agent"), who=user("Support.Agent"))  # a role as grantee
    assert not read(None)
    assert not read(consent(), message="m2")  # another message
    assert not read(consent(grantee=USER_2))  # another grantee
    assert not read(consent(subject=USER_1))  # not the owner's agreement
    assert not read(consent(expires_at=NOW - 1))  # expired
    assert not read(consent(purpose="essential.service.security"))  # purpose not covered
    assert not read(consent(), purpose="marketing.advertising")
    # The decision depends on the message id here, so it is not shared between messages.
    verdict_m1, _ = engine.decide(facts(engine, reader, "gmail.messages.read", "m1", owner=USER_2, consent=consent()))
    verdict_m2, _ = engine.decide(facts(engine, reader, "gmail.messages.read", "m2", owner=USER_2, consent=consent()))
    assert verdict_m1.allowed and not verdict_m2.allowed


def test_recordings_only_where_enabled(engine: PolicyEngine) -> None:
    agent = user("Support.Agent")
    assert decide(engine, facts(engine, agent, "calls.recording", "call-a-001", purpose=SUPPORT, recording=True))[0]
    for recording in (False, None):  # disabled, or unknown: refused
        assert decide(
            engine,
            facts(engine, agent, "calls.transcript", "call-a-001", purpose=SUPPORT, recording=recording),
        ) == (False, ("recordings-only-where-enabled",))


def test_invitations_respect_the_opt_out_list(engine: PolicyEngine) -> None:
    manager = user("Marketing.Manager")
    purpose = "marketing.communications.email"
    optouts = frozenset({"optout@example.com"})
    ok = facts(
        engine,
        manager,
        "surveys.invite",
        "sv-a-001",
        purpose=purpose,
        optouts=optouts,
        body=(("email", "someone@example.com"),),
    )
    assert decide(engine, ok) == (True, ("marketing-manager-invitations",))
    refused = facts(
        engine,
        manager,
        "surveys.invite",
        "sv-a-001",
        purpose=purpose,
        optouts=optouts,
        body=(("email", "optout@example.com"),),
    )
    assert decide(engine, refused) == (False, ("invitations-respect-opt-outs",))
    unknown_list = facts(
        engine,
        manager,
        "surveys.invite",
        "sv-a-001",
        purpose=purpose,
        optouts=None,
        body=(("email", "someone@example.com"),),
    )
    assert decide(engine, unknown_list)[0] is False


def test_default_deny_for_consent_reads_of_others(engine: PolicyEngine) -> None:
    assert decide(engine, facts(engine, user(), "consents.read", "c-1", owner=USER_1))[0]
    assert decide(engine, facts(engine, user(), "consents.read", "c-1", owner=USER_2)) == (
        False,
        ("default-deny",),
    )
    assert decide(engine, facts(engine, user(), "consents.read", "c-1", owner=None)) == (
        False,
        ("default-deny",),
    )


def test_reasons_carry_source_and_clause(engine: PolicyEngine) -> None:
    verdict, _ = engine.decide(
        facts(engine, user("Support.Agent"), "payments.read", "pay-b-001", tenant=B, purpose=SUPPORT)
    )
    (reason,) = verdict.reasons
    assert reason["policy"] == "tenant-isolation"
    assert reason["source"].startswith("CONTRACT.md")
    assert "own tenant" in reason["clause"]
    verdict, _ = engine.decide(facts(engine, user(), "contacts.list"))
    assert list(verdict.reasons) == [
        {
            "policy": "default-deny",
            "source": "Cedar default deny",
            "clause": "No policy permits this request.",
        }
    ]


def test_decisions_are_cached_and_shared_across_record_ids(engine: PolicyEngine) -> None:
    agent = user("Support.Agent", oid="0b1c2d3e-0000-4000-8000-00000000cafe")
    first, cached_first = engine.decide(facts(engine, agent, "contacts.read", "ct-a-001", purpose=SUPPORT))
    again, cached_again = engine.decide(facts(engine, agent, "contacts.read", "ct-a-001", purpose=SUPPORT))
    other, cached_other = engine.decide(facts(engine, agent, "contacts.read", "ct-a-002", purpose=SUPPORT))
    assert (cached_first, cached_again, cached_other) == (False, True, True)
    assert first == again == other
    # Another purpose is another decision.
    _, cached = engine.decide(facts(engine, agent, "contacts.read", "ct-a-001", purpose="essential.service"))
    assert cached is False
