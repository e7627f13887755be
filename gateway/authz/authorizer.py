"""The authorizer the request path calls: match, decide (``gateway/authz/decide.py``), remember, review.

It owns the policy bundle's life (load, last good copy, hot reload under a lock, shadow set), the route
match and whole-decision memos of the bundle, the fetch of a record's facts for ``facts_from`` routes,
and the review of the upstream's answer. Deciding itself is ``decide_request`` with the resolvers as
its fact source, the same function ``gateway policy test`` runs with a case's facts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from dataclasses import dataclass, replace
from pathlib import Path

from gateway.adapters.pathnorm import PathRejected, normalise_path
from gateway.adapters.routemap import RouteMatch
from gateway.authz import lastgood
from gateway.authz.decide import decide_request, refusal, unmapped_reasons
from gateway.authz.decision import Decision
from gateway.authz.engine import BundleFiles, PolicyEngine
from gateway.authz.errors import PolicyError, ResolverError
from gateway.authz.resolvers import ResolvedFacts, Resolvers
from gateway.authz.review import ResponseReview, fail_closed, review, review_prefetched
from gateway.authz.settings import AuthzSettings
from gateway.identity.principal import Principal

logger = logging.getLogger("gateway.authz")

# How long a whole decision is reused for a repeat of the same request (gateway/authz/authorizer.py
# ``Authorizer.authorize``). Short next to the resolvers' TTL, so a fact that changed upstream is seen
# at most this much later than without the memo.
DECISION_MEMO_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class DecisionMemo:
    """A decision kept for repeats of one request shape by one verified principal."""

    principal: Principal  # held, so the ``id()`` in the key cannot be reused while the entry lives
    decision: Decision
    expires_at: float  # within DECISION_MEMO_SECONDS, and never past the token's ``exp``
    second: int | None  # the second it holds for, when a policy reads the time


class Authorizer:
    """Decides requests with the current policy bundle; reloads it when its files change.

    ``ready`` is True once a bundle is loaded and the resolvers are started. A reload that fails keeps
    the last good bundle, sets ``last_error`` (file:line diagnostics) and leaves ``ready`` True: the
    gateway keeps enforcing the last set that validated.
    """

    def __init__(self, settings: AuthzSettings, engine: PolicyEngine) -> None:
        self.settings = settings
        self.engine = engine
        self.resolvers = Resolvers(
            settings.resolver_url,
            ttl_seconds=settings.resolver_ttl_seconds,
            timeout_seconds=settings.resolver_timeout_seconds,
            capacity=settings.resolver_cache_size,
        )
        self.facts = ResolvedFacts(self.resolvers)
        self.last_error: str | None = None
        self.last_good_dir: Path | None = None
        self.reloads = 0
        # The configured files are watched, even when the engine came from the last good bundle.
        self._watched = BundleFiles(Path(settings.policies_dir), tuple(Path(p) for p in settings.route_maps))
        self._snapshot = self._watched.snapshot()
        self._watcher: asyncio.Task[None] | None = None
        self._reload_lock = threading.Lock()  # the file watch and SIGHUP may both reload
        # Shadow mode: a candidate set decided beside this one by the audit writer, never enforced.
        self.shadow: PolicyEngine | None = None
        self.shadow_error: str | None = None
        self._shadow_watched = (
            BundleFiles(Path(settings.shadow_dir), tuple(Path(p) for p in settings.route_maps))
            if settings.shadow_dir
            else None
        )
        self._shadow_snapshot: dict[str, float] = {}
        self._load_shadow()

    # --- lifecycle ------------------------------------------------------------------------------

    @classmethod
    def load(cls, settings: AuthzSettings) -> Authorizer:
        """Load and validate everything; raises ``PolicyError`` (file:line diagnostics) if broken."""
        return cls(settings, cls._load_engine(settings))

    @classmethod
    def load_or_last_good(cls, settings: AuthzSettings, last_good_dir: Path | None) -> Authorizer:
        """``load``, keeping a copy of what loaded in ``last_good_dir``; when the files are broken, start
        from that copy (``last_error`` says so) rather than fail, so a replaced worker still decides."""
        try:
            authorizer = cls.load(settings)
        except PolicyError as exc:
            fallback = lastgood.current(last_good_dir) if last_good_dir is not None else None
            if fallback is None:
                raise
            engine = cls._load_engine(replace(settings, policies_dir=fallback.policies_dir,
                                              route_maps=fallback.route_maps))
            authorizer = cls(settings, engine)
            authorizer.last_good_dir = last_good_dir
            authorizer.last_error = f"{exc}\n(serving the last good policy set {engine.policy_hash})"
            logger.error("policies do not load; serving the last good set %s:\n%s", engine.policy_hash, exc)
            return authorizer
        authorizer.last_good_dir = last_good_dir
        authorizer._save_last_good()
        return authorizer

    def _save_last_good(self) -> None:
        if self.last_good_dir is None:
            return
        try:
            lastgood.save(self.engine.files, self.engine.policy_hash, self.last_good_dir)
        except OSError as exc:
            logger.warning("cannot keep a copy of the policy set in %s: %s", self.last_good_dir, exc)

    @staticmethod
    def _load_engine(settings: AuthzSettings) -> PolicyEngine:
        engine = PolicyEngine.load(
            settings.policies_dir,
            settings.route_maps,
            decision_cache_size=settings.decision_cache_size,
            entity_cache_size=settings.entity_cache_size,
            validate_requests=settings.validate_requests,
        )
        for route in engine.routes.routes:
            if route.max_body_bytes > settings.max_lift_body_bytes:
                raise PolicyError(
                    f"{route.source}: route {route.id}: max_body_bytes {route.max_body_bytes} exceeds the "
                    f"configured limit {settings.max_lift_body_bytes}"
                )
        return engine

    async def start(self) -> None:
        await self.resolvers.start()
        if self.settings.watch and self._watcher is None:
            self._watcher = asyncio.create_task(self._watch(), name="policy-watcher")

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None
        await self.resolvers.close()

    @property
    def ready(self) -> bool:
        return self.resolvers.started

    @property
    def policy_hash(self) -> str:
        return self.engine.policy_hash

    def _load_shadow(self) -> None:
        """(Re)load the shadow set; a broken one is reported (``shadow_error``, /readyz) and leaves no
        shadow decisions, never an effect on enforcement."""
        if self._shadow_watched is None:
            return
        self._shadow_snapshot = self._shadow_watched.snapshot()
        try:
            self.shadow = self._load_engine(replace(self.settings, policies_dir=self.settings.shadow_dir))
            self.shadow_error = None
            logger.info("shadow policy set %s loaded from %s", self.shadow.policy_hash, self.settings.shadow_dir)
        except (PolicyError, OSError, ValueError) as exc:
            self.shadow = None
            self.shadow_error = str(exc)
            logger.error("the shadow policy set does not load; no shadow decisions until it does:\n%s", exc)

    def reload(self) -> bool:
        """Load the files again; on success swap the bundle (and its caches), else keep the old one."""
        with self._reload_lock:
            if self._shadow_watched is not None:
                self._load_shadow()
            return self._reload()

    def _reload(self) -> bool:
        snapshot = self._watched.snapshot()
        try:
            engine = self._load_engine(self.settings)
        except (PolicyError, OSError, ValueError) as exc:
            self._snapshot = snapshot
            self.last_error = str(exc)
            logger.error("policy reload failed, keeping policy set %s:\n%s", self.engine.policy_hash, exc)
            return False
        self._snapshot = snapshot
        self.engine = engine
        self.last_error = None
        self.reloads += 1
        self._save_last_good()
        logger.info("policy set %s loaded (%d policies)", engine.policy_hash, len(engine.policies.policies))
        return True

    def reload_if_changed(self) -> bool | None:
        """Reload when a watched file changed: True/False as ``reload``, None when nothing changed."""
        if self._shadow_watched is not None and self._shadow_watched.snapshot() != self._shadow_snapshot:
            with self._reload_lock:
                self._load_shadow()
        if self._watched.snapshot() == self._snapshot:
            return None
        return self.reload()

    async def _watch(self) -> None:
        interval = max(0.05, self.settings.watch_interval_seconds)
        while True:
            await asyncio.sleep(interval)
            try:
                # Loading and validating a set takes tens of milliseconds: off the event loop, so requests
                # keep flowing; the new engine is swapped in with one attribute assignment.
                await asyncio.to_thread(self.reload_if_changed)
            except Exception:  # the watcher must never die
                logger.exception("policy watcher error")

    # --- the request path -----------------------------------------------------------------------

    def match(self, method: str, path: str, raw_path: bytes | str | None = None) -> RouteMatch | None:
        """The route for a request, or None (unmapped, or an ambiguous path): deny by default.

        ``raw_path`` is the percent-encoded path as received (ASGI ``raw_path``), which is what the
        upstream will decode; when given it is what is matched, and the decoded ``path`` must agree
        with it. Without it, ``path`` itself is taken as the raw path. Remembered per bundle
        (``PolicyEngine.route_matches``): clients repeat their paths, and normalising and matching cost
        more than the lookup.
        """
        matches = self.engine.route_matches
        key = (method, path, raw_path)
        known = matches.get(key)
        if known is not None:
            return known[0]
        match = self._match(method, path, raw_path)
        matches.put(key, (match,))
        return match

    def _match(self, method: str, path: str, raw_path: bytes | str | None) -> RouteMatch | None:
        if raw_path is None:
            return self.engine.routes.match(method, path)
        try:
            segments = normalise_path(raw_path)
        except PathRejected:
            return None
        if "/" + "/".join(segments) != path:
            return None  # the server decoded it differently from us: ambiguous, refuse
        return self.engine.routes.match_segments(method, segments)

    def unmapped_reasons(self) -> list[dict[str, str]]:
        return unmapped_reasons()

    def body_needed(self, match: RouteMatch) -> int:
        """How many body bytes to buffer for lifting fields (0: stream the body untouched)."""
        route = match.route
        return route.max_body_bytes if route.lift else 0

    async def authorize(
        self,
        principal: Principal,
        match: RouteMatch,
        *,
        purpose: str | None,
        recipient: str | None,
        consent_ref: str | None,
        body: bytes | None,
        now: float,
    ) -> Decision:
        """Decide one request. Never raises: bad input is a 400 decision, anything else denies (403).

        A repeat (same verified token, route, canonical path, purpose, recipient and consent, no lifted
        body) within ``DECISION_MEMO_SECONDS`` gets the same decision without rebuilding its facts; the
        memo belongs to the policy bundle (a reload starts a new one), never outlives the token's
        ``exp``, holds for one second when a policy reads the time, and keeps no refusal that was not
        Cedar's (bad input, a fact that could not be had) nor a decision made on a fetched record.
        """
        engine = self.engine
        route = engine.routes.by_id.get(match.route.id)
        if route is not match.route:  # the route maps were reloaded since matching
            rematched = engine.routes.match(match.route.method, match.path)
            if rematched is None:
                return refusal(
                    engine,
                    match,
                    403,
                    "unmapped",
                    "no route for this request after a reload",
                    purpose,
                    recipient,
                    consent_ref,
                    reasons=unmapped_reasons(),
                )
            match = rematched
            route = match.route
        memo_key: tuple[object, ...] | None = None
        if body is None:
            memo_key = (id(principal), route.id, match.path, purpose, recipient, consent_ref)
            memo: DecisionMemo | None = engine.decision_memo.get(memo_key)
            if (
                memo is not None
                and memo.principal is principal
                and now < memo.expires_at
                and (memo.second is None or memo.second == int(now))
            ):
                return memo.decision
        decision = await decide_request(
            engine, principal, match, self.facts,
            purpose=purpose, recipient=recipient, consent_ref=consent_ref, body=body, now=now,
        )  # fmt: skip
        basis = decision.basis  # None: refused before Cedar was asked (bad input, a fact not had)
        if basis is None:
            return decision
        if decision.allowed and route.facts_from is not None and engine.reads_record(basis.facts):
            return await self._review_before_forwarding(decision, match, now)
        if memo_key is not None:
            expires_at = min(now + DECISION_MEMO_SECONDS, principal.expires_at)
            second = int(now) if engine.time_dependent(basis.facts) else None
            engine.decision_memo.put(memo_key, DecisionMemo(principal, decision, expires_at, second))
        return decision

    async def _review_before_forwarding(self, decision: Decision, match: RouteMatch, now: float) -> Decision:
        """Decide again with the record's facts fetched from ``facts_from`` (recordings, exports)."""
        route = match.route
        try:
            raw = await self.resolvers.record(route.facts_path(match.params), route.response_facts)
        except Exception as exc:  # ResolverError, or anything unexpected: fail closed
            if not isinstance(exc, ResolverError):
                logger.exception("fetching the record's facts failed, denying")
            else:
                logger.warning("record facts unavailable, denying: %s", exc)
            return fail_closed(
                decision,
                403,
                "resolver_error",
                "a fact the decision needs is unavailable",
                f"{exc if isinstance(exc, ResolverError) else 'fetching the record failed'}; "
                "denied because the decision cannot be made",
            )
        return review_prefetched(decision, raw, now)

    def review_response(
        self, decision: Decision, status: int, content_type: str, body: bytes, now: float
    ) -> ResponseReview:
        """The second look at an allowed request, once the upstream answered: check the record's facts
        the route map reads from the answer (retention, opt-outs), then mask. Call it with the buffered
        body whenever ``decision.inspects_response``; ``content_type`` is the answer's Content-Type.

        ``refusal`` set: answer it (403 with its reasons, or 502 ``unreadable_response``) instead of the
        body, and audit it. Else send ``body`` and list ``pointers`` in ``X-Redacted-Fields``. Only 2xx
        answers are checked for facts; others are only masked. Never raises: an error refuses (502).
        """
        try:
            return review(decision, status, content_type, body, now, self.settings.max_record_reviews)
        except Exception:  # fail closed on anything unexpected
            logger.exception("reviewing the upstream's answer failed, refusing it")
            return ResponseReview(
                fail_closed(
                    decision,
                    502,
                    "unreadable_response",
                    "the upstream's answer could not be checked",
                    "checking the answer failed; it is not passed on unchecked",
                ),
                b"",
            )
