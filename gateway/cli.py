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


class CommandModuleMissing(Exception):
    """A module of ``COMMAND_MODULES``, or one it imports, is not installed: a broken installation."""

    def __init__(self, module: str, missing: str | None) -> None:
        what = "it is not installed" if missing in (None, module) else f"it needs {missing}, which is not installed"
        super().__init__(f"gateway: cannot load the sub-commands of {module}: {what}; reinstall the gateway")


def build_parser() -> argparse.ArgumentParser:
    """Every sub-command; raises ``CommandModuleMissing`` rather than leave a command out."""
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
            raise CommandModuleMissing(name, exc.name) from exc
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
    try:
        parser = build_parser()
    except CommandModuleMissing as exc:
        print(exc, file=sys.stderr)
        return 1
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
