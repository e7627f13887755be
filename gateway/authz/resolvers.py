"""Entity resolvers: facts that live in the upstream, fetched over HTTP and cached with a TTL.

- tenant settings: ``GET {base}/tenants/{tid}`` -> ``call_recording_enabled``, ``retention_days`` (a table
  of non-negative day counts per kind of record) (404: unknown tenant)
- opt-out list:    ``GET {base}/tenants/{tid}/optouts`` -> ``{"emails": [...]}``
- consent record:  ``GET {base}/consents/{id}`` -> ``{id, subject, tenant, grantee, resources, purpose,
  expires_at}`` (404: no such consent, which is not an error: the request simply has no consent)
- record facts:    ``GET {base}{facts_from}`` (the route map's path, e.g. a call's metadata for its
  recording) -> the facts the route's ``response_facts`` name, kept (not the document) per path and
  rules; 404: no such record (the authorizer refuses). A record's creation time does not change, but
  an opt-out may: like the opt-out lists, a change shows within the TTL.

One shared aiohttp session; concurrent look-ups of the same key share one fetch; caches are bounded.
Failing closed: a timeout, a connection error, a 5xx or an unreadable answer raises
``ResolverError`` and the request is denied. A failed fetch is never cached, so the next request
tries again; a value past its TTL is not served stale.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import aiohttp

from gateway.adapters.routemap import FactRule, Route
from gateway.authz.decide import FactUnavailable
from gateway.authz.emails import canonical_or_folded
from gateway.authz.errors import ResolverError
from gateway.authz.facts import ConsentFacts, TenantFacts
from gateway.authz.lru import LRU
from gateway.authz.recordfacts import FactError, RawFacts, read_facts

logger = logging.getLogger("gateway.authz")

T = TypeVar("T")
MAX_FACT_BYTES = 4 * 1024 * 1024
NEGATIVE_TTL_SECONDS = 1.0


class _Missing:
    """A cached 'not found'."""


MISSING = _Missing()


class TTLCache(Generic[T]):
    """A bounded LRU of values with an expiry, plus single-flight loading."""

    def __init__(self, ttl: float, capacity: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.clock = clock
        self._entries: LRU[str, tuple[float, T | _Missing]] = LRU(capacity)
        self._inflight: dict[str, asyncio.Future[T | _Missing]] = {}

    def clear(self) -> None:
        self._entries.clear()

    async def get(self, key: str, load: Callable[[], Awaitable[T | _Missing]]) -> T | _Missing:
        entry = self._entries.get(key)
        now = self.clock()
        if entry is not None and entry[0] > now:
            return entry[1]
        pending = self._inflight.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[T | _Missing] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            value = await load()
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters (if any) re-raise it themselves
            raise
        finally:
            self._inflight.pop(key, None)
        ttl = NEGATIVE_TTL_SECONDS if isinstance(value, _Missing) else self.ttl
        self._entries.put(key, (self.clock() + min(ttl, self.ttl), value))
        future.set_result(value)
        return value


def _parse_time(value: Any) -> int:
    if not isinstance(value, str):
        raise ValueError("expires_at is not a string")
    return int(datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00")).timestamp())


def parse_consent(doc: Any) -> ConsentFacts:
    if not isinstance(doc, dict):
        raise ValueError("a consent is a JSON object")
    resources = doc.get("resources")
    if not isinstance(resources, list) or not all(isinstance(r, str) for r in resources):
        raise ValueError("consent resources must be a list of strings")
    fields = {k: doc.get(k) for k in ("id", "subject", "tenant", "grantee", "purpose")}
    for name, value in fields.items():
        if not isinstance(value, str) or not value:
            raise ValueError(f"consent {name} must be a non-empty string")
    return ConsentFacts(
        id=str(fields["id"]),
        subject=str(fields["subject"]),
        tenant=str(fields["tenant"]).lower(),
        grantee=str(fields["grantee"]),
        resources=frozenset(resources),
        purpose=str(fields["purpose"]),
        expires_at=_parse_time(doc.get("expires_at")),
    )


class Resolvers:
    def __init__(
        self,
        base_url: str,
        *,
        ttl_seconds: float = 30.0,
        timeout_seconds: float = 2.0,
        capacity: int = 4096,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._session: aiohttp.ClientSession | None = None
        self.settings: TTLCache[dict[str, Any]] = TTLCache(ttl_seconds, capacity)
        self.optout_lists: TTLCache[frozenset[str]] = TTLCache(ttl_seconds, capacity)
        self.consents: TTLCache[ConsentFacts] = TTLCache(ttl_seconds, capacity)
        self.records: TTLCache[RawFacts] = TTLCache(ttl_seconds, capacity)
        self.fetches = 0
        # headers for one read (method, url): the gateway's signed assertion (gateway/assertion.py)
        self.request_headers: Callable[[str, str], dict[str, str]] | None = None

    async def start(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=self.timeout,
                headers={"Accept": "application/json", "User-Agent": "privacy-gateway-resolver"},
            )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def started(self) -> bool:
        return self._session is not None

    async def _fetch(self, path: str, what: str) -> Any:
        """The JSON document at ``path``, MISSING on 404; ResolverError on anything else."""
        session = self._session
        if session is None:
            raise ResolverError(f"{what}: the resolvers are not started")
        self.fetches += 1
        try:
            url = self.base_url + path
            headers = self.request_headers("GET", url) if self.request_headers is not None else None
            async with session.get(url, allow_redirects=False, headers=headers) as response:
                if response.status == 404:
                    return MISSING
                if response.status != 200:
                    raise ResolverError(f"{what}: the upstream answered {response.status}")
                raw = await response.content.read(MAX_FACT_BYTES + 1)
                if len(raw) > MAX_FACT_BYTES:
                    raise ResolverError(f"{what}: the answer is larger than {MAX_FACT_BYTES} bytes")
                try:
                    return json.loads(raw)
                except (UnicodeDecodeError, ValueError, RecursionError):
                    raise ResolverError(f"{what}: the answer is not JSON") from None
        except ResolverError:
            raise
        except TimeoutError:
            raise ResolverError(f"{what}: the upstream did not answer in time") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise ResolverError(f"{what}: cannot reach the upstream ({type(exc).__name__})") from None
        except ValueError:
            raise ResolverError(f"{what}: the upstream's answer is not JSON") from None

    async def tenant_settings(self, tenant: str) -> dict[str, Any] | None:
        """The tenant's settings document, or None when the tenant does not exist."""

        async def load() -> dict[str, Any] | _Missing:
            doc = await self._fetch(f"/tenants/{quote(tenant, safe='')}", "tenant settings")
            if isinstance(doc, _Missing):
                return doc
            if not isinstance(doc, dict) or not isinstance(doc.get("call_recording_enabled", False), bool):
                raise ResolverError("tenant settings: unexpected document")
            retention = doc.get("retention_days", {})
            if not isinstance(retention, dict) or not all(
                isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in retention.values()
            ):
                raise ResolverError("tenant settings: retention_days must map kinds of record to days")
            return doc

        value = await self.settings.get(tenant, load)
        return None if isinstance(value, _Missing) else value

    async def optouts(self, tenant: str) -> frozenset[str] | None:
        """The tenant's opt-out addresses (canonical, as request bodies' addresses are), or None when the
        tenant does not exist."""

        async def load() -> frozenset[str] | _Missing:
            doc = await self._fetch(f"/tenants/{quote(tenant, safe='')}/optouts", "opt-out list")
            if isinstance(doc, _Missing):
                return doc
            emails = doc.get("emails") if isinstance(doc, dict) else doc
            if not isinstance(emails, list) or not all(isinstance(e, str) for e in emails):
                raise ResolverError("opt-out list: unexpected document")
            return frozenset(canonical_or_folded(e) for e in emails)

        value = await self.optout_lists.get(tenant, load)
        return None if isinstance(value, _Missing) else value

    async def consent(self, consent_id: str) -> ConsentFacts | None:
        """The consent record, or None when it does not exist."""

        async def load() -> ConsentFacts | _Missing:
            doc = await self._fetch(f"/consents/{quote(consent_id, safe='')}", "consent record")
            if isinstance(doc, _Missing):
                return doc
            try:
                return parse_consent(doc)
            except ValueError as exc:
                raise ResolverError(f"consent record: {exc}") from None

        value = await self.consents.get(consent_id, load)
        return None if isinstance(value, _Missing) else value

    async def record(self, path: str, rules: tuple[FactRule, ...]) -> RawFacts | None:
        """The facts ``rules`` read from the upstream document at ``path``, or None when it does not exist."""
        key = path + "\0" + ";".join(f"{r.name}={r.pointer.text}:{r.kind}:{r.required}" for r in rules)

        async def load() -> RawFacts | _Missing:
            doc = await self._fetch(path, "record facts")
            if isinstance(doc, _Missing):
                return doc
            try:
                return read_facts(rules, doc)
            except FactError as exc:
                raise ResolverError(f"record facts: {exc}") from None

        value = await self.records.get(key, load)
        return None if isinstance(value, _Missing) else value

    def clear(self) -> None:
        self.settings.clear()
        self.optout_lists.clear()
        self.consents.clear()
        self.records.clear()


class ResolvedFacts:
    """The ``FactSource`` of traffic (``gateway/authz/decide.py``): tenant settings, opt-out lists and
    consents through the resolvers. Any failure to have a fact is ``FactUnavailable`` (the request is
    refused, 403): a ``ResolverError`` says why; anything unexpected is logged and refused too."""

    def __init__(self, resolvers: Resolvers) -> None:
        self.resolvers = resolvers

    async def tenant_facts(self, tenant: str, route: Route) -> TenantFacts:
        try:
            settings = await self.resolvers.tenant_settings(tenant)
            optouts = None
            if "optouts" in route.resolve and settings is not None:
                optouts = await self.resolvers.optouts(tenant)
        except Exception as exc:
            raise _unavailable(exc) from None
        retention = None
        if route.tenant_retention is not None and settings is not None:
            retention = (settings.get("retention_days") or {}).get(route.tenant_retention)
        return TenantFacts(
            tenant=tenant,
            known=settings is not None,
            call_recording_enabled=settings.get("call_recording_enabled") if settings is not None else None,
            optouts=optouts,
            retention_days=retention,
        )

    async def consent(self, consent_id: str) -> ConsentFacts | None:
        try:
            return await self.resolvers.consent(consent_id)
        except Exception as exc:
            raise _unavailable(exc) from None


def _unavailable(exc: Exception) -> FactUnavailable:
    if isinstance(exc, ResolverError):
        logger.warning("resolver failed, denying: %s", exc)
        return FactUnavailable(f"{exc}; denied because the decision cannot be made")
    logger.exception("resolving facts failed, denying", exc_info=exc)
    return FactUnavailable("resolving the facts failed; denied")
