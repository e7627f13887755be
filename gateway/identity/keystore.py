"""Keeps every allowed tenant's signing keys fresh without ever blocking the event loop.

Per tenant: one fetch in flight at a time (callers join it), a periodic refresh, a refresh on an
unknown ``kid`` at most once per cooldown (a miss during the cooldown schedules one for when it ends,
so a client's retry finds the new key), retries with doubling back-off after failures, and the last
good key set kept through any failure: an outage of the authority never removes keys, only a
successful fetch that no longer lists them does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

import aiohttp

from gateway.identity.fetch import FetchError, fetch_json_object
from gateway.identity.keyset import SigningKey, TenantKeys, parse_key_sets, parse_metadata
from gateway.identity.settings import IdentitySettings

log = logging.getLogger(__name__)

SessionFactory = Callable[[], aiohttp.ClientSession]


def default_session() -> aiohttp.ClientSession:
    # trust_env=False: key fetches go to the configured authority only, never via ambient proxy settings.
    return aiohttp.ClientSession(
        trust_env=False,
        headers={"User-Agent": "privacy-gateway-identity"},
        connector=aiohttp.TCPConnector(limit=16),
    )


class TenantKeySource:
    """Discovery documents and key sets of one tenant."""

    def __init__(
        self,
        tenant: str,
        settings: IdentitySettings,
        session: Callable[[], aiohttp.ClientSession],
        on_loaded: Callable[[], None],
    ) -> None:
        self.tenant = tenant
        self._settings = settings
        self._session = session
        self._on_loaded = on_loaded
        self.current: TenantKeys | None = None
        self._inflight: asyncio.Task[bool] | None = None
        self._last_attempt = -float("inf")
        self._deferred: asyncio.TimerHandle | None = None
        self._closed = False

    def _urls(self) -> tuple[str, str]:
        base = f"{self._settings.authority}/{self.tenant}"
        return f"{base}/v2.0/.well-known/openid-configuration", f"{base}/.well-known/openid-configuration"

    async def _fetch(self, url: str) -> dict[str, object]:
        return await fetch_json_object(
            self._session(),
            url,
            max_bytes=self._settings.max_metadata_bytes,
            timeout_seconds=self._settings.http_timeout_seconds,
        )

    async def _load(self) -> TenantKeys:
        v2_url, v1_url = self._urls()
        v2_doc, v1_doc = await asyncio.gather(self._fetch(v2_url), self._fetch(v1_url))
        authority = self._settings.authority
        v2 = parse_metadata(v2_doc, url=v2_url, tenant=self.tenant, authority=authority)
        v1 = parse_metadata(v1_doc, url=v1_url, tenant=self.tenant, authority=authority)
        key_urls = list(dict.fromkeys((v2.jwks_uri, v1.jwks_uri)))
        key_docs = await asyncio.gather(*(self._fetch(url) for url in key_urls))
        keys = parse_key_sets(list(zip(key_urls, key_docs, strict=True)))
        return TenantKeys(
            tenant=self.tenant,
            issuer_templates={"2.0": v2.issuer_template, "1.0": v1.issuer_template},
            keys=keys,
        )

    async def _refresh_once(self) -> bool:
        self._last_attempt = time.monotonic()
        try:
            loaded = await self._load()
        except FetchError as exc:
            kept = "keeping the last good key set" if self.current else "no keys yet"
            log.warning("identity: key refresh for tenant %s failed (%s); %s", self.tenant, exc, kept)
            return False
        except Exception:
            log.exception("identity: key refresh for tenant %s failed unexpectedly", self.tenant)
            return False
        added = loaded.keys.keys() - (self.current.keys.keys() if self.current else set())
        self.current = loaded
        if added:
            log.info("identity: tenant %s now trusts key ids %s", self.tenant, sorted(loaded.keys))
        self._on_loaded()
        return True

    async def refresh(self) -> bool:
        """Fetch now, or join the fetch already in flight. True when it succeeded."""
        if self._closed:
            return False
        task = self._inflight
        if task is None:
            task = asyncio.ensure_future(self._refresh_once())
            self._inflight = task
            task.add_done_callback(self._forget_inflight)
        # shield: a request that gives up (client gone) must not cancel the fetch others are joining.
        return await asyncio.shield(task)

    def _forget_inflight(self, task: asyncio.Task[bool]) -> None:
        if self._inflight is task:
            self._inflight = None

    async def key_after_miss(self, kid: str) -> SigningKey | None:
        """Look ``kid`` up again after a refresh, if the cooldown allows one now."""
        if self._inflight is None:
            wait = self._settings.unknown_kid_cooldown_seconds - (time.monotonic() - self._last_attempt)
            if wait > 0:
                self._schedule_refresh(wait)
                return None
        await self.refresh()
        current = self.current
        return current.keys.get(kid) if current else None

    def _schedule_refresh(self, delay: float) -> None:
        if self._deferred is None and not self._closed:
            self._deferred = asyncio.get_running_loop().call_later(delay, self._run_deferred)

    def _run_deferred(self) -> None:
        self._deferred = None
        if not self._closed:
            task = asyncio.ensure_future(self.refresh())
            task.add_done_callback(_consume_result)

    async def run_periodically(self) -> None:
        settings = self._settings
        interval = settings.refresh_interval_seconds
        retry = min(settings.retry_min_seconds, interval)
        while not self._closed:
            if await self.refresh():
                retry = min(settings.retry_min_seconds, interval)
                await asyncio.sleep(interval)
            else:
                await asyncio.sleep(retry)
                retry = min(retry * 2, settings.retry_max_seconds, interval)

    async def close(self) -> None:
        self._closed = True
        if self._deferred is not None:
            self._deferred.cancel()
            self._deferred = None
        task = self._inflight
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _consume_result(task: asyncio.Future[bool]) -> None:
    if not task.cancelled():
        task.exception()


class KeyStore:
    """The key sources of all allowed tenants and the HTTP session they share."""

    def __init__(self, settings: IdentitySettings, session_factory: SessionFactory | None = None) -> None:
        self._settings = settings
        self._session_factory = session_factory or default_session
        self._http: aiohttp.ClientSession | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._ready = asyncio.Event()
        self.sources = {
            tenant: TenantKeySource(tenant, settings, self._session, self._check_ready)
            for tenant in settings.tenants
        }

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._http = self._session_factory()
        return self._http

    def _check_ready(self) -> None:
        if self.ready:
            self._ready.set()

    @property
    def ready(self) -> bool:
        return all(source.current is not None for source in self.sources.values())

    async def wait_ready(self, timeout: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ready.wait(), timeout)
        return self.ready

    def start(self) -> None:
        if self._tasks:
            return
        self._tasks = [asyncio.ensure_future(source.run_periodically()) for source in self.sources.values()]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        for source in self.sources.values():
            await source.close()
        if self._http is not None:
            await self._http.close()
            self._http = None
