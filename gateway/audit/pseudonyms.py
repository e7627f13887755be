"""The gateway's pseudonym key: what turns personal values into stable pseudonyms in the audit store.

Values the store must be able to compare but never reveal (the e-mail address a request body names,
the opt-out entries it matched) are kept as HMAC-SHA256 under this key. Equal values give equal
pseudonyms, so queries and replays work on them; without the key a pseudonym cannot be tested against
a guessed address, so the store alone gives no address away.

The key is 32 random bytes in a file of its own (``audit.pseudonym_key_file``; default: beside the
store, ``<audit.path>.pseudonym-key``), created on first use with mode 0600 and never logged. Keep it
somewhere other than the store's backups when they leave the machine. Losing it loses nothing that was
recorded, but new records' pseudonyms no longer match old ones; replacing it on purpose is how old
pseudonyms are made unlinkable.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Callable
from pathlib import Path

KEY_BYTES = 32
PSEUDONYM_PREFIX = "p:"

Pseudonymise = Callable[[str], str]


def pseudonymiser(key: bytes) -> Pseudonymise:
    """A keyed, deterministic pseudonym (128 bits of HMAC-SHA256): equal values give equal pseudonyms;
    testing a guessed value needs the key."""

    def pseudonym(value: str) -> str:
        return PSEUDONYM_PREFIX + hmac.new(key, value.encode(), hashlib.sha256).hexdigest()[:32]

    return pseudonym


class PseudonymKeyError(Exception):
    """The key file exists but cannot be used (unreadable, wrong size, readable by others)."""


def key_path(audit_path: str, configured: str = "") -> Path:
    return Path(configured) if configured else Path(f"{audit_path}.pseudonym-key")


def load_or_create_key(path: Path) -> bytes:
    """The key in ``path``, created (0600) when the file does not exist yet."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        key = secrets.token_bytes(KEY_BYTES)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another worker made it first: use theirs
            return load_or_create_key(path)
        with os.fdopen(fd, "wb") as handle:
            handle.write(key)
            handle.flush()
            os.fsync(handle.fileno())
        return key
    except OSError as exc:
        raise PseudonymKeyError(f"{path}: cannot read the pseudonym key: {exc.strerror}") from None
    if len(data) != KEY_BYTES:
        raise PseudonymKeyError(f"{path}: a pseudonym key is {KEY_BYTES} bytes, this file has {len(data)}")
    if os.name == "posix" and path.stat().st_mode & 0o077:
        raise PseudonymKeyError(f"{path}: the pseudonym key must be readable by its owner only (chmod 600)")
    return data
