"""The hardened protocol overrides methods of uvicorn's, several private; a uvicorn without one of them
must not load (the override would silently never run, its guard off), and the pinned range
(pyproject.toml) must have them all (issue 17)."""

from __future__ import annotations

import pytest
from uvicorn.protocols.http import httptools_impl

import gateway.http_protocol as protocol

BASE = httptools_impl.HttpToolsProtocol


def test_the_installed_uvicorn_has_every_method_the_protocol_overrides_or_calls() -> None:
    assert protocol.missing_in(BASE) == []


def test_the_guard_lists_every_override() -> None:
    """A method overridden but not listed would go unguarded; one listed but not overridden guards nothing."""
    ours = {name for name, value in vars(protocol.GatewayHttpProtocol).items() if callable(value)}
    overrides = {name for name in ours if hasattr(BASE, name)} - {"__init__"}
    assert set(protocol.OVERRIDDEN) == overrides


def test_a_uvicorn_without_one_of_them_is_refused() -> None:
    """What the import does with the installed uvicorn, on one that lacks ``_start_asgi_task``."""
    kept = {name: getattr(BASE, name) for name in protocol.OVERRIDDEN if name != "_start_asgi_task"}
    without = type("OlderHttpToolsProtocol", (), kept)
    with pytest.raises(ImportError, match="_start_asgi_task"):
        protocol.check_uvicorn(without)
    with pytest.raises(ImportError, match="_unset_keepalive_if_required"):
        protocol.check_uvicorn(type("Bare", (), {n: getattr(BASE, n) for n in protocol.OVERRIDDEN}))
    protocol.check_uvicorn(BASE)
