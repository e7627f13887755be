"""``gateway dev-idp`` and ``gateway token``."""

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

    import uvicorn

    from gateway.identity.devidp import create_app

    authority = args.authority or _authority(args.host, args.port)
    app = create_app(dev_dir, authority=authority)
    ring = load_key_ring(dev_dir)
    print(
        f"dev IdP at {authority} (signing key {ring.signing_kid}, keys in {keys_path(dev_dir)})",
        file=sys.stderr,
        flush=True,
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


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
    action = idp.add_mutually_exclusive_group()
    action.add_argument(
        "--rotate", action="store_true", help="publish a new key, make it the signing key, print its kid"
    )
    action.add_argument("--prune", action="store_true", help="unpublish every key but the signing one")
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
