"""Privacy manifests: what each data category may be processed for, sent to, and kept for.

People write them in ``policies/manifests/*.toml``::

    [manifest]
    name = "base"
    source = "contract section 4, Reference role model"

    [recipients.salesforce]
    in = ["crm"]                      # recipient groups, themselves recipients

    [categories."user.contact"]
    purposes = ["essential.service", "sales"]
    recipients = ["crm"]
    retention_days = 3650

    [categories."user.financial.credit_card"]
    inherit = false                   # do not take the parent's purposes and recipients
    purposes = ["essential.service.payment_processing"]

A category's effective purposes and recipients are its own plus (unless ``inherit = false``) its
parent's effective ones; its retention is its own or its nearest ancestor's. A category nobody
declared anything for, directly or through an ancestor, allows no purpose at all (fail closed).
Several files may declare the same category: their purposes and recipients are united, the shortest
retention wins and ``inherit = false`` in any of them holds.

They compile to the ``allowed_purposes``, ``recipients`` and ``retention_days`` attributes of the
``DataCategory`` entities, and, per route, of the resource (what is allowed for *every* category of
the route: Cedar has no "for all" over a set, so the intersection is computed here, once per route).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from gateway.authz.errors import PolicyError, read_bundle_text
from gateway.authz.taxonomy import Taxonomy

RECIPIENT = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")


@dataclass(frozen=True, slots=True)
class CategoryRules:
    purposes: frozenset[str]  # closed downwards: every allowed purpose key, descendants included
    recipients: frozenset[str]  # closed downwards over recipient groups
    retention_days: int | None


@dataclass(frozen=True, slots=True)
class AllowedFacts:
    """What is allowed for every one of a set of categories, as the minimal keys Cedar needs."""

    purposes: tuple[str, ...]
    recipients: tuple[str, ...]
    retention_days: int | None


@dataclass(slots=True)
class _Declared:
    purposes: set[str] = field(default_factory=set)
    recipients: set[str] = field(default_factory=set)
    retention_days: int | None = None
    inherit: bool = True


@dataclass(frozen=True, slots=True)
class Manifests:
    taxonomy: Taxonomy
    categories: Mapping[str, CategoryRules]
    recipient_groups: Mapping[str, tuple[str, ...]]  # recipient -> every group it is in, transitively
    recipient_members: Mapping[str, frozenset[str]]  # group -> itself and every member, transitively
    files: tuple[str, ...]

    def minimal_recipients(self, names: Iterable[str]) -> tuple[str, ...]:
        chosen = set(names)
        return tuple(sorted(r for r in chosen if not any(g in chosen for g in self.recipient_groups.get(r, ()))))

    def allowed_for_all(self, categories: Iterable[str]) -> AllowedFacts:
        purposes: frozenset[str] | None = None
        recipients: frozenset[str] | None = None
        retention: int | None = None
        for key in categories:
            rules = self.categories[key]
            purposes = rules.purposes if purposes is None else purposes & rules.purposes
            recipients = rules.recipients if recipients is None else recipients & rules.recipients
            if rules.retention_days is not None:
                retention = rules.retention_days if retention is None else min(retention, rules.retention_days)
        return AllowedFacts(
            self.taxonomy.purposes.minimal(purposes or ()),
            self.minimal_recipients(recipients or ()),
            retention,
        )

    def category_facts(self, key: str) -> AllowedFacts:
        return self.allowed_for_all((key,))


def _line_of(lines: list[str], needle: str) -> int:
    for number, line in enumerate(lines, 1):
        if needle in line:
            return number
    return 1


def _strings(value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError("expected a list of strings")
    return list(value)


def load_manifests(directory: Path, taxonomy: Taxonomy) -> Manifests:
    files = sorted(directory.glob("*.toml")) if directory.is_dir() else []
    declared: dict[str, _Declared] = {}
    groups_of: dict[str, set[str]] = {}
    problems: list[str] = []
    for path in files:
        try:
            text = read_bundle_text(path, "the manifest")
        except PolicyError as exc:
            problems.extend(exc.diagnostics)
            continue
        lines = text.splitlines()
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            problems.append(f"{path}:{getattr(exc, 'lineno', 1)}: TOML syntax: {exc}")
            continue
        unknown = set(doc) - {"manifest", "recipients", "categories"}
        if unknown:
            problems.append(f"{path}:1: unknown top-level keys: {', '.join(sorted(unknown))}")
        for name, spec in (doc.get("recipients") or {}).items():
            line = _line_of(lines, f"[recipients.{name}]")
            if not RECIPIENT.fullmatch(name) or not isinstance(spec, dict) or set(spec) - {"in", "description"}:
                problems.append(f"{path}:{line}: recipient {name!r}: lower-case name, keys 'in' and 'description'")
                continue
            try:
                parents = _strings(spec.get("in", []))
            except ValueError as exc:
                problems.append(f"{path}:{line}: recipient {name!r}: in: {exc}")
                continue
            for parent in parents:
                if not RECIPIENT.fullmatch(parent):
                    problems.append(f"{path}:{line}: recipient group {parent!r} is not a lower-case name")
            groups_of.setdefault(name, set()).update(parents)
        for key, spec in (doc.get("categories") or {}).items():
            line = _line_of(lines, f'"{key}"')
            where = f"{path}:{line}: category {key!r}"
            if key not in taxonomy.categories:
                problems.append(f"{where}: not a data category of the taxonomy")
                continue
            if not isinstance(spec, dict):
                problems.append(f"{where}: must be a table")
                continue
            unknown_keys = set(spec) - {"purposes", "recipients", "retention_days", "inherit", "note"}
            if unknown_keys:
                problems.append(f"{where}: unknown keys {', '.join(sorted(unknown_keys))}")
                continue
            entry = declared.setdefault(key, _Declared())
            try:
                purposes = _strings(spec.get("purposes", []))
                recipients = _strings(spec.get("recipients", []))
            except ValueError as exc:
                problems.append(f"{where}: {exc}")
                continue
            for purpose in purposes:
                if purpose not in taxonomy.purposes:
                    problems.append(f"{where}: purpose {purpose!r} is not a data use of the taxonomy")
            for recipient in recipients:
                if not RECIPIENT.fullmatch(recipient):
                    problems.append(f"{where}: recipient {recipient!r} is not a lower-case name")
            entry.purposes.update(p for p in purposes if p in taxonomy.purposes)
            entry.recipients.update(recipients)
            retention = spec.get("retention_days")
            if retention is not None:
                if not isinstance(retention, int) or isinstance(retention, bool) or retention < 0:
                    problems.append(f"{where}: retention_days must be a non-negative integer")
                else:
                    entry.retention_days = (
                        retention if entry.retention_days is None else min(entry.retention_days, retention)
                    )
            inherit = spec.get("inherit", True)
            if not isinstance(inherit, bool):
                problems.append(f"{where}: inherit must be true or false")
            elif not inherit:
                entry.inherit = False
    if problems:
        raise PolicyError(*problems)

    # Recipient groups: close transitively, refusing cycles.
    all_recipients = set(groups_of) | {g for gs in groups_of.values() for g in gs}
    for entry in declared.values():
        all_recipients |= entry.recipients
    ancestors: dict[str, tuple[str, ...]] = {}
    for name in sorted(all_recipients):
        seen: list[str] = []
        stack = list(groups_of.get(name, ()))
        while stack:
            group = stack.pop()
            if group == name:
                raise PolicyError(f"{directory}:1: recipient {name!r} is (indirectly) its own group")
            if group not in seen:
                seen.append(group)
                stack.extend(groups_of.get(group, ()))
        ancestors[name] = tuple(sorted(seen))
    members: dict[str, set[str]] = {name: {name} for name in all_recipients}
    for name, groups in ancestors.items():
        for group in groups:
            members[group].add(name)
    frozen_members = {k: frozenset(v) for k, v in members.items()}

    def closure(names: Iterable[str]) -> frozenset[str]:
        out: set[str] = set()
        for n in names:
            out |= frozen_members.get(n, frozenset({n}))
        return frozenset(out)

    rules: dict[str, CategoryRules] = {}
    tree = taxonomy.categories
    # Parents before children: ancestors are shorter keys.
    for key in sorted(tree.parents, key=lambda k: len(tree.ancestors[k])):
        declaration = declared.get(key)
        parent_key = tree.parents[key]
        inherited = rules[parent_key] if parent_key is not None else CategoryRules(frozenset(), frozenset(), None)
        if declaration is None:
            rules[key] = inherited
            continue
        own_purposes = taxonomy.purposes.closure(declaration.purposes)
        own_recipients = closure(declaration.recipients)
        if declaration.inherit:
            own_purposes |= inherited.purposes
            own_recipients |= inherited.recipients
        retention = declaration.retention_days if declaration.retention_days is not None else inherited.retention_days
        rules[key] = CategoryRules(own_purposes, own_recipients, retention)
    return Manifests(
        taxonomy=taxonomy,
        categories=MappingProxyType(rules),
        recipient_groups=MappingProxyType(ancestors),
        recipient_members=MappingProxyType(frozen_members),
        files=tuple(str(f) for f in files),
    )
