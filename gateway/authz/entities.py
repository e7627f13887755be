"""Building the Cedar entities and context of one request.

The entity store of a request holds only what its policies can look at: the principal (its roles as
parents), the resource (with the facts the manifests give its route), the resource's tenant, the
purpose and recipient (each with every ancestor as a direct parent, so no ancestor entity is needed),
and the data categories of the route's response fields (for masking). Parsing entities is Cedar's
most expensive step (several microseconds per attribute), so the static parts are serialised once
per route and per taxonomy key, and the parsed handle is cached by the caller.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

from adapters.routemap import Route
from gateway.authz.facts import ConsentFacts, Facts, TenantFacts
from gateway.authz.manifests import Manifests
from gateway.identity.principal import Principal


def ref(entity_type: str, entity_id: str) -> dict[str, dict[str, str]]:
    return {"__entity": {"type": entity_type, "id": entity_id}}


def uid(entity_type: str, entity_id: str) -> dict[str, str]:
    return {"type": entity_type, "id": entity_id}


@dataclass(frozen=True, slots=True)
class RouteEntities:
    """What never changes for a route: its resource attributes and its field categories' entities."""

    categories_attr: list[dict[str, dict[str, str]]]  # the route's categories and their ancestors
    purposes_attr: list[dict[str, dict[str, str]]]
    recipients_attr: list[dict[str, dict[str, str]]]
    retention_days: int | None
    field_category_entities: str  # JSON fragment: DataCategory entities, comma-separated ("" if none)


class EntityBuilder:
    """Serialises entities from taxonomy keys; holds per-key JSON fragments."""

    def __init__(self, manifests: Manifests) -> None:
        self.manifests = manifests
        self.taxonomy = manifests.taxonomy
        self._purpose_json: dict[str, str] = {}
        self._recipient_json: dict[str, str] = {}
        self._category_json: dict[str, str] = {}
        self._routes: dict[str, RouteEntities] = {}

    # --- taxonomy entities ----------------------------------------------------------------------

    def purpose_entity(self, key: str) -> str:
        found = self._purpose_json.get(key)
        if found is None:
            ancestors = self.taxonomy.purposes.ancestors.get(key, ())
            found = json.dumps(
                {"uid": uid("Purpose", key), "attrs": {}, "parents": [uid("Purpose", a) for a in ancestors]}
            )
            self._purpose_json[key] = found
        return found

    def recipient_entity(self, name: str) -> str:
        found = self._recipient_json.get(name)
        if found is None:
            groups = self.manifests.recipient_groups.get(name, ())
            found = json.dumps(
                {"uid": uid("Recipient", name), "attrs": {}, "parents": [uid("Recipient", g) for g in groups]}
            )
            if name in self.manifests.recipient_members:
                self._recipient_json[name] = found  # only known names: unknown ones are unbounded
        return found

    def category_entity(self, key: str) -> str:
        found = self._category_json.get(key)
        if found is None:
            facts = self.manifests.category_facts(key)
            attrs: dict[str, object] = {
                "allowed_purposes": [ref("Purpose", p) for p in facts.purposes],
                "recipients": [ref("Recipient", r) for r in facts.recipients],
            }
            if facts.retention_days is not None:
                attrs["retention_days"] = facts.retention_days
            ancestors = self.taxonomy.categories.ancestors[key]
            found = json.dumps(
                {"uid": uid("DataCategory", key), "attrs": attrs, "parents": [uid("DataCategory", a) for a in ancestors]}
            )
            self._category_json[key] = found
        return found

    def route_entities(self, route: Route) -> RouteEntities:
        found = self._routes.get(route.id)
        if found is None:
            allowed = self.manifests.allowed_for_all(route.categories)
            closed: set[str] = set()
            for key in route.categories:
                closed.add(key)
                closed.update(self.taxonomy.categories.ancestors[key])
            found = RouteEntities(
                categories_attr=[ref("DataCategory", c) for c in sorted(closed)],
                purposes_attr=[ref("Purpose", p) for p in allowed.purposes],
                recipients_attr=[ref("Recipient", r) for r in allowed.recipients],
                retention_days=allowed.retention_days,
                field_category_entities=",".join(self.category_entity(c) for c in route.field_categories),
            )
            self._routes[route.id] = found
        return found

    # --- per-request entities -------------------------------------------------------------------

    def entities_json(self, facts: Facts, resource_id: str) -> str:
        """The request's entities; ``resource_id`` is "" when no policy can look at the record's id."""
        principal = facts.principal
        static = self.route_entities(facts.route)
        parts = [
            principal_entity(principal),
            tenant_entity(facts.tenant_facts),
            self.resource_entity(facts, static, resource_id),
            self.purpose_entity(facts.purpose),
        ]
        if facts.recipient is not None:
            parts.append(self.recipient_entity(facts.recipient))
        if static.field_category_entities:
            parts.append(static.field_category_entities)
        return "[" + ",".join(parts) + "]"

    def resource_entity(self, facts: Facts, static: RouteEntities, resource_id: str) -> str:
        attrs: dict[str, object] = {
            "id": resource_id,
            "tenant": ref("Tenant", facts.tenant),
            "categories": static.categories_attr,
            "allowed_purposes": static.purposes_attr,
            "recipients": static.recipients_attr,
        }
        if facts.owner is not None:
            attrs["owner"] = ref("User", facts.owner)
        if static.retention_days is not None:
            attrs["retention_days"] = static.retention_days
        return json.dumps({"uid": uid(facts.route.resource_type, resource_id), "attrs": attrs, "parents": []})


def principal_entity(principal: Principal) -> str:
    is_user = principal.kind == "user"
    attrs: dict[str, object] = {
        "id": principal.id,
        "tenant": ref("Tenant", principal.tenant),
        "roles": list(principal.roles),
    }
    if is_user:
        attrs["scopes"] = list(principal.scopes)
    return json.dumps(
        {
            "uid": uid("User" if is_user else "App", principal.id),
            "attrs": attrs,
            "parents": [uid("Role", r) for r in principal.roles],
        }
    )


def tenant_entity(facts: TenantFacts) -> str:
    attrs: dict[str, object] = {}
    if facts.known:
        if facts.call_recording_enabled is not None:
            attrs["call_recording_enabled"] = facts.call_recording_enabled
        if facts.optouts is not None:
            attrs["optouts"] = sorted(facts.optouts)
    return json.dumps({"uid": uid("Tenant", facts.tenant), "attrs": attrs, "parents": []})


def consent_value(consent: ConsentFacts) -> dict[str, object]:
    return {
        "id": consent.id,
        "subject": ref("User", consent.subject),
        "grantee": consent.grantee,
        "resources": sorted(consent.resources),
        "purpose": ref("Purpose", consent.purpose),
        "expires_at": consent.expires_at,
    }


def context_json(facts: Facts, time: int) -> str:
    context: dict[str, object] = {
        "purpose": ref("Purpose", facts.purpose),
        "actor_kind": "human" if facts.principal.kind == "user" else "automated",
        "time": time,
    }
    if facts.recipient is not None:
        context["recipient"] = ref("Recipient", facts.recipient)
    if facts.consent is not None:
        context["consent"] = consent_value(facts.consent)
    if facts.body:
        context["body"] = dict(facts.body)
    return json.dumps(context)


def principal_uid(principal: Principal) -> dict[str, str]:
    return uid("User" if principal.kind == "user" else "App", principal.id)


def request_dict(facts: Facts, action: str, resource_id: str, context: str) -> dict[str, object]:
    return {
        "principal": principal_uid(facts.principal),
        "action": uid("Action", action),
        "resource": uid(facts.route.resource_type, resource_id),
        "context": context,
    }


def field_requests(facts: Facts, categories: Iterable[str], context: str) -> list[dict[str, object]]:
    principal = principal_uid(facts.principal)
    action = uid("Action", "read_field")
    return [
        {"principal": principal, "action": action, "resource": uid("DataCategory", c), "context": context}
        for c in categories
    ]
