"""``gateway serve``: build the gateway from configuration and run it under uvicorn.

uvicorn runs with uvloop and httptools (httptools lets the gateway answer an oversized header block
with 431 itself; h11 answers 400 first). With ``--workers N`` uvicorn starts N processes, each of which
builds its own gateway from the configuration file named in ``PRIVACY_GATEWAY_CONFIG`` (a name outside
the ``GATEWAY_*`` namespace on purpose: those variables are configuration keys). On SIGTERM or Ctrl-C
uvicorn stops accepting, lets in-flight requests finish within ``server.graceful_shutdown_seconds``,
then the gateway drains its audit queue and closes.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

from gateway import cliconfig
from gateway.config import Config
from gateway.http_protocol import ProtocolLimits, ProtocolRefusal, RefusalHook, wired_protocol

CONFIG_ENV = "PRIVACY_GATEWAY_CONFIG"
logger = logging.getLogger("gateway")


def build_gateway(config: Config) -> Any:
    """Assemble the request path from its parts (imported here so `--help` stays fast). Every
    section was checked when the configuration loaded; the components take their sections as they are."""
    from gateway.app import Gateway
    from gateway.audit.log import AuditLog
    from gateway.audit.metrics import build_meter_provider
    from gateway.audit.pseudonyms import key_path, load_or_create_key, pseudonymiser
    from gateway.authz.authorizer import Authorizer
    from gateway.authz.prepare import RecordPreparer
    from gateway.identity.authenticator import Authenticator
    from gateway.proxy import UpstreamClient

    authenticator = Authenticator(config.identity)
    policies = config.policies
    authorizer = Authorizer.load_or_last_good(
        policies.authz(config.upstream.url), policies.last_good_path(config.audit.path)
    )
    audit = config.audit
    # Metrics go out beside the spans; with no endpoint the no-op provider keeps them free.
    meter_provider = build_meter_provider(audit.otlp_endpoint, audit.service_name) if audit.otlp_endpoint else None
    audit_log = AuditLog(
        audit,
        meter_provider=meter_provider,
        # the writer adds the decision's inputs, its shadow decision and its data subjects (authz/prepare.py)
        prepare=RecordPreparer(
            pseudonymiser(load_or_create_key(key_path(audit.path, audit.pseudonym_key_file))),
            (lambda: authorizer.shadow) if policies.shadow_dir else None,
        ),
    )
    from gateway.assertion import AssertionSigner, assertion_key_path

    upstream_config = config.upstream
    assertions = AssertionSigner(  # X-Gateway-Assertion and the resolver's reads (gateway/assertion.py)
        assertion_key_path(upstream_config.assertion_key_file, audit.path),
        audience=upstream_config.assertion_audience or upstream_config.url,
        ttl_seconds=upstream_config.assertion_ttl_seconds,
        rotation_seconds=upstream_config.assertion_key_rotation_hours * 3600,
    )
    authorizer.resolvers.request_headers = assertions.resolver_headers
    kind = Gateway
    if config.server.mode == "ext-authz":  # Envoy's authorization service (gateway/extauthz/)
        from gateway.extauthz.check import ExtAuthzGateway

        kind = ExtAuthzGateway
    gateway = kind(
        config, authenticator=authenticator, authorizer=authorizer, audit=audit_log,
        upstream=UpstreamClient(config.upstream), meter_provider=meter_provider,
    )
    gateway.assertions = assertions
    return gateway


_worker_gateway: list[Any] = []  # the gateway this worker process built (app_from_environment)


def app_from_environment() -> Any:
    """uvicorn factory for worker processes."""
    gateway = build_gateway(cliconfig.load(os.environ.get(CONFIG_ENV) or None))
    _worker_gateway[:] = [gateway]
    return gateway


def refusal_in_worker(refusal: ProtocolRefusal) -> None:
    """The refusal hook of a worker's protocol: the parent wires it by name (it pickles), and it audits
    with the gateway the worker built, which uvicorn loads before the worker accepts a connection."""
    if not _worker_gateway:
        raise RuntimeError("a protocol refusal before this worker built its gateway")
    _worker_gateway[0].protocol_refusal(refusal)


def uvicorn_options(config: Config, on_refusal: RefusalHook) -> dict[str, Any]:
    """uvicorn's settings for ``config``; what the HTTP layer refuses itself goes to ``on_refusal``."""
    server = config.server
    limits = ProtocolLimits.configured(
        header_timeout_seconds=server.header_timeout_seconds, max_header_bytes=server.max_header_bytes
    )
    return {
        "host": server.host,
        "port": server.port,
        "loop": "uvloop",
        # httptools with head/body timeouts, head size cap, no trailers, given its limits and hook explicitly
        "http": wired_protocol(limits, on_refusal),
        "lifespan": "on",
        "access_log": False,
        "server_header": False,
        "proxy_headers": False,  # never take the client address from client-sent X-Forwarded-For
        "timeout_keep_alive": int(server.keep_alive_seconds),
        "timeout_graceful_shutdown": int(server.graceful_shutdown_seconds),
        "limit_concurrency": server.max_connections,
        "log_level": server.log_level,
    }


def run(config: Config, config_path: str | None, app: Any = None) -> int:
    import uvicorn

    if config.server.workers > 1:
        if config.server.mode == "ext-authz" and not config.server.delegation_secret:
            # A check in one worker delegates to the proxy path in any worker: they share one key.
            from gateway.extauthz.delegation import new_secret

            os.environ["GATEWAY_SERVER_DELEGATION_SECRET"] = new_secret()
        if config_path:
            os.environ[CONFIG_ENV] = os.path.abspath(config_path)
        options = uvicorn_options(config, refusal_in_worker)
        uvicorn.run("gateway.serve:app_from_environment", factory=True, workers=config.server.workers, **options)
    else:
        gateway = app if app is not None else build_gateway(config)
        uvicorn.run(gateway, **uvicorn_options(config, gateway.protocol_refusal))
    return 0


def command(args: argparse.Namespace) -> int:
    env = dict(os.environ)
    if args.host:
        env["GATEWAY_SERVER_HOST"] = args.host
    if args.port is not None:
        env["GATEWAY_SERVER_PORT"] = str(args.port)
    if args.workers:
        env["GATEWAY_SERVER_WORKERS"] = str(args.workers)
    if args.mode:
        env["GATEWAY_SERVER_MODE"] = args.mode
    config = cliconfig.load_or_exit(args.config, environ=env)  # a refused value: one line, exit 2
    from gateway.audit.pseudonyms import PseudonymKeyError, key_path, load_or_create_key
    from gateway.demo.ports import PortUnavailable, busy_message, check_port

    try:  # made (0600) before workers start, so they all read the same one
        load_or_create_key(key_path(config.audit.path, config.audit.pseudonym_key_file))
    except PseudonymKeyError as exc:
        print(f"gateway: configuration error: audit.pseudonym_key_file: {exc}", file=sys.stderr)
        return 2
    from gateway.assertion import AssertionSigner, assertion_key_path
    from gateway.audit import signing

    audit_key = config.audit.signing_key_path
    for name, make in (
        ("audit.signing_key_file", lambda: signing.load_or_create_key(Path(audit_key))),
        ("upstream.assertion_key_file", lambda: AssertionSigner(
            assertion_key_path(config.upstream.assertion_key_file, config.audit.path), audience=config.upstream.url,
            rotation_seconds=config.upstream.assertion_key_rotation_hours * 3600)),
    ):
        try:  # the key files too: made before workers start; an unusable one stops here, naming the file
            make()
        except (signing.KeyFileError, OSError) as exc:
            print(f"gateway: configuration error: {name}: {exc}", file=sys.stderr)
            return 2

    try:  # before anything is loaded: a port someone else holds is an error at once
        check_port(config.server.host, config.server.port)
    except PortUnavailable as exc:
        choose = "choose another with --port PORT (or server.port, GATEWAY_SERVER_PORT)"
        print(busy_message("gateway serve", "the gateway", exc, choose), file=sys.stderr)
        return 1
    # Worker processes re-read the configuration: hand them the CLI overrides through the environment.
    os.environ.update({k: v for k, v in env.items() if k.startswith("GATEWAY_SERVER_")})
    logging.addLevelName(5, "TRACE")  # uvicorn's level below DEBUG (server.log_level = "trace")
    logging.basicConfig(level=config.server.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    from gateway.authz.errors import PolicyError

    try:  # the policies loaded before anything listens
        app = build_gateway(config)
    except PolicyError as exc:
        for line in exc.diagnostics:
            print(line, file=sys.stderr)
        print("gateway: the policies do not load (and no last good set is kept yet)", file=sys.stderr)
        return 1
    return run(config, args.config, app if config.server.workers <= 1 else None)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("serve", help="run the sidecar proxy (or, --mode ext-authz, Envoy's checks)")
    parser.add_argument("--config", help="TOML configuration file (default: the built-in demo defaults)")
    parser.add_argument("--host", help="listen address (server.host)")
    parser.add_argument("--port", type=int, help="listen port (server.port)")
    parser.add_argument("--workers", type=int, help="worker processes (server.workers)")
    parser.add_argument(
        "--mode", choices=("proxy", "ext-authz"),
        help="proxy (default): the sidecar proxy; ext-authz: answer Envoy's ext_authz checks (server.mode)",
    )
    parser.set_defaults(func=command)
