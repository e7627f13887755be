"""Loading, validating and slicing the Cedar policy set.

Every ``*.cedar`` file under the policies directory is split into its policies (with line numbers),
validated strictly against the schema, and converted to Cedar's JSON form, re-keyed by each policy's
``@id`` so Cedar's ``reasons`` carry our ids. Each policy must carry ``@id`` (unique), ``@source``
("file, heading") and ``@clause`` (the rule it enforces, quoted briefly).

Cedar evaluates every policy of a set on every request (about 1 us each), so the set is sliced by
(action, resource type): a slice holds the policies whose scope can match that pair, plus every
policy whose action or resource scope is unconstrained. Slicing never changes a decision: a policy
left out of a slice has a scope that cannot match the requests evaluated against it.

Size: loading, the scope analysis and the slice index share the parsed policy form; split, each
half would have to re-export it.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cedarpy

from gateway.authz.cedarsource import Chunk, SchemaShape, split_statements
from gateway.authz.errors import PolicyError, read_bundle_text
from gateway.authz.lru import LRU
from gateway.authz.partial import Known, may_apply
from gateway.authz.roles import ROLE_TYPES

REQUIRED_ANNOTATIONS = ("id", "source", "clause")
#: An optional ``@reason("retention")`` on a forbid: the machine code its refusals carry (default "policy").
REASON_CODE = re.compile(r"[a-z][a-z_]{0,31}")
_REASONS: dict[tuple[str, str, str], dict[str, str]] = {}


@dataclass(frozen=True, slots=True)
class Policy:
    id: str
    effect: str  # "permit" | "forbid"
    file: str
    line: int
    source: str  # @source: "file, heading"
    clause: str  # @clause
    annotations: Mapping[str, str]
    est: Mapping[str, Any]  # Cedar JSON form
    actions: frozenset[str] | None  # None: any action
    resource_types: frozenset[str] | None  # None: any resource type
    context_attrs: frozenset[str]  # context attributes read; "*" if the whole context is used
    principal_types: frozenset[str] | None  # None: any principal type
    principal_roles: frozenset[str] | None  # None: any; else the principal must hold one of these roles
    reads_resource_id: bool  # whether the resource's identity (its uid or its `id`) can matter

    @property
    def uses_time(self) -> bool:
        return "time" in self.context_attrs or "*" in self.context_attrs

    def reason(self) -> dict[str, str]:
        """The contract's ``{"policy", "source", "clause"}`` for this policy (a shared dict: read only)."""
        return _REASONS.setdefault(
            (self.id, self.source, self.clause),
            {"policy": self.id, "source": self.source, "clause": self.clause},
        )


@dataclass(frozen=True, slots=True)
class Slice:
    """The policies that can apply to one (action, resource type, principal type, roles), parsed once."""

    policies: tuple[Policy, ...]
    handle: cedarpy.PolicySet | None  # None when no policy applies (the answer is default deny)
    uses_time: bool
    reads_resource_id: bool
    context_attrs: frozenset[str] | None  # what the policies read of the context; None: all of it


def _context_attrs(node: Any, found: set[str]) -> None:
    if isinstance(node, dict):
        for op in (".", "has"):
            inner = node.get(op)
            if isinstance(inner, dict) and inner.get("left") == {"Var": "context"}:
                found.add(str(inner.get("attr")))
                for key, value in inner.items():
                    if key != "left":
                        _context_attrs(value, found)
                return
        if node.get("Var") == "context":
            found.add("*")
            return
        for value in node.values():
            _context_attrs(value, found)
    elif isinstance(node, list):
        for value in node:
            _context_attrs(value, found)


def _action_scope(scope: Mapping[str, Any], shape: SchemaShape) -> frozenset[str] | None:
    op = scope.get("op")
    if op == "All":
        return None
    if op == "==":
        return frozenset({scope["entity"]["id"]})
    if op == "in":
        entities = scope["entities"] if "entities" in scope else [scope["entity"]]
        out: set[str] = set()
        for entity in entities:
            members = shape.action_members.get(entity["id"])
            if members is None:
                return None  # unknown to the slicer: keep the policy in every slice
            out |= members
        return frozenset(out)
    return None


def _resource_scope(scope: Mapping[str, Any], shape: SchemaShape) -> frozenset[str] | None:
    op = scope.get("op")
    if op == "is":
        return frozenset({scope["entity_type"]})
    if op == "==":
        return frozenset({scope["entity"]["type"]})
    if op == "in" and "entity" in scope:
        members = shape.type_members.get(scope["entity"]["type"])
        return members if members is not None else None
    return None


def _condition_types(expr: Any, var: str) -> frozenset[str] | None:
    """Types ``var`` must have for a condition to hold: ``var is A || var is B``, and ``&&`` of such."""
    if not isinstance(expr, dict) or len(expr) != 1:
        return None
    op, arg = next(iter(expr.items()))
    if not isinstance(arg, dict):
        return None
    if op == "is" and arg.get("left") == {"Var": var}:
        return frozenset({str(arg["entity_type"])})
    if op == "||":
        left, right = _condition_types(arg.get("left"), var), _condition_types(arg.get("right"), var)
        return None if left is None or right is None else left | right
    if op == "&&":
        left, right = _condition_types(arg.get("left"), var), _condition_types(arg.get("right"), var)
        if left is None:
            return right
        return left if right is None else left & right
    return None


def _narrow_by_conditions(types: frozenset[str] | None, conditions: Any, var: str) -> frozenset[str] | None:
    for condition in conditions or []:
        if condition.get("kind") != "when":
            continue
        found = _condition_types(condition.get("body"), var)
        if found is not None:
            types = found if types is None else types & found
    return types


def _condition_roles(expr: Any) -> frozenset[str] | None:
    """Roles one of which the principal must hold for a condition to hold:
    ``principal in EmployeeRole::"A" || principal in EmployeeRole::"B"``, and ``&&`` of such."""
    if not isinstance(expr, dict) or len(expr) != 1:
        return None
    op, arg = next(iter(expr.items()))
    if not isinstance(arg, dict):
        return None
    if op == "in" and arg.get("left") == {"Var": "principal"}:
        right = arg.get("right")
        value = right.get("Value") if isinstance(right, dict) else None
        entity = value.get("__entity") if isinstance(value, dict) else None
        if isinstance(entity, dict) and entity.get("type") in ROLE_TYPES:
            return frozenset({str(entity["id"])})
        return None
    if op == "||":
        left, right_roles = _condition_roles(arg.get("left")), _condition_roles(arg.get("right"))
        return None if left is None or right_roles is None else left | right_roles
    if op == "&&":
        # Each side is a necessary condition on its own; a principal holds several roles, so the two
        # sets cannot be intersected. Either one is a sound filter: take the narrower.
        left, right_roles = _condition_roles(arg.get("left")), _condition_roles(arg.get("right"))
        return _narrower(left, right_roles)
    return None


def _narrower(a: frozenset[str] | None, b: frozenset[str] | None) -> frozenset[str] | None:
    if a is None:
        return b
    if b is None:
        return a
    return a if len(a) <= len(b) else b


def _narrow_roles(roles: frozenset[str] | None, conditions: Any) -> frozenset[str] | None:
    for condition in conditions or []:
        if condition.get("kind") != "when":
            continue
        roles = _narrower(roles, _condition_roles(condition.get("body")))
    return roles


def _principal_scope(scope: Mapping[str, Any]) -> tuple[frozenset[str] | None, frozenset[str] | None]:
    """(principal types, required roles) of a principal scope; None where unconstrained."""
    op = scope.get("op")
    if op == "is":
        target = scope.get("in")
        roles = frozenset({target["id"]}) if isinstance(target, dict) and target.get("type") in ROLE_TYPES else None
        return frozenset({scope["entity_type"]}), roles
    if op == "==":
        return frozenset({scope["entity"]["type"]}), None
    if op == "in" and "entity" in scope and scope["entity"].get("type") in ROLE_TYPES:
        return None, frozenset({scope["entity"]["id"]})
    return None, None


def _reads_resource_id(est: Mapping[str, Any]) -> bool:
    """Whether the resource's identity can matter: its uid in the scope, or ``resource.id``, or
    ``resource`` used as a value (compared, passed to ``in``) rather than only read from."""
    scope = est.get("resource", {})
    if scope.get("op") not in ("All", "is") or "in" in scope:
        return True

    def walk(node: Any) -> bool:
        if isinstance(node, dict):
            for op in (".", "has"):
                inner = node.get(op)
                if isinstance(inner, dict) and inner.get("left") == {"Var": "resource"}:
                    return inner.get("attr") == "id"
            if node.get("Var") == "resource":
                return True
            test = node.get("is")
            if isinstance(test, dict) and test.get("left") == {"Var": "resource"}:
                return "in" in test  # a type test alone does not look at identity
            return any(walk(v) for v in node.values())
        if isinstance(node, list):
            return any(walk(v) for v in node)
        return False

    return walk(est.get("conditions", []))


@dataclass(frozen=True, slots=True)
class LoadedPolicies:
    policies: tuple[Policy, ...]
    by_id: Mapping[str, Policy]
    files: tuple[str, ...]
    digest: str


def _annotations(est: Mapping[str, Any]) -> dict[str, str]:
    raw = est.get("annotations") or {}
    return {str(k): str(v) for k, v in raw.items()}


def load_policies(directory: Path, schema: cedarpy.Schema, shape: SchemaShape) -> LoadedPolicies:
    """Read and validate every ``*.cedar`` file under ``directory``; ``PolicyError`` lists every problem."""
    files = sorted(p for p in directory.rglob("*.cedar") if p.is_file())
    problems: list[str] = []
    policies: list[Policy] = []
    by_id: dict[str, Policy] = {}
    digest = hashlib.sha256()
    for path in files:
        try:
            text = read_bundle_text(path, "the policy file")
        except PolicyError as exc:
            problems.extend(exc.diagnostics)
            continue
        digest.update(str(path.relative_to(directory)).encode() + b"\0" + text.encode() + b"\0")
        chunks = split_statements(text)
        file_policies = _load_file(path, text, chunks, schema, shape, problems)
        for policy in file_policies:
            other = by_id.get(policy.id)
            if other is not None:
                problems.append(
                    f"{policy.file}:{policy.line}: @id {policy.id!r} already used at {other.file}:{other.line}"
                )
                continue
            by_id[policy.id] = policy
            policies.append(policy)
    if problems:
        raise PolicyError(*problems)
    return LoadedPolicies(tuple(policies), by_id, tuple(str(f) for f in files), digest.hexdigest())


def _load_file(
    path: Path,
    text: str,
    chunks: list[Chunk],
    schema: cedarpy.Schema,
    shape: SchemaShape,
    problems: list[str],
) -> list[Policy]:
    try:
        est_doc = json.loads(cedarpy.policies_to_json_str(text))
    except ValueError as exc:
        # No position in Cedar's parse errors: find the first policy that does not parse on its own.
        for chunk in chunks:
            try:
                cedarpy.policies_to_json_str(chunk.text)
            except ValueError as chunk_exc:
                problems.append(f"{path}:{chunk.line}: parse error: {chunk_exc}")
                break
        else:
            problems.append(f"{path}:1: parse error: {exc}")
        return []
    if est_doc.get("templates"):
        problems.append(f"{path}:1: templates (?principal / ?resource slots) are not supported")
        return []
    statics: dict[str, Any] = est_doc.get("staticPolicies", {})
    if len(statics) != len(chunks):
        problems.append(f"{path}:1: found {len(statics)} policies but {len(chunks)} statements")
        return []
    result = cedarpy.validate_policies(text, schema)
    for error in result.errors:
        index = _position(error.policy_id)
        line = chunks[index].line if index is not None and index < len(chunks) else 1
        problems.append(f"{path}:{line}: {error.error}")
    if not result.validation_passed:
        if not result.errors:
            problems.append(f"{path}:1: the policies do not validate against the schema")
        return []
    loaded: list[Policy] = []
    for index, chunk in enumerate(chunks):
        est = statics.get(f"policy{index}")
        if est is None:
            problems.append(f"{path}:{chunk.line}: could not map the statement to a parsed policy")
            continue
        annotations = _annotations(est)
        missing = [name for name in REQUIRED_ANNOTATIONS if not annotations.get(name, "").strip()]
        if missing:
            problems.append(f"{path}:{chunk.line}: policy lacks {', '.join('@' + m for m in missing)}")
            continue
        if "reason" in annotations and not REASON_CODE.fullmatch(annotations["reason"]):
            problems.append(f'{path}:{chunk.line}: @reason must be a short code such as "retention" ([a-z_], 1-32)')
            continue
        attrs: set[str] = set()
        _context_attrs(est.get("conditions", []), attrs)
        principal_types, principal_roles = _principal_scope(est["principal"])
        loaded.append(
            Policy(
                id=annotations["id"],
                effect=est["effect"],
                file=str(path),
                line=chunk.line,
                source=annotations["source"],
                clause=annotations["clause"],
                annotations=annotations,
                est=est,
                actions=_action_scope(est["action"], shape),
                resource_types=_narrow_by_conditions(
                    _resource_scope(est["resource"], shape), est.get("conditions"), "resource"
                ),
                context_attrs=frozenset(attrs),
                principal_types=_narrow_by_conditions(principal_types, est.get("conditions"), "principal"),
                principal_roles=_narrow_roles(principal_roles, est.get("conditions")),
                reads_resource_id=_reads_resource_id(est),
            )
        )
    return loaded


def _position(policy_id: str) -> int | None:
    if policy_id.startswith("policy") and policy_id[6:].isdigit():
        return int(policy_id[6:])
    return None


def build_policy_set(policies: Iterable[Policy]) -> cedarpy.PolicySet:
    """A pre-parsed handle whose policy ids are the ``@id`` annotations."""
    statics = {p.id: p.est for p in policies}
    return cedarpy.PolicySet.from_json_str(
        json.dumps({"staticPolicies": statics, "templates": {}, "templateLinks": []})
    )


def _union_attrs(policies: Iterable[Policy]) -> frozenset[str] | None:
    out: set[str] = set()
    for policy in policies:
        if "*" in policy.context_attrs:
            return None
        out |= policy.context_attrs
    return frozenset(out)


class PolicyIndex:
    """Slices by (action, resource type, principal type, roles), built on first use and kept (bounded).

    A policy is left out of a slice only when its scope (or a top-level ``is`` test of its ``when``
    condition) cannot match: another action, another resource type, another principal type, or a
    ``principal in EmployeeRole::"X"`` (or ``ServiceRole``) scope for a principal that does not hold X
    (roles are the principal's only parents); or when a condition is settled by the slice's known
    facts (``partial.py``: the purpose, the route's categories, the roles). Identical subsets share one parsed handle.
    """

    def __init__(self, loaded: LoadedPolicies, capacity: int = 4096) -> None:
        self.loaded = loaded
        self._slices: LRU[tuple[object, ...], Slice] = LRU(capacity)
        self._handles: dict[tuple[str, ...], Slice] = {}

    def slice(
        self,
        action: str,
        resource_type: str,
        principal_type: str,
        roles: tuple[str, ...],
        *,
        purpose: str | None = None,
        purposes: frozenset[str] | None = None,
        categories: frozenset[str] | None = None,
        scopes: tuple[str, ...] | None = None,
        record_facts: frozenset[str] | None = None,
    ) -> Slice:
        """The policies that can apply. ``purpose`` (with ``purposes``, itself and its ancestors) and
        ``categories`` (the route's, with ancestors) narrow further when given."""
        key = (action, resource_type, principal_type, roles, purpose, categories, scopes, record_facts)
        found = self._slices.get(key)
        if found is None:
            known = Known(
                action, resource_type, principal_type, frozenset(roles), purposes, categories,
                frozenset(scopes) if scopes is not None else None, record_facts,
            )  # fmt: skip
            found = self._build(known)
            self._slices.put(key, found)
        return found

    def _build(self, known: Known) -> Slice:
        action, resource_type, principal_type, roles = (
            known.action,
            known.resource_type,
            known.principal_type,
            known.roles,
        )
        chosen = tuple(
            p
            for p in self.loaded.policies
            if (p.actions is None or action in p.actions)
            and (p.resource_types is None or resource_type in p.resource_types)
            and (p.principal_types is None or principal_type in p.principal_types)
            and (p.principal_roles is None or not p.principal_roles.isdisjoint(roles))
            and may_apply(p.est.get("conditions"), known)
        )
        ids = tuple(p.id for p in chosen)
        shared = self._handles.get(ids)
        if shared is not None:
            return shared
        built = Slice(
            policies=chosen,
            handle=build_policy_set(chosen) if chosen else None,
            uses_time=any(p.uses_time for p in chosen),
            reads_resource_id=any(p.reads_resource_id for p in chosen),
            context_attrs=_union_attrs(chosen),
        )
        if len(self._handles) < 4 * max(1, self._slices.capacity):
            self._handles[ids] = built
        return built

    @property
    def slice_count(self) -> int:
        return len(self._slices)
