"""Cedar authorization: from an authenticated request to allow/deny, reasons and a masking plan.

Flow (``Authorizer``, called by ``gateway/app.py``)::

    match(method, path, raw_path)  -> RouteMatch | None       gateway/adapters/: canonical path, route map
    body_needed(match)             -> bytes to buffer          only routes that lift body fields
    authorize(principal, match, purpose=, recipient=, consent_ref=, body=, now=) -> Decision
        0. a repeat within the decision memo's second (DecisionMemo) is answered from it
        1. inputs: X-Purpose known in the taxonomy (else 400), X-Recipient / X-Consent-Ref syntax,
           required headers, lifted body fields (else 400)               decide.py check_inputs
        2. facts: tenant settings, opt-out list, consent record (a FactSource: resolvers.py over
           HTTP with a TTL cache and single flight; any failure denies with a "fail-closed" reason)
        3. engine.decide(Facts) -> Verdict (engine.py), cached           decide.py decide_request
        4. routes with ``facts_from``: the record's facts fetched (resolvers) and decided again
    review_response(decision, status, content_type, body, now) -> ResponseReview   review.py
        when ``decision.inspects_response``: the record's facts read from the 2xx JSON answer and
        decided again (refusal 403, or list items withheld), then the masks (masking.py, over the
        one JSON-pointer walker gateway/adapters/jsonpointer.py); 502 when unreadable

Parts: ``taxonomy`` (fideslang data uses and categories + project children, as data), ``manifests``
(per category: purposes, recipients, retention -> entity attributes), ``policyset`` (load, validate,
``@id`` re-keying, slicing), ``cedarsource`` (policy boundaries and line numbers, schema hierarchies),
``entities`` (request entities and context as Cedar JSON), ``engine`` (one immutable bundle + caches),
``recordfacts`` (facts about a record read from a JSON document), ``decide`` (the one fact builder,
shared by traffic and policy tests), ``review`` (the second decision once the upstream answered),
``cases`` (a request written out, for ``policy explain`` and policy tests), ``commands`` (CLI).

Design and trade-offs
- Pre-parsed handles only: one ``cedarpy.PolicySet`` per slice, the ``Schema`` once, an ``Entities``
  handle per distinct entity set (LRU). Cedar never re-parses policy text on the request path.
- Slicing: a slice holds the policies whose scope can match (action, resource type, principal type,
  the caller's roles); top-level ``resource is A || resource is B`` and ``principal in EmployeeRole::"X"`` tests
  in a ``when`` clause narrow it too. Policies with unconstrained scopes are in every slice. Slicing
  never changes an answer (a property test compares against the whole set); at 300 policies a
  decision costs what it costs with the shipped set.
- Caching: the decision cache key is everything the slice's policies can observe: the principal's
  kind, id, tenant, roles and scopes; the route; the resource's tenant and owner; purpose, recipient,
  consent record, lifted body, tenant facts, record facts; the resource id only if a policy reads it
  (``resource.id`` or the resource's identity), the request time (whole seconds) only if a policy
  reads ``context.time``. So reading many records of one route is one decision, but consent decisions
  are per message and per second. Record ages are whole days (exact for retentions in days), so the
  second decisions of records of one age share an entry. Caches live in the bundle: a reload starts
  empty, never stale.
- Context: only the attributes the slice reads are sent (Cedar parses every one, on every call);
  ``context.time`` is a Long (seconds since the epoch), cheaper than a ``datetime`` extension value.
- Entities: the per-request store is small (principal with its roles as parents, resource, its
  tenant, the purpose and recipient with every ancestor as a direct parent) and parsed with the schema,
  which validates it and supplies the action groups. It is the expensive part (Cedar parses each
  entity reference in a set for several microseconds: a cold payment read, with its masking
  categories, measured about 0.5 ms against about 30 us once the entities are parsed), hence its own
  cache, keyed like the decision minus the context.
- Masking: one ``read_field`` decision per distinct field category (resource = the ``DataCategory``),
  cached per caller and purpose across routes; the still-unknown categories of a response go to Cedar
  in one batched call. A field is shown only if some policy permits it.
- Record facts (retention, a contact's opt-out): only the record holds them, so the first decision is
  made without them and a second one once they are known (``review.py``): from the buffered 2xx JSON
  answer (a refused record becomes a 403 with its policies; a refused list item is withheld as
  ``null``), or, for answers that cannot carry them (audio, exports), from the record's metadata
  fetched before forwarding (``facts_from``). A route's facts are read only when some policy of the
  request's slice reads ``context.record``; the answer is buffered only then or when fields are
  masked (``Decision.inspects_response``).
- Fail closed everywhere: evaluation errors (Cedar skips an erroring policy, which could turn a deny
  into an allow) deny; an unexpected exception denies; a resolver failure denies; an answer whose
  record facts cannot be read, or that must be masked but is not JSON, is refused (502).
- Hot reload: the bundle is rebuilt from the files and swapped atomically; a broken file keeps the
  last good bundle, sets ``last_error`` (file:line diagnostics) and logs it. ``ready`` stays True then
  (the gateway is enforcing a validated set); the operator sees the error in ``/readyz``.
- What it never does: forward an unmapped or ambiguous path; guess a purpose (an unknown child of a
  known purpose is unknown); trust client-sent facts (tenant settings, opt-outs and consents come from
  the resolvers); log bodies or tokens. What it does not do: stream masks of huge bodies (the caller
  buffers, up to its limit); check facts of non-2xx answers (they carry no record); read facts of
  records whose answer gives no time (Gmail messages).
"""
