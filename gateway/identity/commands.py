"""``gateway dev-idp`` and ``gateway token``.

``gateway dev-idp`` serves the dev IdP on http (``--port``, the authority the gateway trusts) and,
with ``--https-port``, on https too, with a certificate from the dev CA in ``DEV_DIR/idp/tls`` (both
doors are one IdP with one issuer: ``devidp``). ``--register-app NAME --roles R,...`` registers a
client application for the client credentials grant and prints its client id and a new secret
(``--certificate PEM`` registers a certificate for client assertions instead); ``--list-apps`` shows
the registry. Those, like ``--rotate`` and ``--prune``, change the dev dir and exit.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from gateway.demo.tenants import CONTOSO_TENANT, IDP_PORT

DEFAULT_DEV_DIR = ".dev"


def _csv(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def _authority(host: str, port: int) -> str:
    reachable = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
    if ":" in reachable:
        reachable = f"[{reachable}]"
    return f"http://{reachable}:{port}"


def _register_app(args: argparse.Namespace, dev_dir: Path) -> int:
    from gateway.demo.tenants import TENANTS
    from gateway.identity.devapps import apps_path, register_app

    certificate = None
    if args.certificate:
        try:
            certificate = Path(args.certificate).read_bytes()
        except OSError as exc:
            print(f"gateway dev-idp: cannot read {args.certificate}: {exc.strerror}", file=sys.stderr)
            return 2
    try:
        app, secret = register_app(
            dev_dir, args.register_app, roles=_csv(args.roles), tenants=_csv(args.tenants) or TENANTS,
            certificate_pem=certificate,
        )  # fmt: skip
    except ValueError as exc:
        print(f"gateway dev-idp: {exc}", file=sys.stderr)
        return 2
    print(f"client_id={app.client_id}")
    if secret is not None:
        print(f"client_secret={secret}")
    print(
        f"registered {app.name!r} in {apps_path(dev_dir)} with roles {', '.join(app.roles) or '(none)'} "
        f"in {len(app.tenants)} tenant(s); the secret is shown this once",
        file=sys.stderr,
    )
    return 0


def _list_apps(dev_dir: Path) -> int:
    from gateway.identity.devapps import load_apps

    for app in load_apps(dev_dir).values():
        print(
            f"{app.client_id}  {app.name}  roles={','.join(app.roles)}  tenants={','.join(app.tenants)}  "
            f"secrets={len(app.secret_hashes)}  certificates={len(app.certificates)}"
        )
    return 0


def run_dev_idp(args: argparse.Namespace) -> int:
    from gateway.identity.devkeys import keys_path, load_key_ring, prune_keys, rotate_keys

    dev_dir = Path(args.dev_dir)
    if args.rotate:
        kid = rotate_keys(dev_dir)
        print(kid)
        return 0
    if args.prune:
        for kid in prune_keys(dev_dir):
            print(kid)
        return 0
    if args.register_app:
        return _register_app(args, dev_dir)
    if args.list_apps:
        return _list_apps(dev_dir)

    from gateway.identity.devidp import create_app

    authority = args.authority or _authority(args.host, args.port)
    https_authority = None
    if args.https_port is not None:
        https_authority = _authority(args.host, args.https_port).replace("http://", "https://", 1)
    app = create_app(dev_dir, authority=authority, https_authority=https_authority)
    ring = load_key_ring(dev_dir)
    print(
        f"dev IdP at {authority} (signing key {ring.signing_kid}, keys in {keys_path(dev_dir)})",
        file=sys.stderr,
        flush=True,
    )
    if https_authority is None:
        import uvicorn

        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
        return 0
    from gateway.identity.devtls import dev_tls

    tls = dev_tls(dev_dir, [args.host])
    print(
        f"dev IdP also at {https_authority} for MSAL (trust {tls.ca_path}: REQUESTS_CA_BUNDLE or "
        f"msal's verify=; instance_discovery=False)",
        file=sys.stderr,
        flush=True,
    )
    import asyncio

    asyncio.run(_serve_both(app, args.host, args.port, args.https_port, tls.cert_path, tls.key_path))
    return 0


async def _serve_both(app: Any, host: str, port: int, https_port: int, cert: Path, key: Path) -> None:
    """One IdP on two listeners: plain http and https. Either stopping (a signal) stops both."""
    import asyncio

    import uvicorn

    plain = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    secure = uvicorn.Server(
        uvicorn.Config(app, host=host, port=https_port, log_level="warning",
                       ssl_certfile=str(cert), ssl_keyfile=str(key))
    )  # fmt: skip

    async def linked() -> None:
        # Both servers install their signal handlers; only the last one's fires, so pass it on.
        while not (plain.should_exit or secure.should_exit):
            await asyncio.sleep(0.2)
        plain.should_exit = secure.should_exit = True

    await asyncio.gather(plain.serve(), secure.serve(), linked())


def run_token(args: argparse.Namespace) -> int:
    from gateway.identity.devtokens import mint_token

    try:
        token = mint_token(
            Path(args.dev_dir),
            args.tenant,
            user=args.user,
            app=args.app,
            roles=_csv(args.roles),
            scopes=_csv(args.scopes),
            version=args.version,
            ttl=args.ttl,
            audience=args.audience,
            authority=args.authority,
        )
    except ValueError as exc:
        print(f"gateway token: {exc}", file=sys.stderr)
        return 2
    print(token)
    return 0


def register(subparsers: Any) -> None:
    idp = subparsers.add_parser(
        "dev-idp",
        help="run the local Entra-compatible identity provider",
        description="Serve Entra's discovery and key paths for any tenant, with a signing key kept in "
        "DEV_DIR/idp (never commit it). --rotate / --prune change the keys and exit.",
    )
    idp.add_argument("--host", default="127.0.0.1")
    idp.add_argument("--port", type=int, default=IDP_PORT)
    idp.add_argument("--dev-dir", default=DEFAULT_DEV_DIR, help="default: .dev")
    idp.add_argument("--authority", help="URL clients use to reach it (default: http://HOST:PORT)")
    idp.add_argument(
        "--https-port", type=int, metavar="PORT",
        help="also serve https on PORT (certificate from the dev CA in DEV_DIR/idp/tls), for MSAL",
    )  # fmt: skip
    action = idp.add_mutually_exclusive_group()
    action.add_argument(
        "--rotate", action="store_true", help="publish a new key, make it the signing key, print its kid"
    )
    action.add_argument("--prune", action="store_true", help="unpublish every key but the signing one")
    action.add_argument(
        "--register-app", metavar="NAME",
        help="register a client application for client credentials; prints client_id and a new client_secret",
    )  # fmt: skip
    action.add_argument("--list-apps", action="store_true", help="print the registered applications")
    idp.add_argument("--roles", default="", metavar="R,...", help="with --register-app: the app's roles")
    idp.add_argument(
        "--tenants", default="", metavar="TID,...", help="with --register-app: default both demo tenants"
    )
    idp.add_argument(
        "--certificate", metavar="PEM", help="with --register-app: a certificate for client assertions"
    )
    idp.set_defaults(func=run_dev_idp)

    token = subparsers.add_parser(
        "token",
        help="mint an access token signed with the dev IdP's key",
        description="Print an Entra-shaped access token (delegated by default, app-only with --app).",
    )
    token.add_argument("--tenant", default=CONTOSO_TENANT)
    caller = token.add_mutually_exclusive_group()
    caller.add_argument("--user", metavar="OID", help="user oid, or a name turned into a stable oid")
    caller.add_argument("--app", metavar="APPID", help="app id (app-only token), or a name")
    token.add_argument("--roles", default="", metavar="R,...")
    token.add_argument("--scopes", default="", metavar="S,...", help="default for users: access_as_user")
    token.add_argument("--version", type=int, choices=(1, 2), default=2)
    token.add_argument("--ttl", type=int, default=3600, metavar="SECONDS")
    token.add_argument("--audience", help="default: the gateway's client id (v2) or App ID URI (v1)")
    token.add_argument("--dev-dir", default=DEFAULT_DEV_DIR, help="default: .dev")
    token.add_argument(
        "--authority", default=f"http://127.0.0.1:{IDP_PORT}", help="the dev IdP's URL (in the issuer)"
    )
    token.set_defaults(func=run_token)
