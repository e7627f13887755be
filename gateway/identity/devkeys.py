"""The dev IdP's RSA signing keys, persisted in ``<dev-dir>/idp/keys.json`` (mode 0600, never committed).

One file holds every published key and names the signing one, so the dev IdP (which re-reads it when
it changes) and ``gateway token`` (which signs with it, no running IdP needed) always agree. Changes
are made under a lock file and land by atomic rename, so readers see the old or the new ring, never
half of one. Rotation is two steps, as at Entra: a new key is published, then made the signing key;
the old one stays published until pruned, so tokens it signed keep verifying.

A key may be *bound* to one tenant: it is then published in every tenant's key set with that tenant's
issuer, which reproduces a key of one tenant showing up in another's set (as on ``/common``) to
exercise the validator's key-issuer check.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import fcntl
import hashlib
import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

KEY_BITS = 2048
_FORMAT = 1


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_uint(value: int) -> str:
    return b64url(value.to_bytes((value.bit_length() + 7) // 8, "big"))


@dataclass(frozen=True)
class DevKey:
    kid: str
    private_key: rsa.RSAPrivateKey
    certificate_der: bytes
    bound_tenant: str | None
    created_at: float

    def public_jwk(self, issuer: str | None) -> dict[str, Any]:
        """The key as Entra publishes it: ``kid`` = ``x5t`` (the certificate's SHA-1 thumbprint)."""
        numbers = self.private_key.public_key().public_numbers()
        jwk: dict[str, Any] = {
            "kty": "RSA",
            "use": "sig",
            "kid": self.kid,
            "x5t": self.kid,
            "n": _b64url_uint(numbers.n),
            "e": _b64url_uint(numbers.e),
            "x5c": [base64.b64encode(self.certificate_der).decode("ascii")],
        }
        if issuer is not None:
            jwk["issuer"] = issuer
        return jwk


@dataclass(frozen=True)
class DevKeyRing:
    signing_kid: str
    keys: tuple[DevKey, ...]

    @property
    def signing_key(self) -> DevKey:
        return self.key(self.signing_kid)

    def key(self, kid: str) -> DevKey:
        for key in self.keys:
            if key.kid == kid:
                return key
        raise KeyError(f"no key {kid!r} in the dev key ring")


def keys_path(dev_dir: str | os.PathLike[str]) -> Path:
    return Path(dev_dir) / "idp" / "keys.json"


def _new_key(bound_tenant: str | None = None) -> DevKey:
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "privacy-gateway dev-idp")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .sign(private_key, hashes.SHA256())
    )
    der = certificate.public_bytes(serialization.Encoding.DER)
    kid = b64url(hashlib.sha1(der, usedforsecurity=False).digest())
    return DevKey(kid, private_key, der, bound_tenant, time.time())


def _to_json(ring: DevKeyRing) -> bytes:
    keys = [
        {
            "kid": key.kid,
            "private_key_pem": key.private_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ).decode("ascii"),
            "certificate_der_b64": base64.b64encode(key.certificate_der).decode("ascii"),
            "bound_tenant": key.bound_tenant,
            "created_at": key.created_at,
        }
        for key in ring.keys
    ]
    return json.dumps({"format": _FORMAT, "signing_kid": ring.signing_kid, "keys": keys}, indent=1).encode()


def _from_json(data: bytes) -> DevKeyRing:
    document = json.loads(data)
    keys = []
    for entry in document["keys"]:
        # Our own key, written by us with mode 0600: skip the slow RSA consistency check on every load.
        private_key = serialization.load_pem_private_key(
            entry["private_key_pem"].encode("ascii"), password=None, unsafe_skip_rsa_key_validation=True
        )
        if not isinstance(private_key, rsa.RSAPrivateKey):
            raise ValueError("the dev key ring holds a key that is not RSA")
        keys.append(
            DevKey(
                kid=entry["kid"],
                private_key=private_key,
                certificate_der=base64.b64decode(entry["certificate_der_b64"]),
                bound_tenant=entry.get("bound_tenant"),
                created_at=float(entry["created_at"]),
            )
        )
    ring = DevKeyRing(signing_kid=document["signing_kid"], keys=tuple(keys))
    ring.signing_key  # noqa: B018 - fails on a ring whose signing key is missing
    return ring


# Parsed rings by path, reused while the file's (inode, mtime, size) is unchanged.
_parsed: dict[Path, tuple[tuple[int, int, int], DevKeyRing]] = {}
_parsed_lock = threading.Lock()


def _stat_key(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return st.st_ino, st.st_mtime_ns, st.st_size


@contextlib.contextmanager
def _locked(dev_dir: str | os.PathLike[str]) -> Iterator[Path]:
    path = keys_path(dev_dir)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path.parent / "keys.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield path
    finally:
        os.close(fd)


def _write(path: Path, ring: DevKeyRing) -> None:
    temporary = path.with_name(f".keys.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(_to_json(ring))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        raise


def load_key_ring(dev_dir: str | os.PathLike[str]) -> DevKeyRing:
    """The current key ring, created (one fresh RSA 2048 key) on first use."""
    path = keys_path(dev_dir)
    try:
        stamp = _stat_key(path)
    except FileNotFoundError:
        with _locked(dev_dir):
            if not path.exists():
                key = _new_key()
                _write(path, DevKeyRing(key.kid, (key,)))
        stamp = _stat_key(path)
    with _parsed_lock:
        known = _parsed.get(path)
    if known is not None and known[0] == stamp:
        return known[1]
    ring = _from_json(path.read_bytes())
    with _parsed_lock:
        _parsed[path] = (stamp, ring)
    return ring


def _update(dev_dir: str | os.PathLike[str], change: Any) -> DevKeyRing:
    load_key_ring(dev_dir)
    with _locked(dev_dir) as path:
        ring: DevKeyRing = change(_from_json(path.read_bytes()))
        _write(path, ring)
    return ring


def add_key(
    dev_dir: str | os.PathLike[str], *, activate: bool = False, bound_tenant: str | None = None
) -> str:
    """Publish a new key (and make it the signing key if ``activate``); returns its ``kid``."""
    if activate and bound_tenant is not None:
        raise ValueError("a tenant-bound key cannot become the signing key")
    key = _new_key(bound_tenant)
    _update(
        dev_dir,
        lambda ring: DevKeyRing(key.kid if activate else ring.signing_kid, (*ring.keys, key)),
    )
    return key.kid


def rotate_keys(dev_dir: str | os.PathLike[str]) -> str:
    """Publish a new key and sign with it from now on; the previous key stays published."""
    return add_key(dev_dir, activate=True)


def activate_key(dev_dir: str | os.PathLike[str], kid: str) -> None:
    """Make an already published key the signing key."""

    def change(ring: DevKeyRing) -> DevKeyRing:
        if ring.key(kid).bound_tenant is not None:
            raise ValueError("a tenant-bound key cannot become the signing key")
        return replace(ring, signing_kid=kid)

    _update(dev_dir, change)


def prune_keys(dev_dir: str | os.PathLike[str]) -> list[str]:
    """Stop publishing every key but the signing one; returns the removed ``kid`` values."""
    removed: list[str] = []

    def change(ring: DevKeyRing) -> DevKeyRing:
        removed.extend(key.kid for key in ring.keys if key.kid != ring.signing_kid)
        return DevKeyRing(ring.signing_kid, (ring.signing_key,))

    _update(dev_dir, change)
    return removed
