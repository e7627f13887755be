"""Deciding, before Cedar runs, that a policy cannot apply to a slice of requests.

Some facts are fixed for a whole class of requests: the action, the resource type and the route's
data categories (the route map fixes them), the principal's type and roles, and the declared purpose.
A ``when`` clause that is false, or an ``unless`` clause that is true, on those facts alone means the
policy never applies to any request of the class, so the slice for that class leaves it out.

The evaluator is three-valued (True, False, None = depends on something else) and understands only
the few shapes that matter: ``context.purpose in <literal purposes>``, ``principal in <literal roles>``,
``principal is T``, ``resource is T``, ``action == <literal>``, ``context.actor_kind == <literal>``,
``principal.scopes.isEmpty()``, ``resource.categories.contains(<literal>)`` and ``containsAny``,
``context has record`` and ``context.record has <fact>`` (the route map fixes which facts a route's
records can carry), combined with ``&&``, ``||`` and ``!``. Anything else is None, so a policy it
cannot judge stays in the slice. Policies are validated against the schema, so the parts it skips
cannot fail at run time on the entities the gateway builds; a property test checks that the sliced
answer equals the answer of the whole set.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.authz.roles import ROLE_TYPES


@dataclass(frozen=True, slots=True)
class Known:
    action: str
    resource_type: str
    principal_type: str
    roles: frozenset[str]
    purposes: frozenset[str] | None  # the declared purpose and its ancestors; None: not known
    categories: frozenset[str] | None  # the route's categories and their ancestors; None: not known
    scopes: frozenset[str] | None = None  # the principal's delegated scopes (users); None: not known
    record_facts: frozenset[str] | None = None  # what the route can put in context.record; None: not known


def _literal_entities(expr: Any) -> list[tuple[str, str]] | None:
    """``(type, id)`` of an entity literal or a set of entity literals; None for anything else."""
    if not isinstance(expr, dict):
        return None
    value = expr.get("Value")
    if isinstance(value, dict) and isinstance(value.get("__entity"), dict):
        entity = value["__entity"]
        return [(str(entity.get("type")), str(entity.get("id")))]
    items = expr.get("Set")
    if isinstance(items, list):
        out: list[tuple[str, str]] = []
        for item in items:
            found = _literal_entities(item)
            if found is None or len(found) != 1:
                return None
            out.extend(found)
        return out
    return None


def _is_context_attr(expr: Any, attr: str) -> bool:
    inner = expr.get(".") if isinstance(expr, dict) else None
    return isinstance(inner, dict) and inner.get("left") == {"Var": "context"} and inner.get("attr") == attr


def _is_resource_attr(expr: Any, attr: str) -> bool:
    inner = expr.get(".") if isinstance(expr, dict) else None
    return isinstance(inner, dict) and inner.get("left") == {"Var": "resource"} and inner.get("attr") == attr


def evaluate(expr: Any, known: Known) -> bool | None:
    if not isinstance(expr, dict) or len(expr) != 1:
        return None
    op, arg = next(iter(expr.items()))
    if op == "Value" and isinstance(arg, bool):
        return arg
    if not isinstance(arg, dict):
        return None
    if op == "&&":
        left = evaluate(arg.get("left"), known)
        if left is False:
            return False
        right = evaluate(arg.get("right"), known)
        if right is False:
            return False
        return True if left is True and right is True else None
    if op == "||":
        left = evaluate(arg.get("left"), known)
        if left is True:
            return True
        right = evaluate(arg.get("right"), known)
        if right is True:
            return True
        return False if left is False and right is False else None
    if op == "!":
        inner = evaluate(arg.get("arg"), known)
        return None if inner is None else not inner
    if op == "is":
        if "in" in arg:
            return False if _type_mismatch(arg, known) else None
        return not _type_mismatch(arg, known) if _typed_var(arg) else None
    if op == "in":
        return _in(arg, known)
    if op == "==":
        found = _action_equals(arg, known)
        return found if found is not None else _actor_kind_equals(arg, known)
    if op == "has":
        return _has_record_fact(arg, known)
    if op == "isEmpty" and _is_principal_attr(arg.get("arg"), "scopes"):
        return None if known.scopes is None else not known.scopes
    if op in ("contains", "containsAny") and _is_resource_attr(arg.get("left"), "categories"):
        if known.categories is None:
            return None
        literals = _literal_entities(arg.get("right"))
        if literals is None or (op == "contains" and len(literals) != 1):
            return None
        return any(kind == "DataCategory" and key in known.categories for kind, key in literals)
    return None


def _has_record_fact(arg: Mapping[str, Any], known: Known) -> bool | None:
    """``context has record`` / ``context.record has X``: False when the route reads no such fact
    (neither decision of the request can carry it); otherwise it depends on which decision it is."""
    if known.record_facts is None:
        return None
    left, attr = arg.get("left"), arg.get("attr")
    if left == {"Var": "context"} and attr == "record":
        return False if not known.record_facts else None
    if _is_context_attr(left, "record"):
        return False if attr not in known.record_facts else None
    return None


def _is_principal_attr(expr: Any, attr: str) -> bool:
    inner = expr.get(".") if isinstance(expr, dict) else None
    return isinstance(inner, dict) and inner.get("left") == {"Var": "principal"} and inner.get("attr") == attr


def _actor_kind_equals(arg: Mapping[str, Any], known: Known) -> bool | None:
    """``context.actor_kind == "human"``: the actor kind follows from the principal's type."""
    left, right = arg.get("left"), arg.get("right")
    if _is_context_attr(right, "actor_kind"):
        left, right = right, left
    if not _is_context_attr(left, "actor_kind") or not isinstance(right, dict):
        return None
    value = right.get("Value")
    if not isinstance(value, str):
        return None
    return value == ("human" if known.principal_type == "User" else "automated")


def _typed_var(arg: Mapping[str, Any]) -> bool:
    return arg.get("left") in ({"Var": "principal"}, {"Var": "resource"})


def _type_mismatch(arg: Mapping[str, Any], known: Known) -> bool:
    if arg.get("left") == {"Var": "principal"}:
        return arg.get("entity_type") != known.principal_type
    if arg.get("left") == {"Var": "resource"}:
        return arg.get("entity_type") != known.resource_type
    return False


def _in(arg: Mapping[str, Any], known: Known) -> bool | None:
    literals = _literal_entities(arg.get("right"))
    if literals is None:
        return None
    left = arg.get("left")
    if _is_context_attr(left, "purpose"):
        if known.purposes is None or any(kind != "Purpose" for kind, _ in literals):
            return None
        return any(key in known.purposes for _, key in literals)
    if left == {"Var": "principal"}:
        # A principal's only parents are its roles, and roles have no parents.
        if all(kind in ROLE_TYPES for kind, _ in literals):
            return any(key in known.roles for _, key in literals)
        return None
    if left == {"Var": "action"} and all(kind == "Action" for kind, _ in literals):
        return None  # action groups: left to Cedar (the scope already sliced by action)
    return None


def _action_equals(arg: Mapping[str, Any], known: Known) -> bool | None:
    left, right = arg.get("left"), arg.get("right")
    if right == {"Var": "action"}:
        left, right = right, left
    if left != {"Var": "action"}:
        return None
    literals = _literal_entities(right)
    if literals is None or len(literals) != 1 or literals[0][0] != "Action":
        return None
    return literals[0][1] == known.action


def may_apply(conditions: Any, known: Known) -> bool:
    """False when some ``when`` clause is false or some ``unless`` clause is true on ``known`` alone."""
    for condition in conditions or []:
        verdict = evaluate(condition.get("body"), known)
        if condition.get("kind") == "when" and verdict is False:
            return False
        if condition.get("kind") == "unless" and verdict is True:
            return False
    return True
