"""The hardened protocol overrides private methods of uvicorn's; a uvicorn without one of them must
not load (the guard would be silently off), and the pinned range must have them (issue 17)."""

from __future__ import annotations

import importlib

import pytest
from uvicorn.protocols.http import httptools_impl

import gateway.http_protocol as protocol


def test_every_overridden_method_exists_in_uvicorn_and_is_overridden() -> None:
    for name in protocol.OVERRIDDEN:
        assert callable(getattr(httptools_impl.HttpToolsProtocol, name, None)), name
        assert name in vars(protocol.GatewayHttpProtocol), name


def test_a_uvicorn_without_one_of_them_is_refused_at_import(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(httptools_impl.HttpToolsProtocol, "_start_asgi_task")
    with pytest.raises(ImportError, match="_start_asgi_task"):
        importlib.reload(protocol)
    monkeypatch.undo()
    importlib.reload(protocol)  # the module as it was, for the tests that follow
    assert protocol.GatewayHttpProtocol.__name__ == "GatewayHttpProtocol"
