"""The policy engine: one loaded, validated policy bundle and the decisions made with it.

A bundle is everything a decision depends on besides the request: schema, policies (sliced),
taxonomy, manifests and route maps. It is immutable; a reload builds a new bundle (with new, empty
caches) and swaps it in, so a decision never mixes two policy versions and caches need no
invalidation.

``decide`` is synchronous and pure over its ``Facts``: the authorizer resolves facts first (async,
over HTTP) and the policy tests and ``policy explain`` pass them inline.

Size: one class, the bundle: loading and cross-checking its parts (schema, policies, role model,
route maps, taxonomy, manifests) and deciding with them and their caches. Split in two, the caches'
invalidation (a new bundle on reload) would have to be shared by two objects.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cedarpy

from gateway.adapters.routemap import Route, RouteMapError, RouteMatch, RouteTable
from gateway.authz.cedarsource import SchemaShape, schema_shape
from gateway.authz.decision import (
    DEFAULT_DENY,
    MaskRule,
    Verdict,
    default_deny_reason,
    fail_closed_reason,
)
from gateway.authz.entities import EntityBuilder, context_json, field_requests, request_dict
from gateway.authz.errors import PolicyError, read_bundle_text
from gateway.authz.facts import Facts
from gateway.authz.lru import LRU
from gateway.authz.manifests import Manifests, load_manifests
from gateway.authz.policyset import LoadedPolicies, PolicyIndex, Slice, load_policies
from gateway.authz.roles import ROLE_KIND_MISMATCH, ROLES_FILE, RoleModel, load_roles, role_literals
from gateway.authz.taxonomy import Taxonomy, load_taxonomy
from gateway.identity.principal import Principal

logger = logging.getLogger("gateway.authz")

SCHEMA_FILE = "schema.cedarschema"
FIELD_ACTION = "read_field"
FIELD_RESOURCE = "DataCategory"


@dataclass(frozen=True, slots=True)
class BundleFiles:
    """The files a bundle was read from (watched for hot reload)."""

    policies_dir: Path
    route_maps: tuple[Path, ...]

    def snapshot(self) -> dict[str, float]:
        """Path -> modification time of every input file (a missing file shows as -1)."""
        paths: list[Path] = [self.policies_dir / SCHEMA_FILE, *self.route_maps]
        for pattern in ("*.cedar", "manifests/*.toml", "taxonomy/*"):
            paths.extend(self.policies_dir.rglob(pattern) if pattern == "*.cedar" else self.policies_dir.glob(pattern))
        out: dict[str, float] = {}
        for path in paths:
            try:
                out[str(path)] = path.stat().st_mtime_ns / 1e9
            except OSError:
                out[str(path)] = -1.0
        return out


class PolicyEngine:
    def __init__(
        self,
        *,
        files: BundleFiles,
        schema_text: str,
        schema: cedarpy.Schema,
        policies: LoadedPolicies,
        taxonomy: Taxonomy,
        manifests: Manifests,
        roles: RoleModel,
        routes: RouteTable,
        digest: str,
        decision_cache_size: int,
        entity_cache_size: int,
        validate_requests: bool,
        every_purpose: bool = False,
    ) -> None:
        self.files = files
        self.schema_text = schema_text
        self.schema = schema
        self.policies = policies
        self.taxonomy = taxonomy
        self.manifests = manifests
        self.roles = roles
        self.routes = routes
        self.policy_hash = digest
        self.index = PolicyIndex(policies)
        self.entities = EntityBuilder(manifests, roles, every_purpose=every_purpose)
        self.decisions: LRU[tuple[object, ...], Verdict] = LRU(decision_cache_size)
        # whole decisions of repeated requests (gateway/authz/authorizer.py ``DecisionMemo``)
        self.decision_memo: LRU[tuple[object, ...], Any] = LRU(decision_cache_size)
        self.entity_handles: LRU[tuple[object, ...], cedarpy.Entities] = LRU(entity_cache_size)
        # (field key, category) -> (hiding policies or None,); a 1-tuple so a cached "visible" is not a miss
        self.field_decisions: LRU[tuple[object, ...], tuple[tuple[str, ...] | None]] = LRU(decision_cache_size)
        self._verdicts: dict[tuple[bool, tuple[str, ...]], Verdict] = {}
        self.route_slices: LRU[tuple[object, ...], tuple[Slice, Slice | None]] = LRU(4096)
        # (method, path, raw path) -> (the route it maps to, or None: unmapped or ambiguous,); a 1-tuple so
        # a remembered "unmapped" is not a miss. Part of the bundle: a reload starts with an empty one.
        self.route_matches: LRU[tuple[str, str, bytes | str | None], tuple[RouteMatch | None]] = LRU(4096)
        self.route_masks: LRU[tuple[object, ...], tuple[MaskRule, ...]] = LRU(decision_cache_size)
        self.validate_requests = validate_requests
        self._request_schema = schema if validate_requests else None

    # --- loading --------------------------------------------------------------------------------

    @classmethod
    def load(
        cls,
        policies_dir: str | Path,
        route_maps: Sequence[str | Path],
        *,
        decision_cache_size: int = 65536,
        entity_cache_size: int = 4096,
        validate_requests: bool = False,
        every_purpose: bool = False,
    ) -> PolicyEngine:
        """Read and check everything; ``PolicyError`` with every ``file:line`` diagnostic on failure.

        ``every_purpose``: each request's entity store holds every purpose of the taxonomy, not only the
        request's, so one store serves all purposes of a principal and record. Cedar answers the same
        (an entity no request names changes no answer; a test compares both). For ``policy matrix``,
        which asks every purpose of every combination: its stores are parsed once per combination
        instead of once per purpose (56 purposes; a store with all of them costs 2.6x one with one).
        Not for traffic: a first request would pay the bigger store."""
        directory = Path(policies_dir)
        if not directory.is_dir():
            problem = "does not exist" if not directory.exists() else "is not a directory"
            raise PolicyError(f"{directory}:1: the policy directory {problem}")
        files = BundleFiles(directory, tuple(Path(p) for p in route_maps))
        schema_path = directory / SCHEMA_FILE
        schema_text = read_bundle_text(schema_path, "the schema")
        try:
            schema = cedarpy.Schema.from_str(schema_text)
        except ValueError as exc:
            raise PolicyError(f"{schema_path}:{_schema_error_line(schema_text, str(exc))}: {exc}") from None
        shape = schema_shape(schema_text)
        taxonomy = load_taxonomy(directory / "taxonomy")
        manifests = load_manifests(directory / "manifests", taxonomy)
        roles = load_roles(directory / "taxonomy")
        policies = load_policies(directory, schema, shape)
        _check_role_literals(policies, roles)
        try:
            routes = RouteTable.load(files.route_maps)
        except RouteMapError as exc:
            raise PolicyError(str(exc)) from None
        _check_routes(routes, taxonomy, shape)
        digest = hashlib.sha256()
        digest.update(schema_text.encode())
        digest.update(policies.digest.encode())
        # Content only (paths relative to the bundle), so the same set hashes the same on every machine
        # and in its last-good copy: the hash in an audit record names a policy set, not a directory.
        inputs: list[Path] = [*sorted((directory / "taxonomy").glob("*")), *map(Path, manifests.files)]
        try:
            for path in inputs:
                digest.update(str(path.relative_to(directory)).encode() + b"\0" + path.read_bytes())
            for path in files.route_maps:
                digest.update(b"route map\0" + path.read_bytes())
        except OSError as exc:
            raise PolicyError(f"{exc.filename}:1: cannot read: {exc.strerror}") from None
        engine = cls(
            files=files,
            schema_text=schema_text,
            schema=schema,
            policies=policies,
            taxonomy=taxonomy,
            manifests=manifests,
            roles=roles,
            routes=routes,
            digest=digest.hexdigest()[:16],
            decision_cache_size=decision_cache_size,
            entity_cache_size=entity_cache_size,
            validate_requests=validate_requests,
            every_purpose=every_purpose,
        )
        engine._check_route_entities()
        return engine

    def _check_route_entities(self) -> None:
        """Build every route's static entities now: errors surface at load, not per request."""
        problems: list[str] = []
        for route in self.routes.routes:
            try:
                self.entities.route_entities(route)
                if route.field_categories:
                    entities = ",".join(self.entities.category_entity(c) for c in route.field_categories)
                    cedarpy.Entities.from_json_str("[" + entities + "]", self.schema)
            except (ValueError, KeyError) as exc:
                problems.append(f"{route.source}: route {route.id}: {exc}")
        if problems:
            raise PolicyError(*problems)

    # --- deciding -------------------------------------------------------------------------------

    def decide(self, facts: Facts) -> tuple[Verdict, bool]:
        """The verdict for ``facts`` and whether it came from the cache. Never raises: errors deny."""
        try:
            return self._decide(facts)
        except Exception as exc:  # fail closed on anything unexpected
            logger.exception("policy evaluation failed")
            reason = fail_closed_reason(f"evaluation failed: {type(exc).__name__}")
            return Verdict(False, 403, "evaluation_error", "the policy evaluation failed; denied", (), (reason,)), False

    def _decide(self, facts: Facts) -> tuple[Verdict, bool]:
        route = facts.route
        principal = facts.principal
        mismatched = self.roles.check(principal.kind, principal.roles).mismatched
        if mismatched:  # a role of the other kind of caller: refused whole, before any policy
            return self._role_mismatch(principal.kind, mismatched), False
        main, fields = self._slices(facts)
        uses_time = main.uses_time or (fields is not None and fields.uses_time)
        # The decision depends on the resource id only if a policy can look at it; otherwise every
        # record of the route shares one decision (and one entity handle).
        resource_id = facts.resource_id if main.reads_resource_id else None
        pkey = principal_key(principal)
        tkey = facts.tenant_facts.key()
        key = (
            pkey,
            route.id,
            resource_id,
            facts.tenant,
            facts.owner,
            facts.purpose,
            facts.recipient,
            facts.consent,
            facts.body,
            tkey,
            facts.time if uses_time else None,
            facts.record,
        )
        cached = self.decisions.get(key)
        if cached is not None:
            return cached, True
        if main.handle is None:  # no policy can apply: Cedar would deny by default
            verdict = Verdict(
                False,
                403,
                "default_deny",
                "no policy permits this request",
                (DEFAULT_DENY,),
                (default_deny_reason(),),
            )
            self.decisions.put(key, verdict)
            return verdict, False
        entity_key = (
            pkey,
            route.id,
            resource_id,
            facts.tenant,
            facts.owner,
            None if self.entities.every_purpose else facts.purpose,
            facts.recipient,
            tkey,
        )
        entities = self.entity_handles.get(entity_key)
        if entities is None:
            # Built with the schema: validates what we built and adds the action hierarchy (groups).
            entities = cedarpy.Entities.from_json_str(
                self.entities.entities_json(facts, resource_id if resource_id is not None else ""),
                self.schema,
            )
            self.entity_handles.put(entity_key, entities)
        context = context_json(facts, None if self.validate_requests else main.context_attrs)
        request = request_dict(facts, route.action, resource_id if resource_id is not None else "", context)
        result = cedarpy.is_authorized(request, main.handle, entities, self._request_schema)
        verdict = self._interpret(result)
        if verdict.allowed and fields is not None:
            field_key = (
                pkey,
                facts.purpose,
                facts.recipient,
                facts.consent,
                facts.body,
                tkey,
                facts.time if fields.uses_time else None,
            )
            masks = self._masks(facts, fields, field_key)
            verdict = Verdict(True, 200, "ok", verdict.detail, verdict.policy_ids, verdict.reasons, masks)
        self.decisions.put(key, verdict)
        return verdict, False

    def _slices(self, facts: Facts) -> tuple[Slice, Slice | None]:
        """The policy slices (request, fields) that can decide ``facts``, cached per request shape."""
        route, principal = facts.route, facts.principal
        slices_key = (route.id, principal.kind, principal.roles, principal.scopes, facts.purpose)
        slices = self.route_slices.get(slices_key)
        if slices is None:
            slices = self._slices_for(route, principal, facts.purpose)
            self.route_slices.put(slices_key, slices)
        return slices

    def time_dependent(self, facts: Facts) -> bool:
        """Whether a policy that can decide ``facts`` reads the time (so a decision holds for its second
        only). Never raises: True on error."""
        try:
            main, fields = self._slices(facts)
            return main.uses_time or (fields is not None and fields.uses_time)
        except Exception:
            logger.exception("slicing failed while asking whether a policy reads the time")
            return True

    def reads_record(self, facts: Facts) -> bool:
        """Whether a policy that can decide ``facts`` looks at ``context.record`` (so the record's facts
        must be read from the upstream before its answer is passed on). Never raises: True on error."""
        try:
            attrs = self._slices(facts)[0].context_attrs
            return attrs is None or "record" in attrs
        except Exception:  # fail closed: when in doubt, read the facts
            logger.exception("slicing failed while asking whether a policy reads the record")
            return True

    def _role_mismatch(self, kind: str, mismatched: tuple[str, ...]) -> Verdict:
        key = (False, (ROLE_KIND_MISMATCH, kind, *mismatched))
        verdict = self._verdicts.get(key)
        if verdict is None:
            verdict = Verdict(
                False,
                403,
                "role_kind_mismatch",
                "the token carries a role that its kind of caller may not hold",
                (ROLE_KIND_MISMATCH,),
                (self.roles.mismatch_reason(kind, mismatched),),
            )
            if len(self._verdicts) < 65536:
                self._verdicts[key] = verdict
        return verdict

    def _slices_for(self, route: Route, principal: Principal, purpose: str) -> tuple[Slice, Slice | None]:
        principal_type = "User" if principal.kind == "user" else "App"
        roles = self.roles.check(principal.kind, principal.roles).admitted
        purposes = frozenset((purpose, *self.taxonomy.purposes.ancestors.get(purpose, ())))
        categories = self.entities.route_entities(route).category_keys
        scopes = principal.scopes
        record_facts = frozenset(rule.name for rule in route.response_facts)
        main = self.index.slice(
            route.action, route.resource_type, principal_type, roles,
            purpose=purpose, purposes=purposes, categories=categories, scopes=scopes, record_facts=record_facts,
        )  # fmt: skip
        fields = None
        if route.fields:
            fields = self.index.slice(
                FIELD_ACTION, FIELD_RESOURCE, principal_type, roles,
                purpose=purpose, purposes=purposes, scopes=scopes,
            )  # fmt: skip
        return main, fields

    def _interpret(self, result: cedarpy.AuthzResult) -> Verdict:
        diagnostics = result.diagnostics
        errors = diagnostics.errors
        decision = result.decision
        if errors or decision is cedarpy.Decision.NoDecision:
            logger.warning("policy evaluation errors (denied): %s", "; ".join(str(e) for e in errors))
            reasons = tuple(fail_closed_reason(f"evaluation error: {e}") for e in errors[:5])
            return Verdict(
                False,
                403,
                "evaluation_error",
                "a policy could not be evaluated; denied",
                (),
                reasons or (fail_closed_reason("the request could not be evaluated"),),
            )
        allowed = decision is cedarpy.Decision.Allow
        ids = tuple(sorted(diagnostics.reasons))
        key = (allowed, ids)
        verdict = self._verdicts.get(key)  # a handful of distinct outcomes: built once each
        if verdict is None:
            by_id = self.policies.by_id
            if allowed:
                verdict = Verdict(True, 200, "ok", "permitted", ids, tuple(by_id[i].reason() for i in ids))
            elif ids:
                # A forbid may name its own reason code (@reason), e.g. "retention", for the audit trail.
                code = next((c for i in ids if (c := by_id[i].annotations.get("reason"))), "policy")
                verdict = Verdict(False, 403, code, "forbidden by policy", ids, tuple(by_id[i].reason() for i in ids))
            else:
                verdict = Verdict(
                    False,
                    403,
                    "default_deny",
                    "no policy permits this request",
                    (DEFAULT_DENY,),
                    (default_deny_reason(),),
                )
            if len(self._verdicts) < 65536:
                self._verdicts[key] = verdict
        return verdict

    def _masks(self, facts: Facts, fields: Slice, field_key: tuple[object, ...]) -> tuple[MaskRule, ...]:
        """Which of the route's response fields the caller may not see.

        Decided once per distinct field category and cached per (principal, purpose, ..., category),
        so a category already decided for this caller costs a dictionary look-up, whatever the route;
        the categories still unknown are decided together in one batched Cedar call over one small
        entity store (principal, purpose, those categories).
        """
        route = facts.route
        route_key = (field_key, route.id)
        masks = self.route_masks.get(route_key)
        if masks is not None:
            return masks
        outcome: dict[str, tuple[str, ...] | None] = {}  # category -> hiding policies; None = visible
        unknown: list[str] = []
        for category in route.field_categories:
            found = self.field_decisions.get((field_key, category))
            if found is None:
                unknown.append(category)
            else:
                outcome[category] = found[0]
        if unknown:
            decided: list[tuple[str, ...] | None]
            if fields.handle is None:
                decided = [(DEFAULT_DENY,)] * len(unknown)
            else:
                entities = cedarpy.Entities.from_json_str(
                    self.entities.field_entities_json(facts, unknown), self.schema
                )
                context = context_json(facts, None if self.validate_requests else fields.context_attrs)
                results = cedarpy.is_authorized_batch(
                    field_requests(facts, unknown, context), fields.handle, entities, self._request_schema
                )
                decided = [_field_outcome(r) for r in results]
            for category, denied in zip(unknown, decided, strict=True):
                outcome[category] = denied
                self.field_decisions.put((field_key, category), (denied,))
        masks = tuple(
            MaskRule(rule.pointer, rule.category, rule.mask, denied)
            for rule in route.fields
            if (denied := outcome[rule.category]) is not None
        )
        self.route_masks.put(route_key, masks)
        return masks

    # --- introspection --------------------------------------------------------------------------

    def route(self, route_id: str) -> Route:
        return self.routes.by_id[route_id]

    def cache_stats(self) -> dict[str, int]:
        return {
            "decisions": len(self.decisions),
            "decision_hits": self.decisions.hits,
            "decision_misses": self.decisions.misses,
            "entity_handles": len(self.entity_handles),
            "slices": self.index.slice_count,
        }


def _schema_error_line(text: str, message: str) -> int:
    """Best effort: the first line mentioning the name the error quotes."""
    for marker in ("`", ": "):
        if marker in message:
            name = message.rsplit(marker, 2)[-2 if marker == "`" else -1].strip()
            if name:
                for number, line in enumerate(text.splitlines(), 1):
                    if name in line and not line.lstrip().startswith("//"):
                        return number
    return 1


def _field_outcome(result: cedarpy.AuthzResult) -> tuple[str, ...] | None:
    """None when the field may be shown, else the policies that hide it (fail closed on errors)."""
    if result.diagnostics.errors or result.decision == cedarpy.Decision.NoDecision:
        return ("fail-closed",)
    if result.allowed:
        return None
    return tuple(sorted(result.diagnostics.reasons)) or (DEFAULT_DENY,)


def principal_key(principal: Principal) -> tuple[object, ...]:
    """What the entities say about a principal (not its token's expiry or client)."""
    return (principal.kind, principal.id, principal.tenant, principal.roles, principal.scopes)


def _check_role_literals(policies: LoadedPolicies, roles: RoleModel) -> None:
    """Every role a policy names is in the role model, under the entity type of its kind: a typo, or
    an employee role written as a service role, would otherwise match nobody without a word."""
    problems: list[str] = []
    for policy in policies.policies:
        for entity_type, name in sorted(set(role_literals(policy.est))):
            listed = roles.type_of(name)
            if listed is None:
                problems.append(
                    f"{policy.file}:{policy.line}: policy {policy.id!r} names {entity_type}::{name!r}, "
                    f"which {ROLES_FILE} does not list"
                )
            elif listed != entity_type:
                problems.append(
                    f"{policy.file}:{policy.line}: policy {policy.id!r} names {entity_type}::{name!r}, but "
                    f"{ROLES_FILE} lists {name!r} as a{'n employee' if listed == 'EmployeeRole' else ' service'} "
                    f"role ({listed}::{name!r})"
                )
    if problems:
        raise PolicyError(*problems)


def _check_routes(routes: RouteTable, taxonomy: Taxonomy, shape: SchemaShape) -> None:
    problems: list[str] = []
    for route in routes.routes:
        if route.action not in shape.actions or route.action == FIELD_ACTION:
            problems.append(
                f"{route.source}: route {route.id}: action {route.action!r} is not a record action of the schema"
            )
        if route.resource_type not in shape.type_members:
            problems.append(
                f"{route.source}: route {route.id}: resource type {route.resource_type!r} is not in the schema"
            )
        for category in (*route.categories, *(f.category for f in route.fields)):
            if category not in taxonomy.categories:
                problems.append(
                    f"{route.source}: route {route.id}: {category!r} is not a data category of the taxonomy"
                )
        for rule in route.lift:
            if rule.name not in LIFTABLE:
                problems.append(
                    f"{route.source}: route {route.id}: lift {rule.name!r} is not a member of "
                    f"the schema's context.body ({', '.join(sorted(LIFTABLE))})"
                )
        for fact in route.response_facts:
            if RECORD_FACTS.get(fact.name) != fact.kind:
                known = ", ".join(f"{name} ({kind})" for name, kind in sorted(RECORD_FACTS.items()))
                problems.append(
                    f"{route.source}: route {route.id}: response fact {fact.name!r} of kind {fact.kind!r} is not "
                    f"a member of the schema's context.record: {known}"
                )
    if problems:
        raise PolicyError(*problems)


#: Members of ``context.body`` in the schema: a route may lift only these.
LIFTABLE = frozenset({"email"})
#: Members of ``context.record`` in the schema, with the kind of fact each is read as.
RECORD_FACTS = {"age_days": "age", "marketing_opt_out": "bool", "tenant": "tenant"}
