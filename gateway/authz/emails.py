"""One canonical form for an e-mail address, so that a list comparison cannot be dodged by spelling.

The opt-out list holds ``optout@example.com``; ``"optout"@example.com`` (needless quotes),
``OptOut@EXAMPLE.com`` and ``optout@xn--exmple-cua.com`` / ``optout@exämple.com`` are the same
mailboxes written differently. ``email-validator`` parses the address by RFC 5321/5322 and gives its
normalised form (quotes dropped where they are not needed, the domain lower-cased and IDNA-decoded,
Unicode NFC); the local part is then case-folded, since every list this gateway compares against is
kept case-insensitively. What is not a mailbox address (a trailing dot, no dot in the domain, a
bracketed IP, spaces or invisible characters, more than 254 characters) raises ``ValueError``, which
the request path answers with a 400: it is never compared, never "rounded" to something that passes.

Sub-addresses (``optout+news@example.com``) and provider-specific rules (dots in Gmail local parts)
are different addresses by the standard and stay different here.
"""

from __future__ import annotations

from functools import lru_cache

from email_validator import EmailNotValidError, validate_email

MAX_EMAIL_LENGTH = 254


@lru_cache(maxsize=4096)
def canonical_email(text: str) -> str:
    """The canonical form of ``text`` (surrounding white space ignored); ``ValueError`` if invalid."""
    value = text.strip()
    if not value or len(value) > MAX_EMAIL_LENGTH:
        raise ValueError("not an e-mail address")
    try:
        parsed = validate_email(
            value, check_deliverability=False, allow_quoted_local=True, allow_smtputf8=True, allow_domain_literal=False
        )
    except EmailNotValidError as exc:
        raise ValueError(str(exc)) from None
    local, _, domain = parsed.normalized.rpartition("@")
    return f"{local.casefold()}@{domain}"


def canonical_or_folded(text: str) -> str:
    """For addresses from a list the gateway does not control: the canonical form, or the case-folded
    text when it is not a valid address (it can then match no valid address, which is the point)."""
    try:
        return canonical_email(text)
    except ValueError:
        return text.strip().casefold()
