"""The ``gateway`` command. Each package contributes its own sub-commands through ``register``."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Modules that define ``register(subparsers)``; each adds its commands with ``set_defaults(func=...)``
# where ``func(args) -> int`` is the exit status.
COMMAND_MODULES = (
    "gateway.serve",
    "gateway.extauthz.envoyconfig",
    "gateway.demo.commands",
    "gateway.demo.stack",
    "gateway.identity.commands",
    "gateway.authz.commands",
    "gateway.audit.commands",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gateway",
        description="Privacy-enforcing access gateway: Entra ID authentication, Cedar authorization "
        "by purpose, field masking and a durable audit trail.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.register(subparsers)
    return parser


def _port_taken(args: argparse.Namespace) -> str | None:
    """``gateway dev-idp`` (defined in gateway.identity) checks its port here, before it starts: the
    one-line error when the port is taken, or None."""
    if args.command != "dev-idp" or getattr(args, "rotate", False) or getattr(args, "prune", False):
        return None
    from gateway.demo.ports import PortUnavailable, busy_message, check_port

    try:
        check_port(args.host, args.port)
    except PortUnavailable as exc:
        return busy_message("gateway dev-idp", "the dev identity provider", exc, "choose another with --port PORT")
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    taken = _port_taken(args)
    if taken is not None:
        print(taken, file=sys.stderr)
        return 1
    try:
        status: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    return status


if __name__ == "__main__":
    sys.exit(main())
