"""``gateway serve --mode ext-authz``: the same decisions, answered to Envoy's ext_authz filter.

Envoy's ``envoy.filters.http.ext_authz`` with ``http_service`` sends, for every client request, a
*check request*: the original method and path with the headers it was told to pass
(``CHECK_REQUEST_HEADERS``) and never the body. The check runs the gateway's own steps from
``gateway/app.py`` (``admit``: limits, authenticate, map; ``decide``; ``audit_writable``;
``audit_record``) and answers:

- **allowed on its headers**: 200 with ``X-Gateway-Route: direct``, the ``X-Gateway-*`` identity
  headers and ``traceparent`` for the upstream, ``X-Decision-Id`` for the client. Audited here, once,
  with ``extra["mode"] = "ext-authz"`` (status 200: the upstream's status is Envoy's to see).
- **refused**: the status, problem+json body and headers proxy mode answers (401 with
  ``WWW-Authenticate``, 400, 403 with reasons, 413, 431, 503), which Envoy passes to the client.
  Audited here, once.
- **not decidable on headers**: the route lifts request fields from a JSON body, or the decision
  masks fields or checks record facts in the upstream's answer. The check answers 200 with
  ``X-Gateway-Route: gateway`` and a delegation token (``gateway/extauthz/delegation.py``) and audits
  nothing: Envoy routes the request to the gateway's proxy listener (this same server, or another in
  ext-authz mode sharing ``server.delegation_secret``), which recognises the token and runs the whole
  proxy-mode path, deciding with the body and the answer, and writes the request's one record
  (``extra["mode"] = "ext-authz-proxy"``, ``extra["check_decision_id"]``). The check's own decision
  for such a request is only a pre-check: a refusal is answered (and audited) at once, an allow is
  thrown away and decided again where the body is.

A request on this listener without a delegation token is always a check: it is answered, never
forwarded, so a client that reaches the listener directly learns a decision and gets no data. A
token that is malformed, forged, expired or for another request is a 403, audited; a valid one grants
nothing proxy mode would not (the request is decided in full). The check never reads a request body
and never buffers anything; a delegated request is buffered exactly as proxy mode buffers it.

Trade-offs: a delegated request is decided twice (once unrecorded, at the check; the decision cache
makes the second cheap) and crosses the gateway's event loop twice. A delegated request that Envoy
never gets to the proxy listener (it went away in between) leaves no record, but nothing reached
the upstream either. The body limit (``server.max_body_bytes``) holds at the check only for a
declared ``Content-Length``; a chunked body on a direct route is Envoy's to limit.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from gateway.app import Gateway
from gateway.authz.decision import fail_closed_reason
from gateway.exchange import Exchange
from gateway.extauthz.delegation import Delegation, InvalidDelegation, new_secret
from gateway.proxy import Receive, Send
from gateway.request import RequestHead

logger = logging.getLogger("gateway.extauthz")

MODE = "ext-authz"
DELEGATED_MODE = "ext-authz-proxy"
ROUTE_HEADER = "x-gateway-route"
ROUTE_DIRECT = "direct"    # decided by the check: Envoy forwards to the upstream
ROUTE_GATEWAY = "gateway"  # delegated: Envoy forwards to the gateway's proxy listener
DELEGATION_HEADER = "x-gateway-delegation"
_DELEGATION = DELEGATION_HEADER.encode()

# What Envoy passes to the check (``allowed_headers``); it adds method, path and host itself.
CHECK_REQUEST_HEADERS = ("authorization", "x-purpose", "x-recipient", "x-consent-ref", "traceparent",
                         "content-length")
# What Envoy copies from an allowing check answer onto the request it forwards (set, never appended).
CHECK_UPSTREAM_HEADERS = ("x-gateway-decision-id", "x-gateway-tenant", "x-gateway-principal",
                          "x-gateway-purpose", "x-gateway-assertion", "traceparent", ROUTE_HEADER,
                          DELEGATION_HEADER)
# What a refusal carries to the client besides its status and body.
CHECK_CLIENT_HEADERS = ("content-type", "www-authenticate", "x-decision-id")
# What an allowing answer adds to the client's response.
CHECK_SUCCESS_CLIENT_HEADERS = ("x-decision-id",)


class ExtAuthzGateway(Gateway):
    """The gateway as Envoy's authorization service, and the proxy listener for what it delegates."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        server = self.config.server
        self.delegation = Delegation(server.delegation_secret or new_secret(), server.delegation_ttl_seconds)
        self.record_extra = {"mode": MODE}

    async def handle(
        self, scope: dict[str, Any], receive: Receive, send: Send, extra: dict[str, str] | None = None
    ) -> None:
        tokens = [value for name, value in scope["headers"] if name == _DELEGATION]
        if not tokens:
            exchange = self.exchange(scope, send)
            return await self.guarded(exchange, self._check(scope, exchange))
        try:
            if len(tokens) > 1:
                raise InvalidDelegation("duplicate")
            check_id = self.delegation.verify(
                tokens[0].decode("latin-1"), scope["method"], _target(scope), time.time()
            )
        except InvalidDelegation as exc:
            exchange = self.exchange(scope, send)
            return await self.guarded(exchange, self._bad_delegation(exchange, exc.reason))
        # Delegated by a check: the full proxy-mode path, one decision, one record.
        await super().handle(scope, receive, send, {"mode": DELEGATED_MODE, "check_decision_id": check_id})

    # -- the check, top to bottom ------------------------------------------------------------------

    async def _check(self, scope: dict[str, Any], exchange: Exchange) -> None:
        # 0-2. limits, authenticate, map: the same steps, refusals and records as proxy mode.
        admitted = await self.admit(scope, exchange)
        if admitted is None:
            return None
        head, principal, match = admitted
        # Fields lifted from the body decide this route: only the proxy listener has the body.
        if self.authorizer.body_needed(match):
            return await self._delegate(exchange, head)

        # 3. decide on the headers.
        decision = await self.decide(exchange, head, principal, match, None)
        if decision is None:
            return None
        # The answer must be masked or its record facts checked: only the proxy listener sees it.
        if decision.inspects_response:
            return await self._delegate(exchange, head)

        # 4. audit, then let Envoy forward.
        if not await self.audit_writable(exchange):
            return None
        exchange.status = 200
        exchange.reason = exchange.reason or "allowed"
        if not await self.audit_record(exchange):
            return None
        headers = [(ROUTE_HEADER.encode(), ROUTE_DIRECT.encode())]
        headers += [(name.lower().encode(), value.encode("latin-1"))
                    for name, value in self.identity_headers(principal, decision, exchange).items()]
        headers.append((b"x-decision-id", exchange.decision_id.encode()))
        await exchange.respond(200, headers, b"")
        return None

    async def _delegate(self, exchange: Exchange, head: RequestHead) -> None:
        """Hand the request to the proxy listener: no record here, the proxy path writes the one record."""
        token = self.delegation.mint(exchange.decision_id, head.method, head.target, time.time())
        logger.debug("check %s delegated %s %s to the proxy listener", exchange.decision_id, head.method, head.path)
        await exchange.respond(
            200, [(ROUTE_HEADER.encode(), ROUTE_GATEWAY.encode()), (_DELEGATION, token.encode())], b""
        )

    async def _bad_delegation(self, exchange: Exchange, reason: str) -> None:
        exchange.reason = "invalid_delegation"
        exchange.extra["delegation"] = reason
        await self._forbidden(
            exchange,
            [fail_closed_reason("the request claims a check's delegation it does not hold; refused")],
        )


def _target(scope: dict[str, Any]) -> str:
    """The request target as received (what ``RequestHead.target`` is, before the head is parsed)."""
    raw: bytes = scope.get("raw_path") or scope["path"].encode("utf-8")
    query: bytes = scope.get("query_string", b"")
    return (raw + b"?" + query).decode("latin-1") if query else raw.decode("latin-1")


__all__ = ["ExtAuthzGateway"]
