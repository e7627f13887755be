"""``gateway policy validate [DIR]`` and ``gateway policy explain FILE``.

Exit status, the same in every ``policy`` command: a policy set that does not load (a Cedar syntax
error, a schema validation error, an unreadable file or directory) is 1 (``BROKEN_POLICY_EXIT``), with
``file:line`` diagnostics and their count on stderr; 2 is a usage error or an unreadable input that is
not the policies (explain's case file, test's suites).

Further ``policy`` sub-commands plug in the way ``gateway/cli.py`` plugs in packages: each module in
``POLICY_COMMAND_MODULES`` defines ``register(policy_subparsers)`` (``policy test``, ``matrix``, ``replay``
and ``diff`` come this way); a listed module that is missing is an import error, never a silently
missing command.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path
from typing import Any

from gateway.authz.errors import PolicyError, report_broken

POLICY_COMMAND_MODULES = ("gateway.authz.policytest", "gateway.authz.matrix", "gateway.authz.change")


def _defaults() -> tuple[str, tuple[str, ...]]:
    from gateway.authz.settings import DEFAULT_POLICIES_DIR, DEFAULT_ROUTE_MAPS

    return DEFAULT_POLICIES_DIR, DEFAULT_ROUTE_MAPS


def register(subparsers: Any) -> None:
    policies_dir, route_maps = _defaults()
    policy = subparsers.add_parser("policy", help="validate, explain and test the Cedar policies")
    policy_sub = policy.add_subparsers(dest="policy_command", required=True, metavar="SUBCOMMAND")

    validate = policy_sub.add_parser(
        "validate",
        help="parse and validate every policy against the schema; file:line diagnostics",
        epilog="exit status: 0 the policies are valid; 1 the policies are broken (a Cedar syntax or schema "
        "validation error, an unreadable file or directory; file:line diagnostics on stderr); 2 usage error",
    )
    validate.add_argument("dir", nargs="?", default=policies_dir, help=f"policies directory (default {policies_dir})")
    validate.add_argument(
        "--route-map",
        action="append",
        dest="route_maps",
        metavar="FILE",
        help="route map to check with the policies (repeatable; default: the shipped maps)",
    )
    validate.set_defaults(func=_validate, default_route_maps=route_maps)

    explain = policy_sub.add_parser(
        "explain",
        help="evaluate a request written in FILE (TOML or JSON) and show why it is allowed or denied",
        epilog="exit status: 0 every case met its expectations (if any); 1 the policies are broken (as for "
        "policy validate) or an expectation failed; 2 usage error, or FILE cannot be read or is not a case",
    )
    explain.add_argument("file", help="a case file: principal, request (or action + resource), purpose, ...")
    explain.add_argument("--dir", default=policies_dir, help=f"policies directory (default {policies_dir})")
    explain.add_argument("--route-map", action="append", dest="route_maps", metavar="FILE")
    explain.add_argument("--json", action="store_true", help="print the decisions as JSON")
    explain.set_defaults(func=_explain, default_route_maps=route_maps)

    for name in POLICY_COMMAND_MODULES:  # a listed module that is missing is an error, never a silent skip
        importlib.import_module(name).register(policy_sub)


def _load(directory: str, route_maps: tuple[str, ...]) -> Any:
    from gateway.authz.engine import PolicyEngine

    return PolicyEngine.load(directory, route_maps, validate_requests=True)


def _validate(args: argparse.Namespace) -> int:
    route_maps = tuple(args.route_maps or args.default_route_maps)
    try:
        engine = _load(args.dir, route_maps)
    except PolicyError as exc:
        return report_broken(exc)
    files = len(engine.policies.files)
    print(
        f"ok: {len(engine.policies.policies)} policies in {files} file(s), "
        f"{len(engine.routes.routes)} routes, "
        f"{len(engine.manifests.files)} manifest(s); policy hash {engine.policy_hash}"
    )
    return 0


def _explain(args: argparse.Namespace) -> int:
    from gateway.authz.cases import CaseError, evaluate_case_review, load_cases, mismatches

    route_maps = tuple(args.route_maps or args.default_route_maps)
    try:
        engine = _load(args.dir, route_maps)
    except PolicyError as exc:
        return report_broken(exc)
    try:
        cases = load_cases(args.file)
    except (CaseError, OSError) as exc:
        print(f"{args.file}: {exc}" if isinstance(exc, OSError) else str(exc), file=sys.stderr)
        return 2
    status = 0
    documents: list[dict[str, Any]] = []
    for case in cases:
        try:
            decision, reviewed = evaluate_case_review(engine, case)
        except CaseError as exc:
            print(f"{case.source}: {exc}", file=sys.stderr)
            return 2
        problems = mismatches(case, decision, reviewed)
        withheld = reviewed.withheld if reviewed is not None else ()
        withholding = reviewed.policies if reviewed is not None else ()
        if problems:
            status = 1
        if args.json:
            document = _as_json(case, decision, problems)
            document["withheld"] = {"pointers": list(withheld), "policies": list(withholding)}
            documents.append(document)
        else:
            text = _as_text(engine, case, decision, problems)
            if withheld:
                text += f"\n  withheld list items: {', '.join(withheld)} by {', '.join(withholding)}"
            print(text)
    if args.json:
        print(json.dumps(documents, indent=2))
    return status


def _as_json(case: Any, decision: Any, problems: list[str]) -> dict[str, Any]:
    return {
        "case": case.name,
        "source": case.source,
        "decision": "allow" if decision.allowed else "deny",
        "status": decision.status,
        "reason": decision.reason,
        "action": decision.action,
        "resource_type": decision.resource_type,
        "resource_id": decision.resource_id,
        "tenant": decision.resource_tenant,
        "route": decision.route,
        "purpose": decision.purpose,
        "policies": list(decision.policy_ids),
        "reasons": decision.reasons,
        "masked": [
            {"pointer": m.pointer.text, "category": m.category, "mask": m.style, "policies": list(m.policies)}
            for m in decision.masks
        ],
        "expectation_failures": problems,
        "policy_hash": decision.policy_hash,
    }


def _as_text(engine: Any, case: Any, decision: Any, problems: list[str]) -> str:
    verdict = "ALLOW" if decision.allowed else "DENY"
    lines = [
        f"{case.name}  ({case.source})",
        f"  decision: {verdict} (status {decision.status}, {decision.reason})",
        f"  request:  {case.principal.kind} {case.principal.id} {list(case.principal.roles)} -> "
        f"{decision.action} {decision.resource_type} {decision.resource_id!r} "
        f"in tenant {decision.resource_tenant}",
        f"  route:    {decision.route}    purpose: {decision.purpose or '-'}"
        + (f"    recipient: {decision.recipient}" if decision.recipient else ""),
        "  determining policies:",
    ]
    for reason in decision.reasons:
        policy = engine.policies.by_id.get(reason["policy"])
        where = f"  [{Path(policy.file).name}:{policy.line}]" if policy is not None else ""
        lines.append(f"    - {reason['policy']}{where}")
        lines.append(f"      source: {reason['source']}")
        lines.append(f"      clause: {reason['clause']}")
    if decision.masks:
        lines.append("  masked fields:")
        for mask in decision.masks:
            lines.append(f"    - {mask.pointer.text} ({mask.category}, {mask.style}) by {', '.join(mask.policies)}")
    for problem in problems:
        lines.append(f"  EXPECTATION FAILED: {problem}")
    return "\n".join(lines)
