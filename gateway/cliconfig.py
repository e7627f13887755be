"""The configuration a command runs with, and its one failure mode.

``--config FILE`` is that file; no file is the demo's defaults (``gateway.demo.profile``), as
CONTRACT section 2 says for ``gateway serve``; ``GATEWAY_*`` variables apply on top of either. Any
``ConfigError`` is one line on stderr, ``gateway: configuration error: <key>: <problem>``, and exit
status 2, the same for ``serve``, ``policy replay`` and the ``audit`` commands.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import NoReturn, TypeVar

from gateway.config import Config, ConfigError, load_config, load_section
from gateway.demo.profile import defaults_for
from gateway.settings import Section

S = TypeVar("S", bound=Section)
EXIT_CONFIG = 2


def load(path: str | os.PathLike[str] | None, environ: Mapping[str, str] | None = None) -> Config:
    return load_config(path, environ, defaults=defaults_for(path))


def load_or_exit(path: str | os.PathLike[str] | None, environ: Mapping[str, str] | None = None) -> Config:
    try:
        return load(path, environ)
    except ConfigError as exc:
        fail(exc)


def section_or_exit(cls: type[S], path: str | os.PathLike[str] | None, environ: Mapping[str, str] | None = None) -> S:
    try:
        return load_section(cls, path, environ, defaults=defaults_for(path))
    except ConfigError as exc:
        fail(exc)


def fail(exc: ConfigError) -> NoReturn:
    print(f"gateway: configuration error: {exc}", file=sys.stderr)
    raise SystemExit(EXIT_CONFIG)
