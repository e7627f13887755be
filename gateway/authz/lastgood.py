"""The last policy bundle that loaded, kept on disk so a process that starts while a file is broken
(a worker the supervisor replaces, a restart) enforces the last good set instead of dying or denying all.

Layout under the configured directory: ``bundle-<policy hash>/`` (a copy of the policies directory and the
route maps) and ``current``, a symlink swapped atomically to the newest bundle. Several workers may save
the same bundle at once: the copy is made in a private temporary directory and renamed into place, and
whoever loses the rename discards its copy. Older bundles beyond the newest few are removed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from pathlib import Path

from gateway.authz.engine import BundleFiles

logger = logging.getLogger("gateway.authz")

CURRENT = "current"
KEEP = 3


def save(files: BundleFiles, policy_hash: str, root: Path) -> None:
    """Record ``files`` (just loaded and validated, with hash ``policy_hash``) as the last good bundle."""
    root.mkdir(parents=True, exist_ok=True)
    target = root / f"bundle-{policy_hash}"
    if not target.exists():
        staging = Path(tempfile.mkdtemp(dir=root, prefix=".staging-"))
        try:
            shutil.copytree(files.policies_dir, staging / "policies",
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".*"))
            routes = staging / "routes"
            routes.mkdir()
            for index, route_map in enumerate(files.route_maps):
                shutil.copy2(route_map, routes / f"{index:02d}-{route_map.name}")
            os.rename(staging, target)
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
            if not target.exists():
                raise
    link = root / f".{CURRENT}-{os.getpid()}"
    with contextlib.suppress(FileNotFoundError):
        link.unlink()
    os.symlink(target.name, link)
    os.replace(link, root / CURRENT)
    _prune(root, keep=target)


def current(root: Path) -> BundleFiles | None:
    """The last good bundle's files, or None when there is none."""
    link = root / CURRENT
    if not link.is_dir():
        return None
    bundle = link.resolve()
    route_maps = tuple(sorted((bundle / "routes").glob("*.toml")))
    return BundleFiles(bundle / "policies", route_maps)


def _prune(root: Path, keep: Path) -> None:
    bundles = sorted(root.glob("bundle-*"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in bundles[KEEP:]:
        if old != keep:
            shutil.rmtree(old, ignore_errors=True)
