"""``gateway demo``: the dev identity provider, the reference services and the gateway, together.

Each runs as its own process (exactly what a user would start by hand), on loopback. The three ports
(``--port``, ``--upstream-port``, ``--idp-port``, or ``--base-port`` for all three) are checked before
anything starts: a port another process holds is a one-line error naming it and the option that
moves it, so the printed lines can never reach someone else's server. The demo waits until all three
answer, prints the audit query that shows the requests about to be made and ready-to-paste ``curl``
lines with freshly minted tokens for the ports it bound, and on Ctrl-C or SIGTERM stops all three:
SIGTERM first so the gateway drains in-flight requests and its audit queue, SIGKILL only after a
bounded wait. The dev key ring and the audit store live in ``--dev-dir`` (``.dev``) and are kept from
one run to the next.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.authz.settings import PoliciesSettings
from gateway.config import load_section
from gateway.demo import tenants
from gateway.demo.ports import PortUnavailable, busy_message, check_port, pick_free_port

STOP_TIMEOUT_SECONDS = 35.0
START_TIMEOUT_SECONDS = 60.0
#: The demo binds loopback only: the reference services trust the gateway's headers.
HOST = "127.0.0.1"


@dataclass(frozen=True)
class DemoCall:
    """One example request: who calls, what, and the rule it shows (from a pack's ``demo.toml``)."""

    pack: str
    title: str
    expect: str
    method: str
    path: str
    purpose: str
    token: dict[str, Any]
    headers: tuple[tuple[str, str], ...] = ()
    body: str | None = None


def demo_calls(policies_dir: Path) -> list[DemoCall]:
    """Every pack's demo calls, with tenant and user aliases resolved from ``packs/fixtures.toml``."""
    packs = policies_dir / "packs"
    aliases: dict[str, Any] = {}
    fixtures_file = packs / "fixtures.toml"
    if fixtures_file.is_file():
        aliases = tomllib.loads(fixtures_file.read_text())
    tenant_ids = {name: spec["id"] for name, spec in aliases.get("tenants", {}).items()}
    tenant_ids.setdefault("contoso", tenants.CONTOSO_TENANT)
    tenant_ids.setdefault("fabrikam", tenants.FABRIKAM_TENANT)
    users: dict[str, str] = aliases.get("users", {})
    calls: list[DemoCall] = []
    for demo_file in sorted(packs.glob("*/demo.toml")):
        for spec in tomllib.loads(demo_file.read_text()).get("call", []):
            path = spec["path"]
            for name, tid in tenant_ids.items():
                path = path.replace("{" + name + "}", tid)
            token = dict(spec["token"])
            token["tenant"] = tenant_ids.get(token.get("tenant", "contoso"), token.get("tenant"))
            if "user" in token:
                token["user"] = users.get(token["user"], token["user"])
            calls.append(
                DemoCall(
                    pack=demo_file.parent.name,
                    title=spec["title"],
                    expect=spec.get("expect", "allow"),
                    method=spec.get("method", "GET"),
                    path=path,
                    purpose=spec["purpose"],
                    token=token,
                    headers=tuple((k, str(v)) for k, v in spec.get("headers", {}).items()),
                    body=spec.get("body"),
                )
            )
    return calls


def _wait_http(url: str, deadline: float, process: subprocess.Popen[bytes], name: str) -> None:
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with status {process.returncode} during start-up (port taken?)")
        try:
            with urllib.request.urlopen(url, timeout=1.0) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{name} did not become ready at {url}")


def _stop(processes: Sequence[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
    for process in processes:
        remaining = max(0.1, deadline - time.monotonic())
        try:
            process.wait(remaining)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def curl_line(call: DemoCall, gateway_url: str, token: str) -> str:
    parts = ["curl", "-sS", "-i"]
    if call.method != "GET":
        parts += ["-X", call.method]
    parts += ["-H", f"Authorization: Bearer {token}", "-H", f"X-Purpose: {call.purpose}"]
    for name, value in call.headers:
        parts += ["-H", f"{name}: {value}"]
    if call.body is not None:
        parts += ["-H", "Content-Type: application/json", "--data", call.body]
    parts.append(gateway_url + call.path)
    return " ".join(shlex.quote(p) for p in parts)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@dataclass(frozen=True)
class DemoPorts:
    """The three loopback ports of the demo, and for each the option that chooses it."""

    gateway: int
    upstream: int
    idp: int

    def named(self) -> list[tuple[str, int, str]]:
        return [
            ("the gateway", self.gateway, "--port"),
            ("the reference services", self.upstream, "--upstream-port"),
            ("the dev identity provider", self.idp, "--idp-port"),
        ]


def demo_ports(args: argparse.Namespace) -> DemoPorts:
    """``--port``, ``--upstream-port`` and ``--idp-port``, each defaulting to ``--base-port`` + 0, 1, 2
    (or 8080, 8081, 8082); 0 picks a free port."""
    defaults = (tenants.GATEWAY_PORT, tenants.UPSTREAM_PORT, tenants.IDP_PORT)
    if args.base_port == 0:  # any free port for each, not 0, 1 and 2
        defaults = (0, 0, 0)
    elif args.base_port is not None:
        defaults = (args.base_port, args.base_port + 1, args.base_port + 2)
    given = (args.port, args.upstream_port, args.idp_port)
    picked: list[int] = []
    for option, default in zip(given, defaults, strict=True):
        port = default if option is None else option
        if port == 0:  # a free port; the kernel may hand out one just released again: a few tries
            for _ in range(10):
                port = pick_free_port(HOST)
                if port not in picked:
                    break
        picked.append(port)
    return DemoPorts(*picked)


def check_demo_ports(ports: DemoPorts) -> str | None:
    """The one-line error when a port is out of range, used twice, or taken; None when all are free."""
    named = ports.named()
    for _, port, option in named:
        if not 0 < port < 65536:
            return f"gateway demo: {option} {port} is not a TCP port (1-65535)"
    for index, (what, port, option) in enumerate(named):
        for _, other_port, other_option in named[:index]:
            if port == other_port:
                return f"gateway demo: {option} and {other_option} are both {port}; give {what} another port"
    for what, port, option in named:
        try:
            check_port(HOST, port)
        except PortUnavailable as exc:
            choose = f"choose another with {option} PORT, or move all three with --base-port PORT"
            return busy_message("gateway demo", what, exc, choose)
    return None


def _shortest(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _gateway_command() -> str:
    """How the user runs ``gateway`` from here: the console script beside this Python if there is one."""
    script = Path(sys.executable).parent / "gateway"
    return _shortest(script) if script.exists() else "gateway"


def audit_hint(audit_path: Path, since: datetime) -> str:
    """The one line that shows the requests made since ``since`` (the demo's start)."""
    command = [_gateway_command(), "audit", "query", "--path", _shortest(audit_path), "--since",
               since.strftime("%Y-%m-%dT%H:%M:%SZ"), "--format", "table"]  # fmt: skip
    return "audit of the requests below: " + " ".join(shlex.quote(part) for part in command)


def command(args: argparse.Namespace) -> int:
    from gateway.identity.devtokens import mint_token

    ports = demo_ports(args)
    problem = check_demo_ports(ports)  # before anything starts
    if problem is not None:
        print(problem, file=sys.stderr, flush=True)
        return 1
    signal.signal(signal.SIGTERM, _interrupt)

    started = datetime.now(UTC).replace(microsecond=0)
    dev_dir = Path(args.dev_dir).resolve()
    dev_dir.mkdir(parents=True, exist_ok=True)
    python = sys.executable
    idp_url = f"http://{HOST}:{ports.idp}"
    upstream_url = f"http://{HOST}:{ports.upstream}"
    gateway_url = f"http://{HOST}:{ports.gateway}"
    audit_path = dev_dir / "audit.sqlite"
    env = dict(os.environ)
    env.update(
        {
            "GATEWAY_UPSTREAM_URL": upstream_url,
            "GATEWAY_IDENTITY_AUTHORITY": idp_url,
            "GATEWAY_AUDIT_PATH": str(audit_path),
            "GATEWAY_SERVER_HOST": HOST,
            "GATEWAY_SERVER_PORT": str(ports.gateway),
        }
    )
    commands = [
        (f"the dev identity provider (port {ports.idp})",
         [python, "-m", "gateway.cli", "dev-idp", "--host", HOST, "--port", str(ports.idp), "--dev-dir", str(dev_dir)],
         f"{idp_url}/{tenants.CONTOSO_TENANT}/v2.0/.well-known/openid-configuration"),
        (f"the reference services (port {ports.upstream})",
         [python, "-m", "gateway.cli", "demo-upstream", "--host", HOST, "--port", str(ports.upstream),
          "--require-assertion", "--gateway-jwks", f"{gateway_url}/.well-known/jwks.json"],
         f"{upstream_url}/healthz"),
        (f"the gateway (port {ports.gateway})", [python, "-m", "gateway.cli", "serve"], f"{gateway_url}/readyz"),
    ]  # fmt: skip
    processes: list[subprocess.Popen[bytes]] = []
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    try:
        for name, argv, ready_url in commands:
            process = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL)
            processes.append(process)
            _wait_http(ready_url, deadline, process, name)
        # A server that lost its port to another process after the check exits: what answered was
        # someone else, and the printed lines would reach it.
        lost = [name for (name, _, _), p in zip(commands, processes, strict=True) if p.poll() is not None]
        if lost:
            raise RuntimeError(f"{lost[0]} exited during start-up: another process took its port?")
        print(f"\nprivacy gateway demo: gateway {gateway_url}, upstream {upstream_url}, identity provider {idp_url}")
        print(audit_hint(audit_path, started) + "\n")
        current_pack = ""
        for call in demo_calls(Path(load_section(PoliciesSettings).dir)):
            if call.pack != current_pack:
                current_pack = call.pack
                print(f"## {current_pack}\n")
            spec = dict(call.token)
            token = mint_token(dev_dir, spec.pop("tenant"), authority=idp_url, **spec)
            print(f"# {call.title} -> expect {call.expect}")
            print(curl_line(call, gateway_url, token))
            print()
        print("Press Ctrl-C to stop.", flush=True)
        if args.exit_after is not None:
            time.sleep(args.exit_after)
            return 0
        while all(p.poll() is None for p in processes):
            time.sleep(0.5)
        failed = [p for p in processes if p.poll() is not None]
        print(f"a demo process exited (status {failed[0].returncode}); stopping the others", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    except RuntimeError as exc:
        print(f"gateway demo: {exc}", file=sys.stderr)
        return 1
    finally:
        _stop(processes)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the dev identity provider, reference services and gateway",
        description="The embedded stack on loopback: the gateway, the reference services and the dev identity "
        "provider, on three ports (default 8080, 8081, 8082; --base-port N: N, N+1, N+2; 0: any free port).",
    )
    parser.add_argument("--port", type=int, default=None, help=f"gateway port (default {tenants.GATEWAY_PORT})")
    parser.add_argument("--upstream-port", type=int, default=None,
                        help=f"reference services port (default {tenants.UPSTREAM_PORT})")
    parser.add_argument("--idp-port", type=int, default=None,
                        help=f"dev identity provider port (default {tenants.IDP_PORT})")
    parser.add_argument("--base-port", type=int, default=None, metavar="PORT",
                        help="gateway on PORT, reference services on PORT+1, identity provider on PORT+2")
    parser.add_argument("--dev-dir", default=".dev", help="where the dev keys and the audit store live (default .dev)")
    parser.add_argument("--exit-after", type=float, default=None, help=argparse.SUPPRESS)
    parser.set_defaults(func=command)
