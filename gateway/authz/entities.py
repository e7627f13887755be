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

from gateway.adapters.routemap import Route
from gateway.authz.facts import ConsentFacts, Facts, TenantFacts
from gateway.authz.manifests import Manifests
from gateway.authz.roles import ROLE_TYPE_OF_KIND, RoleModel
from gateway.identity.principal import Principal


def ref(entity_type: str, entity_id: str) -> dict[str, dict[str, str]]:
    """An entity reference as a value in the context (explicit ``__entity`` escape)."""
    return {"__entity": {"type": entity_type, "id": entity_id}}


def attr_ref(entity_type: str, entity_id: str) -> dict[str, str]:
    """An entity reference as an entity attribute. Entities are always parsed with the schema, which
    types the attribute, so the shorter implicit form is used (it parses faster than the escape)."""
    return {"type": entity_type, "id": entity_id}


def uid(entity_type: str, entity_id: str) -> dict[str, str]:
    return {"type": entity_type, "id": entity_id}


@dataclass(frozen=True, slots=True)
class RouteEntities:
    """What never changes for a route: its resource attributes and its field categories' entities."""

    category_keys: frozenset[str]  # the route's categories and their ancestors
    categories_attr: list[dict[str, str]]  # the same, as entity references
    purposes_attr: list[dict[str, str]]
    recipients_attr: list[dict[str, str]]
    retention_days: int | None


class EntityBuilder:
    """Serialises entities from taxonomy keys; holds per-key JSON fragments."""

    def __init__(self, manifests: Manifests, roles: RoleModel, *, every_purpose: bool = False) -> None:
        self.manifests = manifests
        self.roles = roles
        self.taxonomy = manifests.taxonomy
        # Every purpose of the taxonomy in each request's store instead of the request's one, so the
        # store does not change with the purpose (see ``PolicyEngine.load``'s ``every_purpose``).
        self.every_purpose = every_purpose
        self._every_purpose_json: str | None = None
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
                "allowed_purposes": [attr_ref("Purpose", p) for p in facts.purposes],
                "recipients": [attr_ref("Recipient", r) for r in facts.recipients],
            }
            if facts.retention_days is not None:
                attrs["retention_days"] = facts.retention_days
            ancestors = self.taxonomy.categories.ancestors[key]
            found = json.dumps(
                {
                    "uid": uid("DataCategory", key),
                    "attrs": attrs,
                    "parents": [uid("DataCategory", a) for a in ancestors],
                }
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
                category_keys=frozenset(closed),
                categories_attr=[attr_ref("DataCategory", c) for c in sorted(closed)],
                purposes_attr=[attr_ref("Purpose", p) for p in allowed.purposes],
                recipients_attr=[attr_ref("Recipient", r) for r in allowed.recipients],
                retention_days=allowed.retention_days,
            )
            self._routes[route.id] = found
        return found

    # --- per-request entities -------------------------------------------------------------------

    def entities_json(self, facts: Facts, resource_id: str) -> str:
        """The request's entities; ``resource_id`` is "" when no policy can look at the record's id."""
        principal = facts.principal
        static = self.route_entities(facts.route)
        parts = [
            self.principal_entity(principal),
            tenant_entity(facts.tenant_facts),
            self.resource_entity(facts, static, resource_id),
            self.every_purpose_entities() if self.every_purpose else self.purpose_entity(facts.purpose),
        ]
        if facts.recipient is not None:
            parts.append(self.recipient_entity(facts.recipient))
        return "[" + ",".join(parts) + "]"

    def every_purpose_entities(self) -> str:
        if self._every_purpose_json is None:
            keys = sorted(self.taxonomy.purposes.parents)
            self._every_purpose_json = ",".join(self.purpose_entity(key) for key in keys)
        return self._every_purpose_json

    def field_entities_json(self, facts: Facts, categories: Iterable[str]) -> str:
        """The entities of masking decisions: the principal, purpose, recipient and the categories."""
        parts = [
            self.principal_entity(facts.principal),
            tenant_entity(facts.tenant_facts),
            self.purpose_entity(facts.purpose),
        ]
        if facts.recipient is not None:
            parts.append(self.recipient_entity(facts.recipient))
        parts.extend(self.category_entity(c) for c in categories)
        return "[" + ",".join(parts) + "]"

    def resource_entity(self, facts: Facts, static: RouteEntities, resource_id: str) -> str:
        attrs: dict[str, object] = {
            "id": resource_id,
            "tenant": attr_ref("Tenant", facts.tenant),
            "categories": static.categories_attr,
            "allowed_purposes": static.purposes_attr,
            "recipients": static.recipients_attr,
        }
        if facts.owner is not None:
            attrs["owner"] = attr_ref("User", facts.owner)
        if static.retention_days is not None:
            attrs["retention_days"] = static.retention_days
        if facts.tenant_facts.known and facts.tenant_facts.retention_days is not None:
            attrs["tenant_retention_days"] = facts.tenant_facts.retention_days
        return json.dumps({"uid": uid(facts.route.resource_type, resource_id), "attrs": attrs, "parents": []})


    def principal_entity(self, principal: Principal) -> str:
        """The principal with the roles of its own kind as parents (employee roles for a person, service
        roles for an application); roles the model does not list are left out. A token carrying a role
        of the other kind never gets here: the engine refuses it first."""
        return principal_entity(principal, self.roles.check(principal.kind, principal.roles).admitted)


def principal_entity(principal: Principal, roles: tuple[str, ...]) -> str:
    is_user = principal.kind == "user"
    attrs: dict[str, object] = {
        "id": principal.id,
        "tenant": attr_ref("Tenant", principal.tenant),
        "roles": list(roles),
    }
    if is_user:
        attrs["scopes"] = list(principal.scopes)
    role_type = ROLE_TYPE_OF_KIND[principal.kind]
    return json.dumps(
        {
            "uid": uid("User" if is_user else "App", principal.id),
            "attrs": attrs,
            "parents": [uid(role_type, r) for r in roles],
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


def context_json(facts: Facts, wanted: frozenset[str] | None = None) -> str:
    """The Cedar context as JSON. ``wanted`` limits it to the attributes the policies read (Cedar
    parses every attribute on every call); None gives all of them. Written by hand: this runs on
    every decision-cache miss and ``json.dumps`` of a dict costs more than the string joins."""
    parts = ['{"purpose":{"__entity":{"type":"Purpose","id":', json.dumps(facts.purpose), "}}"]
    if wanted is None or "actor_kind" in wanted:
        parts.append(',"actor_kind":"human"' if facts.principal.kind == "user" else ',"actor_kind":"automated"')
    if wanted is None or "time" in wanted:
        parts.append(f',"time":{int(facts.time)}')
    if facts.recipient is not None and (wanted is None or "recipient" in wanted):
        parts.append(',"recipient":' + json.dumps(ref("Recipient", facts.recipient)))
    if facts.consent is not None and (wanted is None or "consent" in wanted):
        parts.append(',"consent":' + json.dumps(consent_value(facts.consent)))
    if facts.body and (wanted is None or "body" in wanted):
        parts.append(',"body":' + json.dumps(dict(facts.body)))
    if facts.record is not None and (wanted is None or "record" in wanted):
        record: dict[str, object] = dict(facts.record)
        if "tenant" in record:  # an entity in the schema (RecordFacts.tenant: Tenant)
            record["tenant"] = ref("Tenant", str(record["tenant"]))
        parts.append(',"record":' + json.dumps(record))
    parts.append("}")
    return "".join(parts)


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
