"""Route maps: which action on which resource an upstream request is, declared in TOML.

A route map is read once (and again on reload) into immutable ``Route`` objects; matching a request
is a dictionary look-up by method and segment count followed by a walk over a handful of compiled
templates. The format is documented in ``gateway/adapters/README.md``.

Size: the format's reader (a ``file:line`` error for each mistake a route map's author can make, and
the cross-checks between a route's parameters, facts and lifted fields) and the matcher that runs on
what it builds. The checks are most of the file, and they belong beside the types they check.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal
from urllib.parse import quote

from gateway.adapters.jsonpointer import parse_member, render
from gateway.adapters.pathnorm import PathRejected, canonical_path, normalise_path
from gateway.adapters.subjects import Subjects, parse_subjects

MaskStyle = Literal["last4", "redact"]
LiftKind = Literal["email", "string"]
FactKind = Literal["age", "bool", "tenant"]

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"})
REQUIREMENTS = frozenset({"recipient", "consent"})
RESOLVABLE = frozenset({"optouts", "consent_owner"})
PRINCIPAL_TENANT = "principal"
MAX_BODY_BYTES_LIMIT = 1024 * 1024

PARAM_KINDS: Mapping[str, str] = MappingProxyType(
    {
        # Canonical lower-case GUID: an upper-case variant is a different string to the upstream.
        "uuid": r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
        # A record id: starts with a letter or digit, so never a dot segment.
        "token": r"[A-Za-z0-9][A-Za-z0-9_.~:@+-]{0,127}",
        # A mailbox owner: "me" (the caller) or a user's object id.
        "mailbox": r"me|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
    }
)
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_ROUTE_ID = re.compile(r"[a-z0-9][a-z0-9_.-]{0,127}")
_IDENT = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
_CATEGORY = re.compile(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*")
_SETTING_KEY = re.compile(r"[a-z][a-z0-9_]{0,63}")


class RouteMapError(ValueError):
    """A route map that cannot be used; the message starts with ``file:line:``."""


@dataclass(frozen=True, slots=True)
class Pointer:
    """A JSON pointer (RFC 6901) whose ``*`` tokens stand for every item of an array."""

    text: str
    tokens: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> Pointer:
        """``PointerError`` (a ``ValueError``) unless ``text`` names a member (``jsonpointer.parse_member``)."""
        return cls(text, parse_member(text))


@dataclass(frozen=True, slots=True)
class FieldRule:
    """A response field and its data category; ``mask`` is how it is hidden when it may not be read."""

    pointer: Pointer
    category: str
    mask: MaskStyle = "redact"


@dataclass(frozen=True, slots=True)
class LiftRule:
    """A request-body field copied into the Cedar context as ``context.body.<name>``."""

    name: str
    pointer: Pointer
    kind: LiftKind = "string"
    required: bool = True
    max_length: int = 320


@dataclass(frozen=True, slots=True)
class FactRule:
    """A fact about the record, read from a JSON document into ``context.record.<name>``.

    The document is the upstream's answer (checked after it answered), or the one ``facts_from``
    names (fetched before forwarding). ``kind`` says how the value is read: ``age`` takes a time
    (RFC 3339 with an offset, or seconds since the epoch) and gives the record's age in whole days
    at the moment of the decision; ``bool`` takes a JSON boolean; ``tenant`` takes the id of the
    tenant the record belongs to (a string, compared lower-cased), for answers that can hold records
    of several tenants. A ``*`` in the pointer reads the
    fact from every item of an array (each item is decided on its own). ``required``: a document
    without the fact (or with a value of another type) is refused, never passed on unchecked.
    """

    name: str
    pointer: Pointer
    kind: FactKind
    required: bool = True


@dataclass(frozen=True, slots=True)
class Segment:
    literal: str | None  # a literal segment, or None for a parameter
    param: str | None
    pattern: re.Pattern[str] | None


@dataclass(frozen=True, slots=True)
class Route:
    id: str
    method: str
    template: str
    segments: tuple[Segment, ...]
    action: str
    resource_type: str
    tenant_param: str | None  # None: the resource belongs to the caller's tenant
    id_param: str | None
    owner_param: str | None
    categories: tuple[str, ...]
    fields: tuple[FieldRule, ...]
    lift: tuple[LiftRule, ...]
    max_body_bytes: int
    require: frozenset[str]
    resolve: frozenset[str]
    source: str  # "file:line" of the route's declaration
    map_name: str
    response_facts: tuple[FactRule, ...] = ()
    facts_items: Pointer | None = None  # the array whose items the facts are read from (a "*" pointer)
    facts_from: str | None = None  # a GET path template: read the facts from it before forwarding
    tenant_retention: str | None = None  # the key of the tenant settings' retention_days for these records
    subjects: Subjects = field(default_factory=Subjects)  # whose data the records are (adapters/subjects.py)

    @property
    def field_categories(self) -> tuple[str, ...]:
        return tuple(sorted({f.category for f in self.fields}))

    def facts_path(self, params: Mapping[str, str]) -> str:
        """``facts_from`` with the request's path parameters (each percent-encoded as one segment)."""
        path = self.facts_from or ""
        for name, value in params.items():
            path = path.replace("{" + name + "}", quote(value, safe=""))
        return path


@dataclass(frozen=True, slots=True)
class RouteMatch:
    """A request mapped to a route: the canonical path and the decoded path parameters."""

    route: Route
    path: str
    params: Mapping[str, str]

    @property
    def template(self) -> str:
        return self.route.template

    @property
    def tenant(self) -> str | None:
        """The tenant named by the path, or None when the route serves the caller's own tenant."""
        param = self.route.tenant_param
        return self.params[param] if param else None

    @property
    def resource_id(self) -> str:
        param = self.route.id_param
        return self.params[param] if param else ""

    @property
    def owner(self) -> str | None:
        """The raw owner parameter (``me`` included), or None when the route names no owner."""
        param = self.route.owner_param
        return self.params[param] if param else None


@dataclass(slots=True)
class _Source:
    path: str
    lines: list[str] = field(default_factory=list)

    def line_of(self, needle: str, start: int = 0) -> int:
        for number, line in enumerate(self.lines[start:], start + 1):
            if needle in line:
                return number
        return 1

    def error(self, line: int, message: str) -> RouteMapError:
        return RouteMapError(f"{self.path}:{line}: {message}")


def _str_list(value: Any, what: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{what} must be a list of strings")
    return list(value)


def _compile_template(template: str, params: Mapping[str, str]) -> tuple[Segment, ...]:
    if not template.startswith("/") or "//" in template or (template.endswith("/") and template != "/"):
        raise ValueError(f"path {template!r} must start with '/' and have no empty segment")
    segments: list[Segment] = []
    seen: set[str] = set()
    for part in template[1:].split("/") if template != "/" else []:
        if part.startswith("{") and part.endswith("}"):
            name = part[1:-1]
            if not _NAME.fullmatch(name):
                raise ValueError(f"bad parameter name {name!r}")
            if name in seen:
                raise ValueError(f"parameter {{{name}}} appears twice")
            seen.add(name)
            kind = params.get(name, "token")
            source = PARAM_KINDS.get(kind)
            if source is None:
                if not kind.startswith("re:"):
                    raise ValueError(f"parameter {{{name}}}: unknown kind {kind!r} (uuid, token, mailbox, re:...)")
                source = kind[3:]
            segments.append(Segment(None, name, re.compile(source)))
        else:
            try:
                decoded = normalise_path("/" + part)
            except PathRejected as exc:
                raise ValueError(f"literal segment {part!r}: {exc.reason}") from None
            if decoded != (part,):
                raise ValueError(f"literal segment {part!r} must be written decoded")
            segments.append(Segment(part, None, None))
    return tuple(segments)


def _field_rules(raw: Any) -> tuple[FieldRule, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ValueError("fields must be a list of {pointer, category, mask} tables")
    rules: list[FieldRule] = []
    for item in raw:
        if not isinstance(item, dict) or set(item) - {"pointer", "category", "mask"}:
            raise ValueError("each field is a table with pointer, category and optional mask")
        category = item.get("category")
        if not isinstance(category, str) or not _CATEGORY.fullmatch(category):
            raise ValueError(f"field category {category!r} is not a dotted category key")
        mask = item.get("mask", "redact")
        if mask not in ("last4", "redact"):
            raise ValueError(f"field mask {mask!r}: expected 'last4' or 'redact'")
        rules.append(FieldRule(Pointer.parse(str(item.get("pointer", ""))), category, mask))
    pointers = [r.pointer.text for r in rules]
    if len(set(pointers)) != len(pointers):
        raise ValueError("a field pointer is listed twice")
    return tuple(rules)


def _lift_rules(raw: Any) -> tuple[LiftRule, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ValueError("lift must be a list of {name, pointer, kind, required, max_length} tables")
    rules: list[LiftRule] = []
    for item in raw:
        if not isinstance(item, dict) or set(item) - {"name", "pointer", "kind", "required", "max_length"}:
            raise ValueError("each lift entry is a table with name, pointer, kind, required, max_length")
        name = item.get("name")
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ValueError(f"lift name {name!r} is not an identifier")
        kind = item.get("kind", "string")
        if kind not in ("email", "string"):
            raise ValueError(f"lift kind {kind!r}: expected 'email' or 'string'")
        required = item.get("required", True)
        max_length = item.get("max_length", 320)
        if not isinstance(required, bool) or not isinstance(max_length, int) or not 0 < max_length <= 4096:
            raise ValueError("lift required must be a boolean and max_length an integer in 1..4096")
        pointer = Pointer.parse(str(item.get("pointer", "")))
        if "*" in pointer.tokens:
            raise ValueError("a lifted field names one value: no '*' in its pointer")
        rules.append(LiftRule(name, pointer, kind, required, max_length))
    return tuple(rules)


def _fact_rules(raw: Any) -> tuple[tuple[FactRule, ...], Pointer | None]:
    """The route's record facts, and the array they are read from when they name array items."""
    if raw is None:
        return (), None
    if not isinstance(raw, list) or not raw:
        raise ValueError("response_facts must be a non-empty list of {name, pointer, kind, required} tables")
    rules: list[FactRule] = []
    for item in raw:
        if not isinstance(item, dict) or set(item) - {"name", "pointer", "kind", "required"}:
            raise ValueError("each response fact is a table with name, pointer, kind and optional required")
        name = item.get("name")
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ValueError(f"response fact name {name!r} is not an identifier")
        kind = item.get("kind")
        if kind not in ("age", "bool", "tenant"):
            raise ValueError(f"response fact kind {kind!r}: expected 'age', 'bool' or 'tenant'")
        required = item.get("required", True)
        if not isinstance(required, bool):
            raise ValueError("response fact required must be a boolean")
        rules.append(FactRule(name, Pointer.parse(str(item.get("pointer", ""))), kind, required))
    names = [r.name for r in rules]
    if len(set(names)) != len(names):
        raise ValueError("a response fact name is listed twice")
    stars = [r.pointer.tokens.count("*") for r in rules]
    if max(stars) > 1:
        raise ValueError("a response fact pointer has at most one '*'")
    if max(stars) == 0:
        return tuple(rules), None
    if min(stars) == 0:
        raise ValueError("response facts are read either from the whole answer or from array items, not both")
    prefixes = {r.pointer.tokens[: r.pointer.tokens.index("*")] for r in rules}
    if len(prefixes) != 1:
        raise ValueError("response facts with '*' must all name items of the same array")
    prefix = prefixes.pop()
    if not prefix or any(r.pointer.tokens[-1] == "*" for r in rules):
        raise ValueError("a '*' response fact names a member of the items of an array inside the answer")
    return tuple(rules), Pointer(render(prefix), prefix)


_ROUTE_KEYS = frozenset(
    {
        "id",
        "method",
        "path",
        "action",
        "resource",
        "tenant",
        "resource_id",
        "owner",
        "categories",
        "fields",
        "lift",
        "max_body_bytes",
        "require",
        "resolve",
        "response_facts",
        "facts_from",
        "tenant_retention",
        "subjects",
    }
)


def _route(item: Any, params: Mapping[str, str], map_name: str, where: str) -> Route:
    if not isinstance(item, dict):
        raise ValueError("each [[route]] must be a table")
    unknown = set(item) - _ROUTE_KEYS
    if unknown:
        raise ValueError(f"unknown keys: {', '.join(sorted(unknown))}")
    for key in ("id", "method", "path", "action", "resource", "tenant"):
        if not isinstance(item.get(key), str):
            raise ValueError(f"'{key}' is required and must be a string")
    route_id, method, template = item["id"], item["method"].upper(), item["path"]
    if not _ROUTE_ID.fullmatch(route_id):
        raise ValueError(f"route id {route_id!r}: lower-case letters, digits, '.', '_' and '-'")
    if method not in METHODS:
        raise ValueError(f"method {item['method']!r} is not one of {', '.join(sorted(METHODS))}")
    if not _IDENT.fullmatch(item["action"]) or not _IDENT.fullmatch(item["resource"]):
        raise ValueError("action and resource must be Cedar identifiers")
    segments = _compile_template(template, params)
    names = {s.param for s in segments if s.param}
    tenant = item["tenant"]
    tenant_param = None if tenant == PRINCIPAL_TENANT else tenant
    for key, value in (
        ("tenant", tenant_param),
        ("resource_id", item.get("resource_id")),
        ("owner", item.get("owner")),
    ):
        if value is not None and value not in names:
            raise ValueError(f"{key} = {value!r} is not a parameter of {template}")
    categories = _str_list(item.get("categories", []), "categories")
    if not categories:
        raise ValueError("categories must name at least one data category")
    for category in categories:
        if not _CATEGORY.fullmatch(category):
            raise ValueError(f"category {category!r} is not a dotted category key")
    lift = _lift_rules(item.get("lift"))
    max_body = item.get("max_body_bytes", 4096 if lift else 0)
    if not isinstance(max_body, int) or not 0 <= max_body <= MAX_BODY_BYTES_LIMIT:
        raise ValueError(f"max_body_bytes must be an integer in 0..{MAX_BODY_BYTES_LIMIT}")
    if lift and max_body == 0:
        raise ValueError("a route that lifts body fields needs max_body_bytes > 0")
    require = frozenset(_str_list(item.get("require", []), "require"))
    if require - REQUIREMENTS:
        raise ValueError(f"require: unknown {sorted(require - REQUIREMENTS)} (known: {sorted(REQUIREMENTS)})")
    resolve = frozenset(_str_list(item.get("resolve", []), "resolve"))
    if resolve - RESOLVABLE:
        raise ValueError(f"resolve: unknown {sorted(resolve - RESOLVABLE)} (known: {sorted(RESOLVABLE)})")
    if "consent_owner" in resolve and not item.get("resource_id"):
        raise ValueError("resolve = ['consent_owner'] needs resource_id naming the consent id parameter")
    response_facts, facts_items = _fact_rules(item.get("response_facts"))
    facts_from = item.get("facts_from")
    if facts_from is not None:
        _check_facts_from(facts_from, names, response_facts, facts_items)
    tenant_retention = item.get("tenant_retention")
    if tenant_retention is not None and (
        not isinstance(tenant_retention, str) or not _SETTING_KEY.fullmatch(tenant_retention)
    ):
        raise ValueError("tenant_retention must name a key of the tenant settings' retention_days (lower case)")
    if tenant_retention is not None and tenant_param is None:
        raise ValueError("tenant_retention needs a tenant parameter: the settings are fetched per tenant")
    subjects = parse_subjects(item.get("subjects"), names, {rule.name for rule in lift})
    return Route(
        id=route_id,
        method=method,
        template=template,
        segments=segments,
        action=item["action"],
        resource_type=item["resource"],
        tenant_param=tenant_param,
        id_param=item.get("resource_id"),
        owner_param=item.get("owner"),
        categories=tuple(categories),
        fields=_field_rules(item.get("fields")),
        lift=lift,
        max_body_bytes=max_body,
        require=require,
        resolve=resolve,
        source=where,
        map_name=map_name,
        response_facts=response_facts,
        facts_items=facts_items,
        facts_from=facts_from,
        tenant_retention=tenant_retention,
        subjects=subjects,
    )


def _check_facts_from(template: Any, names: set[str], facts: tuple[FactRule, ...], items: Pointer | None) -> None:
    if not isinstance(template, str) or not template.startswith("/") or "//" in template:
        raise ValueError("facts_from must be a path starting with '/'")
    if not facts or items is not None:
        raise ValueError("facts_from needs response_facts naming members of one record (no '*')")
    for part in template[1:].split("/"):
        if part.startswith("{") and part.endswith("}"):
            if part[1:-1] not in names:
                raise ValueError(f"facts_from: {part} is not a parameter of the route")
        else:
            try:
                decoded = normalise_path("/" + part) if part and "{" not in part and "}" not in part else None
            except PathRejected as exc:
                raise ValueError(f"facts_from: literal segment {part!r}: {exc.reason}") from None
            if decoded != (part,):
                raise ValueError(f"facts_from: literal segment {part!r} must be written decoded")


def load_route_map(path: str | Path) -> list[Route]:
    """Parse one route-map file; ``RouteMapError`` (``file:line: message``) on any problem."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RouteMapError(f"{path}:1: cannot read the route map: {exc}") from None
    source = _Source(str(path), text.splitlines())
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        line = getattr(exc, "lineno", None) or _line_from_message(str(exc))
        raise source.error(line, f"TOML syntax: {exc}") from None
    unknown = set(doc) - {"map", "params", "route"}
    if unknown:
        raise source.error(1, f"unknown top-level keys: {', '.join(sorted(unknown))}")
    header = doc.get("map", {})
    map_name = header.get("name") if isinstance(header, dict) else None
    if not isinstance(map_name, str) or not map_name:
        raise source.error(source.line_of("[map]"), "[map] needs a name")
    params = doc.get("params", {})
    if not isinstance(params, dict) or not all(isinstance(v, str) for v in params.values()):
        raise source.error(source.line_of("[params]"), "[params] maps parameter names to kinds")
    routes: list[Route] = []
    search_from = 0
    for item in doc.get("route", []):
        route_id = item.get("id") if isinstance(item, dict) else None
        line = source.line_of(f'"{route_id}"', search_from) if route_id else source.line_of("[[route]]", search_from)
        search_from = max(search_from, line)
        try:
            routes.append(_route(item, params, map_name, f"{path}:{line}"))
        except (ValueError, re.error) as exc:
            raise source.error(line, f"route {route_id or '?'}: {exc}") from None
    if not routes:
        raise source.error(1, "no [[route]] entries")
    return routes


def _line_from_message(message: str) -> int:
    found = re.search(r"line (\d+)", message)
    return int(found.group(1)) if found else 1


class RouteTable:
    """All routes of the configured maps, indexed by method and number of segments."""

    def __init__(self, routes: Iterable[Route]) -> None:
        self.routes: tuple[Route, ...] = tuple(routes)
        index: dict[tuple[str, int], list[Route]] = {}
        ids: dict[str, Route] = {}
        shapes: dict[tuple[str, tuple[str | None, ...]], Route] = {}
        for route in self.routes:
            if route.id in ids:
                raise RouteMapError(f"{route.source}: route id {route.id!r} also used at {ids[route.id].source}")
            ids[route.id] = route
            shape = (route.method, tuple(s.literal for s in route.segments))
            if shape in shapes:
                raise RouteMapError(f"{route.source}: {route.method} {route.template} overlaps {shapes[shape].source}")
            shapes[shape] = route
            index.setdefault((route.method, len(route.segments)), []).append(route)
        # Literal segments before parameters, so /messages/send wins over /messages/{id}.
        for candidates in index.values():
            candidates.sort(key=lambda r: tuple(0 if s.literal is not None else 1 for s in r.segments))
        self._index = index
        self.by_id: Mapping[str, Route] = MappingProxyType(ids)

    @classmethod
    def load(cls, paths: Iterable[str | Path]) -> RouteTable:
        routes: list[Route] = []
        for path in paths:
            routes.extend(load_route_map(path))
        return cls(routes)

    def match(self, method: str, raw_path: str | bytes) -> RouteMatch | None:
        """The route for ``method`` and the percent-encoded ``raw_path``; None when unmapped or rejected."""
        try:
            segments = normalise_path(raw_path)
        except PathRejected:
            return None
        return self.match_segments(method, segments)

    def match_segments(self, method: str, segments: tuple[str, ...]) -> RouteMatch | None:
        candidates = self._index.get((method, len(segments)))
        if not candidates:
            return None
        for route in candidates:
            params: dict[str, str] = {}
            for spec, value in zip(route.segments, segments, strict=True):
                if spec.literal is not None:
                    if spec.literal != value:
                        break
                elif spec.pattern is not None and spec.pattern.fullmatch(value) and spec.param:
                    params[spec.param] = value
                else:
                    break
            else:
                return RouteMatch(route, canonical_path(segments), MappingProxyType(params))
        return None
