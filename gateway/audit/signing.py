"""Ed25519 keys in files of their own, and the JWS (EdDSA) the gateway signs with them.

Used for the audit key (``audit.signing_key_file``: checkpoints and purge markers) and for the
assertion keys (``gateway/assertion.py``). A key file holds one PKCS#8 PEM private key, is created on
first use with mode 0600 (``O_EXCL``: two workers starting together end up with the same key) and is
refused when others can read it. A key never appears in a log or an error message: errors name the
file only.

Ed25519 rather than ES256: deterministic signatures (no nonce to get wrong), 32-byte keys, and about
half the signing cost in OpenSSL. A key's id (``kid``) is its RFC 7638 JWK thumbprint, so anyone
holding the public key can recompute it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

ALGORITHM = "EdDSA"


class KeyFileError(Exception):
    """A key file that exists but cannot be used (unreadable, not a key, readable by others)."""


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def public_raw(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def thumbprint(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """RFC 7638: SHA-256 over the required members of the JWK, in lexical order, no whitespace."""
    members = json.dumps({"crv": "Ed25519", "kty": "OKP", "x": b64url(public_raw(key))}, separators=(",", ":"))
    return b64url(hashlib.sha256(members.encode()).digest())


def public_jwk(key: Ed25519PrivateKey | Ed25519PublicKey) -> dict[str, str]:
    return {"kty": "OKP", "crv": "Ed25519", "x": b64url(public_raw(key)), "kid": thumbprint(key),
            "alg": ALGORITHM, "use": "sig"}


def key_from_jwk(jwk: dict[str, Any]) -> Ed25519PublicKey:
    """The public key of an OKP/Ed25519 JWK (whose ``kid``, if any, must be its thumbprint)."""
    if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519" or not isinstance(jwk.get("x"), str):
        raise ValueError("not an Ed25519 JWK")
    raw = base64.urlsafe_b64decode(jwk["x"] + "=" * (-len(jwk["x"]) % 4))
    key = Ed25519PublicKey.from_public_bytes(raw)
    if "kid" in jwk and jwk["kid"] != thumbprint(key):
        raise ValueError("the JWK's kid is not its thumbprint")
    return key


def pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def load_pem(data: bytes, where: str) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise KeyFileError(f"{where}: not a PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{where}: not an Ed25519 key")
    return key


def check_private(path: Path) -> None:
    if os.name == "posix" and path.stat().st_mode & 0o077:
        raise KeyFileError(f"{path}: a signing key must be readable by its owner only (chmod 600)")


def write_private(path: Path, data: bytes) -> bool:
    """Create ``path`` (0600) with ``data``; False when it already exists."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    return True


def load_or_create_key(path: Path) -> Ed25519PrivateKey:
    """The Ed25519 key in ``path``, created (0600) when the file does not exist yet."""
    for _ in range(3):
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            try:  # then read back what is on disk: another process may have won the race
                write_private(path, pem(Ed25519PrivateKey.generate()))
            except OSError as exc:
                raise KeyFileError(f"{path}: cannot create the signing key: {exc.strerror}") from None
            continue
        except OSError as exc:
            raise KeyFileError(f"{path}: cannot read the signing key: {exc.strerror}") from None
        check_private(path)
        return load_pem(data, str(path))
    raise KeyFileError(f"{path}: the signing key could not be created")


class Signer:
    """Signs compact JWS with one Ed25519 key (``kid`` = its thumbprint)."""

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self.key = key
        self.kid = thumbprint(key)
        self.jwk = public_jwk(key)
        self._headers = {"kid": self.kid}

    def sign(self, claims: dict[str, Any], typ: str | None = None) -> str:
        headers = self._headers if typ is None else {**self._headers, "typ": typ}
        return jwt.encode(claims, self.key, algorithm=ALGORITHM, headers=headers)


def verify_jws(token: str, keys: dict[str, Ed25519PublicKey]) -> dict[str, Any]:
    """The claims of ``token`` if one of ``keys`` (by kid) signed it; ``jwt.InvalidTokenError`` if not.

    Checkpoints have no ``exp``: they are evidence, valid forever.
    """
    kid = jwt.get_unverified_header(token).get("kid")
    key = keys.get(kid) if isinstance(kid, str) else None
    if key is None:
        raise jwt.InvalidSignatureError(f"signed with an unknown key {kid!r}")
    claims: dict[str, Any] = jwt.decode(token, key, algorithms=[ALGORITHM], options={"verify_exp": False,
                                                                                      "verify_aud": False})
    return claims
