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


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        status: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    return status


if __name__ == "__main__":
    sys.exit(main())
