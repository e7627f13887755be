"""Configuration: one TOML file, overridden key by key by ``GATEWAY_<SECTION>_<KEY>`` variables.

This module only reads. Each section is the settings type of the package that uses it, which
declares its keys, types, defaults and checks (``gateway/settings.py``)::

    [server]    gateway.server_settings.ServerSettings
    [upstream]  gateway.upstream_settings.UpstreamSettings
    [identity]  gateway.identity.settings.IdentitySettings
    [policies]  gateway.authz.settings.PoliciesSettings
    [audit]     gateway.audit.settings.AuditSettings

One generic reader turns TOML values and environment strings into those types: the field's type
says how to parse (``tuple[str, ...]`` is a TOML list or a comma-separated variable), unknown
sections, keys and ``GATEWAY_*`` variables are errors, so a typo never silently falls back to a
default. Every problem is a ``ConfigError`` naming the key; the CLI prints it on one line and
exits 2 (``gateway/cliconfig.py``).

Layers, lowest first: the types' defaults (production: no tenant, no audience, Entra's authority),
``defaults`` (what ``gateway serve`` without ``--config`` runs: ``gateway.demo.profile``), the
file, the environment.
"""

from __future__ import annotations

import math
import os
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from gateway.audit.settings import AuditSettings
from gateway.authz.settings import PROJECT_ROOT, PoliciesSettings
from gateway.identity.settings import IdentitySettings
from gateway.server_settings import ServerSettings
from gateway.settings import ConfigError, Section, config_fields
from gateway.upstream_settings import UpstreamSettings

__all__ = [
    "PROJECT_ROOT",
    "SECTIONS",
    "AuditSettings",
    "Config",
    "ConfigError",
    "IdentitySettings",
    "PoliciesSettings",
    "ServerSettings",
    "UpstreamSettings",
    "load_config",
    "load_section",
]

ENV_PREFIX = "GATEWAY_"
S = TypeVar("S", bound=Section)
T = TypeVar("T")
Layer = Mapping[str, Mapping[str, Any]]


@dataclass(frozen=True)
class Config:
    server: ServerSettings
    upstream: UpstreamSettings
    identity: IdentitySettings
    policies: PoliciesSettings
    audit: AuditSettings
    source: str = "built-in defaults"  # the file, for messages


SECTIONS: dict[str, type[Any]] = {
    "server": ServerSettings,
    "upstream": UpstreamSettings,
    "identity": IdentitySettings,
    "policies": PoliciesSettings,
    "audit": AuditSettings,
}


def load_config(
    path: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    defaults: Layer | None = None,
) -> Config:
    """The whole configuration: ``defaults``, then the TOML file (if any), then ``GATEWAY_*`` variables."""
    raw = _Raw.read(path, os.environ if environ is None else environ, defaults or {})
    built = {name: raw.build(name, cls) for name, cls in SECTIONS.items()}
    return Config(**built, source=str(path) if path is not None else "built-in defaults")


def load_section(
    cls: type[S],
    path: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    defaults: Layer | None = None,
) -> S:
    """One section, for a command that needs no other (``gateway audit ...`` reads ``[audit]`` only,
    so an auditor's copy of the configuration need not have the policy files it names)."""
    raw = _Raw.read(path, os.environ if environ is None else environ, defaults or {})
    return raw.build(cls.SECTION, cls)


@dataclass
class _Raw:
    """Every section's values before parsing, and which of them came from the environment (strings)."""

    values: dict[str, dict[str, Any]]
    from_env: dict[str, set[str]]

    @classmethod
    def read(cls, path: str | os.PathLike[str] | None, env: Mapping[str, str], defaults: Layer) -> _Raw:
        raw = cls({name: {} for name in SECTIONS}, {name: set() for name in SECTIONS})
        raw.merge(defaults, "the built-in defaults")
        if path is not None:
            raw.merge(_read_toml(Path(path)), str(path))
        for name, value in env.items():
            if not name.startswith(ENV_PREFIX):
                continue
            section, _, key = name[len(ENV_PREFIX):].lower().partition("_")
            if section not in SECTIONS or not key:
                raise ConfigError(name, "unknown configuration variable (expected GATEWAY_<SECTION>_<KEY>)")
            raw.values[section][key] = value
            raw.from_env[section].add(key)
        return raw

    def merge(self, layer: Layer, origin: str) -> None:
        for section, values in layer.items():
            if section not in SECTIONS:
                raise ConfigError(section, f"unknown section in {origin}")
            if not isinstance(values, Mapping):
                raise ConfigError(section, "expected a table")
            self.values[section].update(values)

    def build(self, section: str, cls: type[T]) -> T:
        fields = {f.name: f for f in config_fields(cls)}
        hints = typing.get_type_hints(cls)
        kwargs: dict[str, Any] = {}
        for key, value in self.values[section].items():
            if key not in fields:
                raise ConfigError(f"{section}.{key}", "unknown key")
            kwargs[key] = _parse(f"{section}.{key}", hints[key], value, key in self.from_env[section])
        return cls(**kwargs)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError("--config", f"file not found: {path}") from None
    except OSError as exc:
        raise ConfigError("--config", f"cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("--config", f"{path} is not valid TOML: {exc}") from None


def _parse(key: str, annotation: Any, value: Any, from_env: bool) -> Any:
    """A TOML value (already typed) or an environment string, as the field's type; else the error."""
    if typing.get_origin(annotation) is tuple:
        if from_env:
            items: list[Any] = [part.strip() for part in str(value).split(",") if part.strip()]
        elif isinstance(value, list | tuple):
            items = list(value)
        else:
            raise ConfigError(key, f"expected a list, got {_kind(value)}")
        for item in items:
            if not isinstance(item, str):
                raise ConfigError(key, f"expected a list of strings, got an item of type {_kind(item)}")
        return tuple(items)
    if annotation is bool:
        if not from_env:
            if not isinstance(value, bool):
                raise ConfigError(key, f"expected a boolean, got {_kind(value)}")
            return value
        lowered = str(value).strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ConfigError(key, f"expected a boolean (true/false), got {value!r}")
    if annotation is int or annotation is float:
        return _number(key, annotation, value, from_env)
    if annotation is str:
        if not from_env and not isinstance(value, str):
            raise ConfigError(key, f"expected a string, got {_kind(value)}")
        return str(value)
    raise ConfigError(key, f"unsupported type {annotation!r}")  # pragma: no cover - a settings type's bug


def _number(key: str, annotation: type[int] | type[float], value: Any, from_env: bool) -> int | float:
    wanted = "an integer" if annotation is int else "a number"
    if from_env:
        try:
            number = annotation(str(value).strip())
        except ValueError:
            raise ConfigError(key, f"expected {wanted}, got {value!r}") from None
    else:
        accepted = (int,) if annotation is int else (int, float)
        if isinstance(value, bool) or not isinstance(value, accepted):
            raise ConfigError(key, f"expected {wanted}, got {_kind(value)}")
        number = annotation(value)
    if not math.isfinite(number):  # nan would pass every range check
        raise ConfigError(key, f"expected a finite number, got {value!r}")
    return number


def _kind(value: Any) -> str:
    return {
        bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list", dict: "a table",
    }.get(type(value), type(value).__name__)
