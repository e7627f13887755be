"""Strict loading: every problem is reported with file and line, nothing half-loaded."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from gateway.authz.engine import PolicyEngine
from gateway.authz.errors import PolicyError
from tests.authz.support import POLICIES, ROUTE_MAPS


@pytest.fixture
def policies(tmp_path: Path) -> Path:
    target = tmp_path / "policies"
    shutil.copytree(POLICIES, target)
    return target


def load_errors(policies: Path, route_maps: tuple[Path, ...] = ROUTE_MAPS) -> tuple[str, ...]:
    with pytest.raises(PolicyError) as caught:
        PolicyEngine.load(policies, route_maps)
    return caught.value.diagnostics


def test_the_shipped_set_loads(policies: Path) -> None:
    engine = PolicyEngine.load(policies, ROUTE_MAPS)
    assert len(engine.policies.policies) >= 20


def test_type_errors_point_at_the_policy_line(policies: Path) -> None:
    path = policies / "bad.cedar"
    path.write_text(
        '// first\n@id("fine") @source("s") @clause("c")\npermit (principal, action, resource);\n\n'
        '@id("bad") @source("s") @clause("c")\n'
        'permit (principal, action == Action::"read", resource is Contact) when { resource.nope };\n'
    )
    (diagnostic,) = load_errors(policies)
    assert diagnostic.startswith(f"{path}:5: ") and "nope" in diagnostic


def test_syntax_errors_point_at_the_policy_line(policies: Path) -> None:
    path = policies / "bad.cedar"
    path.write_text(
        '@id("a") @source("s") @clause("c")\npermit (principal, action, resource);\n'
        '@id("b") @source("s") @clause("c; not the end")\npermit (principal, action, resource) when {;\n'
    )
    (diagnostic,) = load_errors(policies)
    assert diagnostic.startswith(f"{path}:3: parse error")


def test_annotations_are_required_and_ids_unique(policies: Path) -> None:
    path = policies / "bad.cedar"
    path.write_text(
        '@id("x")\npermit (principal, action, resource);\n\n'
        '@id("tenant-isolation") @source("s") @clause("c")\npermit (principal, action, resource);\n'
    )
    diagnostics = load_errors(policies)
    assert any(d.startswith(f"{path}:1: policy lacks @source, @clause") for d in diagnostics)
    (duplicate,) = [d for d in diagnostics if "@id 'tenant-isolation' already used at" in d]
    assert f"{path}:4" in duplicate and "tenancy.cedar:" in duplicate


def test_schema_errors(policies: Path) -> None:
    schema = policies / "schema.cedarschema"
    schema.write_text(schema.read_text().replace("entity ServiceRole;", "entity ServiceRole = { x: Nope };"))
    (diagnostic,) = load_errors(policies)
    assert diagnostic.startswith(f"{schema}:") and "Nope" in diagnostic
    assert not diagnostic.startswith(f"{schema}:1:")


def test_manifest_errors(policies: Path) -> None:
    manifest = policies / "manifests" / "extra.toml"
    manifest.write_text(
        '[categories."user.nonsense"]\npurposes = ["essential.service"]\n\n'
        '[categories."user.name"]\npurposes = ["essential.nope"]\n'
    )
    diagnostics = load_errors(policies)
    assert f"{manifest}:1: category 'user.nonsense': not a data category of the taxonomy" in diagnostics
    assert any(d.startswith(f"{manifest}:4: category 'user.name': purpose 'essential.nope'") for d in diagnostics)


def test_route_maps_must_use_known_categories_and_actions(policies: Path, tmp_path: Path) -> None:
    route_map = tmp_path / "map.toml"
    route_map.write_text(
        '[map]\nname = "t"\n[[route]]\nid = "x"\nmethod = "GET"\npath = "/x"\naction = "peek"\n'
        'resource = "Contact"\ntenant = "principal"\ncategories = ["user.nonsense"]\n'
    )
    diagnostics = load_errors(policies, (route_map,))
    assert any("action 'peek'" in d for d in diagnostics)
    assert any("'user.nonsense' is not a data category" in d for d in diagnostics)


def test_manifests_compile_with_inheritance(policies: Path) -> None:
    engine = PolicyEngine.load(policies, ROUTE_MAPS)
    purposes = engine.taxonomy.purposes
    card = engine.manifests.categories["user.financial.credit_card"]  # inherits user.financial and user
    assert "essential.service.payment_processing" in card.purposes
    assert "essential.service.security" in card.purposes
    assert "marketing.advertising" not in card.purposes
    assert purposes.minimal(card.purposes) == tuple(sorted(purposes.minimal(card.purposes)))
    contact = engine.manifests.allowed_for_all(["user.name", "user.contact"])
    assert "sales" in contact.purposes and contact.retention_days == 3650
    assert "crm" in contact.recipients
    assert engine.manifests.recipient_groups["salesforce"] == ("crm",)


def test_reason_codes_must_be_short_codes(policies: Path) -> None:
    path = policies / "bad.cedar"
    never = "forbid (principal, action, resource) when { false };\n"
    path.write_text(
        '@id("ok") @reason("retention") @source("s") @clause("c")\n' + never
        + '@id("bad") @reason("Not A Code!") @source("s") @clause("c")\n' + never
    )  # fmt: skip
    (diagnostic,) = load_errors(policies)
    assert diagnostic.startswith(f"{path}:3: @reason")


def test_route_maps_may_read_only_the_record_facts_of_the_schema(policies: Path, tmp_path: Path) -> None:
    bad = tmp_path / "facts.toml"
    bad.write_text(
        '[map]\nname = "x"\n[params]\ntid = "uuid"\n[[route]]\nid = "r.one"\nmethod = "GET"\npath = "/t/{tid}"\n'
        'action = "read"\nresource = "Contact"\ntenant = "tid"\ncategories = ["user"]\n'
        'response_facts = [{ name = "created_at", pointer = "/created_at", kind = "age" }]\n'
        '[[route]]\nid = "r.two"\nmethod = "GET"\npath = "/u/{tid}"\naction = "read"\nresource = "Contact"\n'
        'tenant = "tid"\ncategories = ["user"]\n'
        'response_facts = [{ name = "age_days", pointer = "/opted", kind = "bool" }]\n'
    )
    diagnostics = load_errors(policies, (bad,))
    assert len(diagnostics) == 2 and all("context.record" in d for d in diagnostics)
    assert diagnostics[0].startswith(f"{bad}:6: route r.one: response fact 'created_at'")
