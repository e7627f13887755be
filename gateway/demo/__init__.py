"""The embedded development stack: the reference internal services and the ``gateway demo`` launcher.

The reference services (``upstream.py``, ``gateway demo-upstream``) stand for the internal systems the
five privacy policies protect: a CRM (contacts, exports), payments, a contact centre (calls,
recordings, transcripts), surveys, web analytics, a Gmail-shaped mail service, and a consent registry.
The demo, the tests and the load harness all run against them.

Design and trade-offs:

- They sit behind the gateway. By default they take its ``X-Gateway-Tenant``, ``X-Gateway-Principal``,
  ``X-Gateway-Purpose`` and ``X-Gateway-Decision-Id`` headers as they come (they bind loopback and
  must never be reachable except through the gateway); with ``--require-assertion`` (which ``gateway
  demo`` sets) they refuse (401) any request without a valid ``X-Gateway-Assertion`` signed by the
  gateway's published keys, and take the caller's identity from it (``gateway/assertion.py``).
- They deliberately do not enforce tenant isolation or any role or purpose rule, so that a test can
  show it is the gateway that refuses. The tenant in a ``/tenants/{tid}/...`` path is served whatever
  the headers say. Three things depend on the caller because the contract makes them so: a mailbox
  is the caller's tenant's (``X-Gateway-Tenant``) and ``me`` is ``X-Gateway-Principal``; a consent is
  recorded for the caller as its subject, in the caller's tenant; and a survey invitation to an
  address on the tenant's opt-out list is refused (409), as a real service would (the gateway checks
  too, before it ever gets here).
- Fixture data (``fixtures.py``) is deterministic: seeded generators, and timestamps that are a fixed
  age per record before the instant the services start (injectable: ``create_upstream_app(now)``), so
  a record within retention stays within it on any date and two instances started at the same
  instant serve identical bytes. Every GET body is serialised once when the app is created; a
  handler is a dictionary look-up (the load harness measures the gateway, not these).
- Mailboxes exist for any user id and are generated on first use, kept in a bounded LRU cache (1024
  mailboxes per app). Sending, exporting and inviting change nothing: the answers say what would
  have been sent, so the fixture data stays identical for the life of the process.
- Consents are the only state: in memory, lost on restart, at most 100,000 per app; when full, expired
  ones are dropped, and if none has expired creation is refused (503), never silently evicted. An
  ``expires_at`` in the past is accepted, so that tests can show the gateway refusing an expired
  consent without waiting.
- Request bodies are read with a bound (64 KiB for JSON documents, 8 MiB for a message to send), and
  every error, unknown routes included, is an RFC 9457 ``application/problem+json`` document.
- The demo's tenants, API audience and ports (``tenants.py``) reach the gateway only through
  ``profile.py``, the layer ``gateway serve`` applies when no ``--config`` is named; the production
  defaults of the settings types never name them, so a forgotten ``identity.tenants`` in a real
  configuration is an error, not a gateway that trusts the fixture tenants.
"""
