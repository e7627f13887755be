"""RFC 9457 problem details: every error the gateway produces is one of these, never a stack trace."""

from __future__ import annotations

from typing import Any

import orjson

PROBLEM_CONTENT_TYPE = b"application/problem+json"

_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    413: "Content Too Large",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


def problem_body(status: int, detail: str, *, type_: str = "about:blank", **extra: Any) -> bytes:
    """Serialise a problem document. ``extra`` members (decision_id, reasons, ...) are added as-is."""
    doc: dict[str, Any] = {
        "type": type_,
        "title": _TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
    }
    doc.update(extra)
    return orjson.dumps(doc)
