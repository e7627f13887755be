"""The authenticated caller, as the rest of the gateway sees it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling, taken only from a verified token (never from client-sent headers).

    A delegated token (it has ``scp``) is a human ``user``; an app-only token (``roles``, no ``scp``,
    ``idtyp=app``) is an ``app``. ``groups`` is ``None`` when Entra reported a group overage: the
    groups are then unknown, which is not the same as having none.
    """

    kind: Literal["user", "app"]
    id: str
    tenant: str
    roles: tuple[str, ...]
    scopes: tuple[str, ...]
    groups: tuple[str, ...] | None
    client_id: str
    token_version: Literal["1.0", "2.0"]
    expires_at: float

    @property
    def is_human(self) -> bool:
        return self.kind == "user"
