"""What every package's settings type is made of: ``ConfigError`` and declared, checked fields.

Each package owns one frozen dataclass for its configuration section (``ServerSettings``,
``UpstreamSettings``, ``IdentitySettings``, ``PoliciesSettings``, ``AuditSettings``) and states the
range of each field where the field is declared::

    queue_size: int = setting(10000, minimum=1)

``check_fields`` (called from the type's ``__post_init__``) enforces those declarations, and the
type adds the checks a range cannot say (a GUID, a URL). A refused value is a ``ConfigError``
naming its key, ``<section>.<field>``, whether the value came from a file, the environment or
code. ``gateway.config`` reads TOML and ``GATEWAY_*`` variables into these types; it never checks
values itself.

Trade-off: plain dataclasses and ~60 lines instead of pydantic. Field metadata carries what the
reader and the checks need, the settings stay cheap to build in tests, and the error wording (one
line, the key first) is ours rather than a validation library's multi-line report.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Protocol, TypeVar
from urllib.parse import urlsplit

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value refused, worded for one line: ``<key>: <problem>``."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem


class Section(Protocol):
    """A settings type: a dataclass that knows its section name."""

    SECTION: ClassVar[str]
    __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]


def setting(
    default: T,
    *,
    minimum: float | None = None,
    above: float | None = None,
    maximum: float | None = None,
    choices: tuple[str, ...] | None = None,
    internal: bool = False,
) -> T:
    """A field with its default and the values it accepts.

    ``minimum``/``maximum`` are inclusive, ``above`` exclusive. ``internal`` fields are tuning knobs
    that code and tests set (a retry delay, a linger time) but that are no configuration key: the
    reader refuses them as unknown, so the documented surface stays what README lists.
    """
    metadata = {"minimum": minimum, "above": above, "maximum": maximum, "choices": choices, "internal": internal}
    field: T = dataclasses.field(default=default, metadata=metadata)
    return field


def config_fields(cls: type[Any]) -> tuple[dataclasses.Field[Any], ...]:
    """The fields of a settings type that are configuration keys."""
    return tuple(f for f in dataclasses.fields(cls) if not f.metadata.get("internal", False))


def check_fields(instance: Section) -> None:
    """Every declared range and choice, in field order; the first violation is the error."""
    for field in dataclasses.fields(instance):
        meta = field.metadata
        value = getattr(instance, field.name)
        key = f"{instance.SECTION}.{field.name}"
        if meta.get("choices") is not None and value not in meta["choices"]:
            choices = [repr(choice) for choice in meta["choices"]]
            expected = " or ".join(choices) if len(choices) <= 2 else f"one of {', '.join(choices)}"
            raise ConfigError(key, f"expected {expected}, got {value!r}")
        if meta.get("minimum") is not None and value < meta["minimum"]:
            raise ConfigError(key, f"must be at least {_number(meta['minimum'])}, got {_number(value)}")
        if meta.get("above") is not None and value <= meta["above"]:
            raise ConfigError(key, f"must be more than {_number(meta['above'])}, got {_number(value)}")
        if meta.get("maximum") is not None and value > meta["maximum"]:
            raise ConfigError(key, f"must be at most {_number(meta['maximum'])}, got {_number(value)}")


def check_http_url(key: str, url: str, *, empty_ok: bool = False) -> None:
    if empty_ok and not url:
        return
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(key, f"expected an http(s) URL, got {url!r}")


def _number(value: Any) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)
