"""``gateway demo-upstream``: the reference internal services alone, under uvicorn.

Heavy imports happen in the handler, so that building the ``gateway`` command line stays cheap.
"""

from __future__ import annotations

import argparse
import signal
import sys
from types import FrameType
from typing import Any

from gateway.demo.tenants import GATEWAY_PORT, UPSTREAM_PORT

#: Seconds uvicorn waits for in-flight requests after SIGINT/SIGTERM before closing them.
GRACEFUL_SHUTDOWN_SECONDS = 5


class _Terminated(Exception):
    """SIGTERM arrived: uvicorn has already shut down gracefully (or had not started yet)."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise _Terminated


def run_demo_upstream(args: argparse.Namespace) -> int:
    import uvicorn

    from gateway.demo.ports import PortUnavailable, busy_message, check_port

    try:
        check_port(args.host, args.port)
    except PortUnavailable as exc:
        choose = "choose another with --port PORT"
        print(busy_message("gateway demo-upstream", "the reference services", exc, choose), file=sys.stderr)
        return 1

    from gateway.demo.upstream import create_upstream_app

    app: Any = create_upstream_app()
    if args.require_assertion:  # identity from the gateway's signed assertion only (gateway/assertion.py)
        from gateway.assertion import AssertionVerifier, RequireAssertion

        audience = args.assertion_audience or f"http://{args.host}:{args.port}"
        app = RequireAssertion(app, AssertionVerifier(args.gateway_jwks, audience))
        print(f"requiring X-Gateway-Assertion (keys: {args.gateway_jwks}, audience {audience})", file=sys.stderr)
    print(f"reference services on http://{args.host}:{args.port} (Ctrl-C stops)", file=sys.stderr, flush=True)
    # uvicorn handles SIGINT and SIGTERM itself while serving (it lets in-flight requests finish),
    # then restores the previous handlers and re-raises the signal. It swallows the KeyboardInterrupt
    # of SIGINT; catching the re-raised SIGTERM here makes that stop an ordinary exit (status 0) too.
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        uvicorn.run(
            app,
            host=args.host,
            port=args.port,
            loop="uvloop",
            http="httptools",
            lifespan="off",
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        )
    except _Terminated:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo-upstream",
        help="run the reference internal services (fixture data for two tenants)",
        description="The reference internal services (section 6 of the contract, policies/sources/CONTRACT.md): "
        "deterministic fixture data for two tenants. They trust the gateway's X-Gateway-* headers, "
        "so keep them on loopback.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=UPSTREAM_PORT, help=f"port to listen on (default: {UPSTREAM_PORT})"
    )
    parser.add_argument("--require-assertion", action="store_true",
                        help="refuse (401) every request without a valid X-Gateway-Assertion signed by the gateway")
    parser.add_argument("--gateway-jwks", default=f"http://127.0.0.1:{GATEWAY_PORT}/.well-known/jwks.json",
                        metavar="URL", help="with --require-assertion: the gateway's public keys")
    parser.add_argument("--assertion-audience", default="", metavar="URL",
                        help="with --require-assertion: the aud to expect (default: http://HOST:PORT)")
    parser.set_defaults(func=run_demo_upstream)
