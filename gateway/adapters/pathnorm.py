"""Request-path normalisation: the one canonical form the gateway decides on and the upstream sees.

The upstream (uvicorn + Starlette here, most frameworks alike) percent-decodes the raw path once and
routes on the result, so the gateway must decide on exactly that decoded form. Anything whose decoded
form is ambiguous, or that different servers are known to read differently, is rejected rather than
repaired: dot segments (``.``, ``..`` and their encodings), encoded slashes and backslashes, double
slashes and empty segments, ``;`` path parameters, encoded ``%`` (double encoding), control and
non-ASCII bytes. A rejected path never matches a route, so it is denied by default.

What is accepted: printable ASCII, percent-escapes that decode to an unreserved character
(``A-Z a-z 0-9 - _ ~``; RFC 3986 says these are equivalent to the literal), and literal sub-delimiters
that no server splits on (``! $ & ' ( ) * + , = : @``). Case is kept: matching is case-sensitive, as
the upstream's is.
"""

from __future__ import annotations

MAX_PATH_LENGTH = 2048
MAX_SEGMENTS = 32

_HEX = frozenset("0123456789abcdefABCDEF")
_UNRESERVED_DECODED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_~")
# Literal characters allowed in a segment (RFC 3986 pchar minus ';' and '%', which are handled apart).
_LITERAL_OK = _UNRESERVED_DECODED | frozenset(".!$&'()*+,=:@")


class PathRejected(ValueError):
    """The path is ambiguous or malformed; ``reason`` says which rule it broke."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _decode_segment(segment: str) -> str:
    if "%" not in segment:
        for char in segment:
            if char not in _LITERAL_OK:
                raise PathRejected(f"character {char!r} not allowed in a path segment")
        return segment
    out: list[str] = []
    i = 0
    n = len(segment)
    while i < n:
        char = segment[i]
        if char == "%":
            pair = segment[i + 1 : i + 3]
            if len(pair) != 2 or pair[0] not in _HEX or pair[1] not in _HEX:
                raise PathRejected("malformed percent-escape")
            decoded = chr(int(pair, 16))
            if decoded not in _UNRESERVED_DECODED:
                raise PathRejected(f"percent-escape %{pair.upper()} encodes a character that must not be escaped")
            out.append(decoded)
            i += 3
            continue
        if char not in _LITERAL_OK:
            raise PathRejected(f"character {char!r} not allowed in a path segment")
        out.append(char)
        i += 1
    return "".join(out)


def normalise_path(raw_path: str | bytes) -> tuple[str, ...]:
    """Decoded segments of ``raw_path`` (percent-encoded, no query string), or ``PathRejected``.

    ``/tenants/a/contacts`` gives ``("tenants", "a", "contacts")``; the root ``/`` gives ``()``.
    """
    if isinstance(raw_path, bytes):
        try:
            raw_path = raw_path.decode("ascii")
        except UnicodeDecodeError:
            raise PathRejected("non-ASCII byte in path") from None
    if len(raw_path) > MAX_PATH_LENGTH:
        raise PathRejected("path too long")
    if not raw_path.startswith("/"):
        raise PathRejected("path must start with '/'")
    if raw_path == "/":
        return ()
    parts = raw_path[1:].split("/")
    if len(parts) > MAX_SEGMENTS:
        raise PathRejected("too many path segments")
    segments: list[str] = []
    for part in parts:
        if not part:
            raise PathRejected("empty path segment (double or trailing slash)")
        decoded = _decode_segment(part)
        if decoded in (".", "..") or part in (".", ".."):
            raise PathRejected("dot segment")
        segments.append(decoded)
    return tuple(segments)


def canonical_path(segments: tuple[str, ...]) -> str:
    return "/" + "/".join(segments)
