"""One pass of the mix through a gateway before it is measured: does it answer as the mix says?

A difference is reported, never fatal: the figures still stand, but the report says for which mix.
Each distinct request is sent once, with urllib, so the check is independent of wrk.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from typing import Any

from load.measure.mix import WireRequest


def send(base_url: str, request: WireRequest, timeout_s: float = 5.0) -> tuple[int, dict[str, str]]:
    data = request.body.encode() if request.body is not None else None
    call = urllib.request.Request(base_url + request.path, data=data, method=request.method, headers=request.headers)
    try:
        with urllib.request.urlopen(call, timeout=timeout_s) as response:
            response.read()
            return int(response.status), {k.lower(): v for k, v in response.headers.items()}
    except urllib.error.HTTPError as error:
        error.read()
        return int(error.code), {k.lower(): v for k, v in error.headers.items()}


def check_mix(target: str, base_url: str, requests: list[WireRequest]) -> list[dict[str, Any]]:
    seen: set[str] = set()
    out: list[dict[str, Any]] = []
    for request in requests:
        entry = request.entry
        if entry.title in seen:
            continue
        seen.add(entry.title)
        try:
            status, headers = send(base_url, request)
        except OSError as exc:
            out.append(
                {
                    "target": target,
                    "title": entry.title,
                    "expected": entry.expect,
                    "got": f"error: {exc}",
                    "ok": False,
                }
            )
            continue
        redacted = headers.get("x-redacted-fields", "")
        got = f"{status}" + (f" (redacted {redacted})" if redacted else "")
        expected = f"{entry.expect}" + (" (redacted)" if entry.masked else "")
        ok = status == entry.expect and (bool(redacted) == entry.masked)
        out.append(
            {
                "target": target,
                "title": entry.title,
                "expected": expected,
                "got": got,
                "ok": ok,
                "decision_id": headers.get("x-decision-id"),
            }
        )
    return out
