"""The dev IdP's app registrations: which client applications may get app-only tokens, with which roles.

At Entra, a service that calls an API with client credentials is an app registration (client id,
secrets or certificates) whose service principal was assigned the API's app roles in a tenant; the
token's ``roles`` claim is those assignments. The dev IdP keeps the same facts in
``<dev-dir>/idp/apps.json`` (mode 0600, never committed), one entry per app::

    {"format": 1, "apps": [{"name": "mail-backend", "client_id": "<guid>", "roles": ["Service.Mail"],
      "tenants": ["<tid>", ...], "secrets": [{"sha256": "..."}],
      "certificates": [{"x5t": "...", "pem": "-----BEGIN CERTIFICATE-----..."}]}]}

Entries are written by ``gateway dev-idp --register-app NAME --roles R,...`` (or ``register_app``),
which prints the client id and a fresh secret once, as the Entra portal does; only the secret's
SHA-256 is stored (a random 40-character secret needs no slow hash). Registering a name again keeps
its client id and adds a secret (``--certificate PEM`` adds a certificate for client assertions
instead); roles and tenants are replaced. The client id of a name is the one ``gateway token --app
NAME`` uses, so a token from MSAL and one from ``gateway token`` name the same application.

What is not modelled: consent, per-tenant role assignments (an app has the same roles in every tenant
it is registered in), secret expiry, and which API the roles belong to (the dev IdP serves one API:
the gateway's).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import secrets
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from gateway.demo.tenants import TENANTS
from gateway.identity.devtokens import dev_guid
from gateway.identity.settings import is_guid

_FORMAT = 1
MAX_SECRETS = 8  # the oldest secret goes when a ninth is added


@dataclass(frozen=True, slots=True)
class DevApp:
    name: str
    client_id: str
    roles: tuple[str, ...]
    tenants: tuple[str, ...]
    secret_hashes: tuple[str, ...]
    certificates: tuple[tuple[str, bytes], ...]  # (x5t: base64url SHA-1 of the DER, PEM)

    def secret_matches(self, secret: str) -> bool:
        digest = _secret_hash(secret)
        found = False
        for known in self.secret_hashes:
            found |= hmac.compare_digest(known, digest)  # look at every one: no early exit
        return found

    def certificate(self, x5t: str | None, x5t_s256: str | None = None) -> x509.Certificate | None:
        """The registered certificate a client assertion's header names by ``x5t`` (SHA-1) or
        ``x5t#S256`` (SHA-256, what MSAL sends with ``public_certificate``); None when none matches."""
        for thumbprint, pem in self.certificates:
            certificate = x509.load_pem_x509_certificate(pem)
            if x5t_s256 is not None:
                der = certificate.public_bytes(serialization.Encoding.DER)
                if hmac.compare_digest(_b64url(hashlib.sha256(der).digest()), x5t_s256):
                    return certificate
            elif x5t is not None and hmac.compare_digest(thumbprint, x5t):
                return certificate
        return None


def apps_path(dev_dir: str | os.PathLike[str]) -> Path:
    return Path(dev_dir) / "idp" / "apps.json"


def app_client_id(name: str) -> str:
    """The client id of a registered name: a GUID stays itself, a name gives ``gateway token --app``'s."""
    return name.lower() if is_guid(name.lower()) else dev_guid("app", name)


def certificate_thumbprint(pem: bytes) -> str:
    """``x5t``: base64url of the SHA-1 of the certificate's DER, as in a client assertion's header."""
    der = x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)
    return _b64url(hashlib.sha1(der, usedforsecurity=False).digest())


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def load_apps(dev_dir: str | os.PathLike[str]) -> dict[str, DevApp]:
    """The registered apps by client id ({} when none is registered)."""
    try:
        data = apps_path(dev_dir).read_bytes()
    except FileNotFoundError:
        return {}
    return {app.client_id: app for app in _from_json(data)}


def find_app(dev_dir: str | os.PathLike[str], client_id: str) -> DevApp | None:
    return load_apps(dev_dir).get(client_id.strip().lower())


def register_app(
    dev_dir: str | os.PathLike[str],
    name: str,
    *,
    roles: Iterable[str],
    tenants: Iterable[str] = TENANTS,
    certificate_pem: bytes | None = None,
) -> tuple[DevApp, str | None]:
    """Register (or update) ``name``: the app, and its new secret (None when a certificate was added)."""
    name = name.strip()
    if not name or len(name) > 128 or not name.isprintable():
        raise ValueError("an app name is 1 to 128 printable characters")
    tenant_list = tuple(t.strip().lower() for t in tenants)
    if not tenant_list or not all(is_guid(t) for t in tenant_list):
        raise ValueError("tenants must be tenant ids (GUIDs)")
    role_list = tuple(dict.fromkeys(r.strip() for r in roles if r.strip()))
    client_id = app_client_id(name)
    secret = None if certificate_pem is not None else _new_secret()
    certificate = None
    if certificate_pem is not None:
        certificate = (certificate_thumbprint(certificate_pem), certificate_pem)
    with _locked(dev_dir) as path:
        apps = {a.client_id: a for a in (_from_json(path.read_bytes()) if path.exists() else [])}
        old = apps.get(client_id)
        hashes = old.secret_hashes if old else ()
        certificates = old.certificates if old else ()
        if secret is not None:
            hashes = (*hashes, _secret_hash(secret))[-MAX_SECRETS:]
        if certificate is not None:
            certificates = (*(c for c in certificates if c[0] != certificate[0]), certificate)
        app = DevApp(name, client_id, role_list, tenant_list, hashes, certificates)
        apps[client_id] = app
        _write(path, _to_json(apps.values()))
    return app, secret


def _new_secret() -> str:
    # Shaped like an Entra client secret: 40 characters with a "~" after a three-character hint.
    token = secrets.token_urlsafe(30)
    return f"{token[:3]}8Q~{token[3:37]}"


def _secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def _to_json(apps: Iterable[DevApp]) -> bytes:
    entries: list[dict[str, Any]] = [
        {
            "name": app.name,
            "client_id": app.client_id,
            "roles": list(app.roles),
            "tenants": list(app.tenants),
            "secrets": [{"sha256": digest} for digest in app.secret_hashes],
            "certificates": [{"x5t": x5t, "pem": pem.decode("ascii")} for x5t, pem in app.certificates],
        }
        for app in sorted(apps, key=lambda a: a.name)
    ]
    return json.dumps({"format": _FORMAT, "apps": entries}, indent=1).encode()


def _from_json(data: bytes) -> list[DevApp]:
    document = json.loads(data)
    if not isinstance(document, dict) or document.get("format") != _FORMAT:
        raise ValueError("the dev app registry is not in a format this version reads")
    return [
        DevApp(
            name=str(entry["name"]),
            client_id=str(entry["client_id"]).lower(),
            roles=tuple(str(r) for r in entry.get("roles", [])),
            tenants=tuple(str(t).lower() for t in entry.get("tenants", [])),
            secret_hashes=tuple(str(s["sha256"]) for s in entry.get("secrets", [])),
            certificates=tuple((str(c["x5t"]), str(c["pem"]).encode("ascii")) for c in entry.get("certificates", [])),
        )
        for entry in document.get("apps", [])
    ]


@contextlib.contextmanager
def _locked(dev_dir: str | os.PathLike[str]) -> Iterator[Path]:
    path = apps_path(dev_dir)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path.parent / "apps.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield path
    finally:
        os.close(fd)


def _write(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".apps.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        raise
