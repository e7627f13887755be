"""The purpose (data use) and data-category trees, read from ``policies/taxonomy/`` as data.

fideslang's default taxonomy is kept as JSON (fideslang itself is not a dependency), and the
project's own children are in ``project.toml``. A key is known only if it is listed: an unknown child
of a known purpose is unknown, never rounded up to its parent.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from gateway.authz.errors import PolicyError, read_bundle_text


@dataclass(frozen=True, slots=True)
class Tree:
    """One taxonomy: every key with its parent; ancestors and descendants precomputed."""

    parents: Mapping[str, str | None]
    names: Mapping[str, str]
    ancestors: Mapping[str, tuple[str, ...]]  # nearest first, self excluded
    descendants: Mapping[str, frozenset[str]]  # self included

    def __contains__(self, key: object) -> bool:
        return key in self.parents

    @classmethod
    def build(cls, entries: Iterable[tuple[str, str | None, str]], what: str, where: str) -> Tree:
        parents: dict[str, str | None] = {}
        names: dict[str, str] = {}
        for key, parent, name in entries:
            if key in parents:
                raise PolicyError(f"{where}: {what} {key!r} is defined twice")
            if parent is not None and parent not in parents:
                raise PolicyError(f"{where}: {what} {key!r}: parent {parent!r} is not defined before it")
            if parent is not None and not key.startswith(parent + "."):
                raise PolicyError(f"{where}: {what} {key!r} must extend its parent key {parent!r}")
            parents[key] = parent
            names[key] = name
        ancestors: dict[str, tuple[str, ...]] = {}
        for key in parents:
            chain: list[str] = []
            parent = parents[key]
            while parent is not None:
                chain.append(parent)
                parent = parents[parent]
            ancestors[key] = tuple(chain)
        descendants: dict[str, set[str]] = {key: {key} for key in parents}
        for key, found in ancestors.items():
            for ancestor in found:
                descendants[ancestor].add(key)
        return cls(
            MappingProxyType(parents),
            MappingProxyType(names),
            MappingProxyType(ancestors),
            MappingProxyType({k: frozenset(v) for k, v in descendants.items()}),
        )

    def minimal(self, keys: Iterable[str]) -> tuple[str, ...]:
        """The keys none of whose ancestors is also among them, sorted: the roots of a closed set."""
        chosen = set(keys)
        return tuple(sorted(k for k in chosen if not any(a in chosen for a in self.ancestors[k])))

    def closure(self, keys: Iterable[str]) -> frozenset[str]:
        """Every key at or below one of ``keys``."""
        out: set[str] = set()
        for key in keys:
            out |= self.descendants[key]
        return frozenset(out)


@dataclass(frozen=True, slots=True)
class Taxonomy:
    purposes: Tree
    categories: Tree


def _fideslang(path: Path) -> list[tuple[str, str | None, str]]:
    try:
        doc: Any = json.loads(path.read_text(encoding="utf-8"))
        items = doc["items"]
        entries = [(i["fides_key"], i.get("parent_key"), i.get("name", "")) for i in items]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise PolicyError(f"{path}:1: cannot read the taxonomy: {exc}") from None
    # The source lists a few children before their parents; order them parents-first.
    known = {key for key, _, _ in entries}
    ordered: list[tuple[str, str | None, str]] = []
    placed: set[str] = set()
    pending = list(entries)
    while pending:
        progress = False
        for entry in list(pending):
            key, parent, _ = entry
            if parent is None or parent in placed or parent not in known:
                ordered.append(entry)
                placed.add(key)
                pending.remove(entry)
                progress = True
        if not progress:
            raise PolicyError(f"{path}:1: the taxonomy has a cycle")
    return ordered


def load_taxonomy(directory: Path) -> Taxonomy:
    uses = _fideslang(directory / "fideslang_data_uses.json")
    categories = _fideslang(directory / "fideslang_data_categories.json")
    project = directory / "project.toml"
    if project.exists():
        try:
            doc = tomllib.loads(read_bundle_text(project, "the taxonomy extension"))
        except tomllib.TOMLDecodeError as exc:
            raise PolicyError(f"{project}:{getattr(exc, 'lineno', 1)}: TOML syntax: {exc}") from None
        for table, target in (("data_use", uses), ("data_category", categories)):
            for item in doc.get(table, []):
                key, parent = item.get("fides_key"), item.get("parent_key")
                if not isinstance(key, str) or not isinstance(parent, str):
                    raise PolicyError(f"{project}:1: each [[{table}]] needs fides_key and parent_key")
                target.append((key, parent, str(item.get("name", ""))))
    return Taxonomy(
        purposes=Tree.build(uses, "purpose", str(directory)),
        categories=Tree.build(categories, "data category", str(directory)),
    )
