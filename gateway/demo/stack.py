"""``gateway demo``: the dev identity provider, the reference services and the gateway, together.

Each runs as its own process (exactly what a user would start by hand), on loopback. The demo waits
until all three answer, prints ready-to-paste ``curl`` lines with freshly minted tokens, and on Ctrl-C
or SIGTERM stops all three: SIGTERM first so the gateway drains in-flight requests and its audit
queue, SIGKILL only after a bounded wait.
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
from pathlib import Path
from typing import Any

from gateway.config import load_config
from gateway.demo import tenants

STOP_TIMEOUT_SECONDS = 35.0
START_TIMEOUT_SECONDS = 60.0


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
            raise RuntimeError(f"{name} exited with status {process.returncode} during start-up")
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


def command(args: argparse.Namespace) -> int:
    from gateway.identity.devtokens import mint_token

    signal.signal(signal.SIGTERM, _interrupt)

    dev_dir = Path(args.dev_dir).resolve()
    dev_dir.mkdir(parents=True, exist_ok=True)
    python = sys.executable
    idp_url = f"http://127.0.0.1:{args.idp_port}"
    upstream_url = f"http://127.0.0.1:{args.upstream_port}"
    gateway_url = f"http://127.0.0.1:{args.port}"
    env = dict(os.environ)
    env.update(
        {
            "GATEWAY_UPSTREAM_URL": upstream_url,
            "GATEWAY_IDENTITY_AUTHORITY": idp_url,
            "GATEWAY_AUDIT_PATH": str(dev_dir / "audit.sqlite"),
            "GATEWAY_SERVER_PORT": str(args.port),
        }
    )
    commands = [
        ("dev identity provider",
         [python, "-m", "gateway.cli", "dev-idp", "--port", str(args.idp_port), "--dev-dir", str(dev_dir)],
         f"{idp_url}/{tenants.CONTOSO_TENANT}/v2.0/.well-known/openid-configuration"),
        ("reference services", [python, "-m", "gateway.cli", "demo-upstream", "--port", str(args.upstream_port)],
         f"{upstream_url}/healthz"),
        ("gateway", [python, "-m", "gateway.cli", "serve"], f"{gateway_url}/readyz"),
    ]
    processes: list[subprocess.Popen[bytes]] = []
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    try:
        for name, argv, ready_url in commands:
            process = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL)
            processes.append(process)
            _wait_http(ready_url, deadline, process, name)
        print(f"\nprivacy gateway demo: gateway {gateway_url}, upstream {upstream_url}, identity provider {idp_url}")
        audit_path = dev_dir / "audit.sqlite"
        print(f"audit store: {audit_path}  (query it: gateway audit query --path {audit_path})\n")
        current_pack = ""
        for call in demo_calls(Path(load_config(None).policies.dir)):
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
    parser = subparsers.add_parser("demo", help="run the dev identity provider, reference services and gateway")
    parser.add_argument("--port", type=int, default=tenants.GATEWAY_PORT, help="gateway port")
    parser.add_argument("--upstream-port", type=int, default=tenants.UPSTREAM_PORT)
    parser.add_argument("--idp-port", type=int, default=tenants.IDP_PORT)
    parser.add_argument("--dev-dir", default=".dev", help="where the dev keys and the audit store live")
    parser.add_argument("--exit-after", type=float, default=None, help=argparse.SUPPRESS)
    parser.set_defaults(func=command)
