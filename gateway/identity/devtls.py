"""A development certificate authority and the dev IdP's TLS certificate, kept in ``<dev-dir>/idp/tls/``.

Entra is only reachable over https, and so MSAL refuses any other authority. The dev IdP therefore
serves an https door (``gateway dev-idp --https-port``) with a certificate this module issues from a
CA of its own, both generated with ``cryptography`` on first use and kept with the dev key ring:

- ``ca.pem``: the CA certificate (public; what clients trust), ``ca-key.pem`` (0600)
- ``server.pem`` / ``server-key.pem`` (0600): the IdP's certificate for ``localhost``, ``127.0.0.1``
  and ``::1`` (plus any host the IdP is told to serve), signed by the CA

How a client trusts it: ``REQUESTS_CA_BUNDLE=.dev/idp/tls/ca.pem`` for anything on ``requests``
(MSAL included), ``verify=".dev/idp/tls/ca.pem"`` for MSAL explicitly, ``SSL_CERT_FILE`` for
``ssl.create_default_context()``. Never trust it system-wide: its key sits unprotected in the dev dir.

Trade-offs: a CA rather than a lone self-signed certificate, so the certificate can be reissued (a
new host, expiry) without clients trusting anything new; ECDSA P-256, which generates in
milliseconds; the server certificate lives 90 days and is reissued on use when less than 7 remain or
when a host is missing, the CA 10 years. The CA is constrained to issue end-entity certificates only
(``pathlen=0``) and carries the key-usage and key-identifier extensions that strict X.509
verification (Python 3.13's default) demands. Files are written under a lock and land by rename.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import ipaddress
import os
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_HOSTS = ("localhost", "127.0.0.1", "::1")
CA_DAYS = 3650
SERVER_DAYS = 90
RENEW_DAYS = 7


@dataclass(frozen=True, slots=True)
class DevTls:
    ca_path: Path  # trust this
    cert_path: Path
    key_path: Path


def tls_dir(dev_dir: str | os.PathLike[str]) -> Path:
    return Path(dev_dir) / "idp" / "tls"


def dev_tls(dev_dir: str | os.PathLike[str], hosts: Iterable[str] = DEFAULT_HOSTS) -> DevTls:
    """The CA and a current server certificate covering ``hosts`` (and the defaults), created or
    reissued as needed."""
    wanted = tuple(dict.fromkeys((*DEFAULT_HOSTS, *(h for h in hosts if h))))
    folder = tls_dir(dev_dir)
    paths = DevTls(folder / "ca.pem", folder / "server.pem", folder / "server-key.pem")
    with _locked(folder):
        ca_key_path = folder / "ca-key.pem"
        if not (paths.ca_path.exists() and ca_key_path.exists()):
            ca_key, ca_cert = _new_ca()
            _write(ca_key_path, _key_pem(ca_key), 0o600)
            _write(paths.ca_path, ca_cert.public_bytes(serialization.Encoding.PEM), 0o644)
            _remove(paths.cert_path)
        ca_cert = x509.load_pem_x509_certificate(paths.ca_path.read_bytes())
        if _server_needs_issuing(paths.cert_path, ca_cert, wanted):
            loaded = serialization.load_pem_private_key(ca_key_path.read_bytes(), password=None)
            if not isinstance(loaded, ec.EllipticCurvePrivateKey):
                raise ValueError(f"{ca_key_path} does not hold the dev CA's EC key")
            key, cert = _new_server(loaded, ca_cert, wanted)
            _write(paths.key_path, _key_pem(key), 0o600)
            _write(paths.cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return paths


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _key_usage(*, signs_certificates: bool) -> x509.KeyUsage:
    """A CA signs certificates and CRLs; the server's key only signs (ECDHE handshakes)."""
    return x509.KeyUsage(
        digital_signature=not signs_certificates,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=signs_certificates,
        crl_sign=signs_certificates,
        encipher_only=False,
        decipher_only=False,
    )


def _new_ca() -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "privacy-gateway dev CA (never trust system-wide)")])
    now = _now()
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(signs_certificates=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _new_server(
    ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, hosts: tuple[str, ...]
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "privacy-gateway dev-idp")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(min(now + datetime.timedelta(days=SERVER_DAYS), ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(signs_certificates=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def _server_needs_issuing(path: Path, ca_cert: x509.Certificate, hosts: tuple[str, ...]) -> bool:
    if not path.exists() or not path.with_name("server-key.pem").exists():
        return True
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return True
    covered = {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}
    covered |= {name.lower() for name in sans.get_values_for_type(x509.DNSName)}
    missing = any(_canonical(h) not in covered for h in hosts)
    expiring = cert.not_valid_after_utc - _now() < datetime.timedelta(days=RENEW_DAYS)
    return missing or expiring or cert.issuer != ca_cert.subject


def _canonical(host: str) -> str:
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host.lower()


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _write(path: Path, data: bytes, mode: int) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        _remove(temporary)
        raise


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(folder / "tls.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
